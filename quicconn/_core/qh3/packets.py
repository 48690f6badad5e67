"""Datagrams as packets: slicing, headers, qlog's packet events.

qh3's Rust core takes whole datagrams; :class:`~.core.Qh3Core` feeds a
handshake datagram packet by packet (TLS installs the keys of a Handshake
packet from the Initial before it), and needs a few header facts for that:
where each packet ends, its source connection ID.  They are read with
qh3's native header parser.  And how large a DATAGRAM frame's payload can
be for one packet.
"""

from __future__ import annotations

from typing import Any, Final

from qh3._hazmat import pull_quic_header as native_header
from qh3.quic.packet import QuicPacketType

#: Index of a parsed header's end offset, destination and source
#: connection IDs, and packet type in ``pull_quic_header``'s tuple.
_TYPE: Final = 1
_DCID: Final = 3
_SCID: Final = 4
_END: Final = 9


def packet_ends(data: bytes, cid_length: int) -> list[int]:
    """Where each packet of a datagram ends (one entry if unparseable)."""
    ends: list[int] = []
    offset = 0
    size = len(data)
    while offset < size:
        try:
            end = int(native_header(data, offset, cid_length)[_END])
        except ValueError:
            break
        if end <= offset:
            break
        ends.append(end)
        offset = end
        if offset < size and not data[offset] & 0x40:
            break  # no fixed bit: trailing padding, not a packet
    return ends or [size]


def source_cid(packet: bytes, cid_length: int) -> bytes | None:
    """The source connection ID of a long-header packet (None if unparseable)."""
    try:
        header = native_header(packet, 0, cid_length)
    except ValueError:
        return None
    return bytes(header[_SCID])


def _varint_size(value: int) -> int:
    """Bytes of a QUIC variable-length integer (RFC 9000, section 16)."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    return 4 if value < 0x40000000 else 8


def datagram_payload_limit(peer_frame_size: int, max_datagram_size: int) -> int:
    """The largest DATAGRAM frame payload (RFC 9221) that fits both the
    peer's max_datagram_frame_size and one 1-RTT packet of
    ``max_datagram_size`` bytes."""
    # The frame: its type (1 byte) and a length varint, then the payload.
    frame_limit = peer_frame_size - 1 - _varint_size(peer_frame_size)
    # One short-header packet: flags, the longest connection ID (20), the
    # longest packet number (4), the AEAD tag (16); then the frame's type
    # and a 2-byte length.
    packet_limit = max_datagram_size - (1 + 20 + 4 + 16) - 3
    return max(0, min(frame_limit, packet_limit))


def log_packets(trace: Any, event: str, datagram: bytes, cid_length: int) -> None:
    """qlog: one ``event`` per packet of a datagram, with its header.

    Only with qlog on (the headers are parsed again for it).  qh3 does not
    say which frames a packet carried, so ``frames`` stays empty
    (Capability.QLOG_FRAMES is not claimed).
    """
    offset = 0
    size = len(datagram)
    while offset < size:
        try:
            header = native_header(datagram, offset, cid_length)
            name = trace.packet_type(QuicPacketType(header[_TYPE]))
        except ValueError:
            return
        end = int(header[_END]) if header[_END] > offset else size
        trace.log_event(
            category="transport",
            event=event,
            data={
                "frames": [],
                "header": {
                    "packet_type": name,
                    "dcid": header[_DCID].hex(),
                    "scid": header[_SCID].hex(),
                },
                "raw": {"length": end - offset},
            },
        )
        offset = end


__all__ = ["datagram_payload_limit", "log_packets", "packet_ends", "source_cid"]
