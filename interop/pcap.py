"""Packet captures of the relay's traffic, for tshark.

The interop runner captures each side of its simulated link
(``trace_node_left.pcap`` at the client, ``trace_node_right.pcap`` at the
server) and checks its testcases with tshark, decrypting with the endpoints'
key logs.  The relay sees UDP payloads, not IP packets, so :class:`PcapWriter`
synthesises the IP and UDP headers from the addresses the relay knows
(classic libpcap format, link type RAW: each record starts at the IP header).
"""

from __future__ import annotations

import ipaddress
import os
import struct
import threading
from typing import BinaryIO

Address = tuple[str, int]

#: libpcap's LINKTYPE_RAW: the record is an IPv4 or IPv6 packet.
LINKTYPE_RAW = 101
_MAGIC = 0xA1B2C3D4  # microsecond timestamps
_SNAPLEN = 262144
_UDP = 17


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ip_udp_packet(src: Address, dst: Address, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet carrying ``payload`` in UDP from ``src`` to ``dst``."""
    source = ipaddress.ip_address(src[0])
    destination = ipaddress.ip_address(dst[0])
    if source.version != destination.version:
        raise ValueError(f"mixed address families: {src[0]} -> {dst[0]}")
    length = 8 + len(payload)
    if source.version == 4:
        pseudo = (
            source.packed + destination.packed + struct.pack("!BBH", 0, _UDP, length)
        )
    else:
        pseudo = source.packed + destination.packed + struct.pack("!I3xB", length, _UDP)
    header = struct.pack("!HHHH", src[1], dst[1], length, 0)
    checksum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src[1], dst[1], length, checksum) + payload
    if source.version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0x4000,  # don't fragment, as QUIC endpoints set it
            64,
            _UDP,
            0,
            source.packed,
            destination.packed,
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        return ip + udp
    ip6 = struct.pack(
        "!IHBB16s16s", 6 << 28, len(udp), _UDP, 64, source.packed, destination.packed
    )
    return ip6 + udp


class PcapWriter:
    """Append UDP datagrams to a pcap file; safe to call from several threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115
        self._lock = threading.Lock()
        self._file.write(
            struct.pack("<IHHiIII", _MAGIC, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_RAW)
        )
        self.count = 0

    def write(
        self, timestamp: float, src: Address, dst: Address, payload: bytes
    ) -> None:
        """Record one datagram seen at ``timestamp`` (seconds since the epoch)."""
        packet = ip_udp_packet(src, dst, payload)
        seconds = int(timestamp)
        micros = round((timestamp - seconds) * 1e6)
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        record = struct.pack("<IIII", seconds, micros, len(packet), len(packet))
        with self._lock:
            if self._file.closed:
                return
            self._file.write(record + packet)
            self.count += 1

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
