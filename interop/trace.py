"""Reading the relay's packet captures with tshark, as the interop runner does.

:class:`Trace` runs tshark once over a capture (decrypting with a key log
when one is given) and turns each UDP datagram into a :class:`Datagram`:
who sent it, how big it was, and the QUIC packets and frames tshark found in
it.  The testcase checks in :mod:`interop.testcases` ask questions of these
(``initials(FROM_SERVER)``, ``retries()``, ``key_phases(...)``...).

tshark is Wireshark's command-line tool (Debian package ``tshark``).  It is an
independent QUIC and TLS dissector, which is why the checks use it rather
than the endpoints' own logs.  Known limitation of tshark 4.0 (Debian 12): it
cannot decrypt a connection that went through a Retry (the Initial after the
Retry is not decrypted, so neither is anything after it); the runner's
``retry`` check needs only unencrypted header fields.
"""

from __future__ import annotations

import enum
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF


class Direction(enum.Enum):
    FROM_CLIENT = "client"
    FROM_SERVER = "server"


class PacketType(enum.Enum):
    """The packet types a check distinguishes (v1 and v2 long types mapped)."""

    INITIAL = "initial"
    ZERO_RTT = "0rtt"
    HANDSHAKE = "handshake"
    RETRY = "retry"
    VERSION_NEGOTIATION = "vn"
    ONE_RTT = "1rtt"


# The long packet types' wire values; v2 permutes them (RFC 9369).
_LONG_TYPES = {
    QUIC_V1: {
        0: PacketType.INITIAL,
        1: PacketType.ZERO_RTT,
        2: PacketType.HANDSHAKE,
        3: PacketType.RETRY,
    },
    QUIC_V2: {
        1: PacketType.INITIAL,
        2: PacketType.ZERO_RTT,
        3: PacketType.HANDSHAKE,
        0: PacketType.RETRY,
    },
}

#: The fields read from each datagram, in this order.
FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "quic.header_form",
    "quic.long.packet_type",
    "quic.long.packet_type_v2",
    "quic.version",
    "quic.scid",
    "quic.dcid",
    "quic.token_length",
    "quic.token",
    "quic.retry_token",
    "quic.key_phase",
    "quic.packet_length",
    "tls.handshake.type",
    "tls.handshake.ciphersuite",
    "tls.handshake.certificates_length",
    "quic.crypto.offset",
    "quic.crypto.length",
    "tls.quic.parameter.initial_max_streams_bidi",
    "quic.path_challenge.data",
    "quic.path_response.data",
    "quic.remaining_payload",
)
_SEPARATOR = "|"


class TsharkError(RuntimeError):
    """tshark is missing or could not read a capture."""


def tshark_path() -> str:
    path = shutil.which("tshark")
    if path is None:
        raise TsharkError(
            "tshark is not installed (Debian: apt-get install tshark); "
            "the interop checks read the packet captures with it"
        )
    return path


@dataclass(frozen=True)
class QuicPacket:
    """One QUIC packet of a datagram (coalesced packets are separate)."""

    type: PacketType
    version: int | None = None
    scid: str | None = None
    dcid: str | None = None


@dataclass
class Datagram:
    """One captured UDP datagram and what tshark decoded in it."""

    number: int
    time: float
    source: tuple[str, int]
    destination: tuple[str, int]
    ip_version: int
    size: int  # UDP payload bytes
    direction: Direction
    packets: list[QuicPacket] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    retry_tokens: list[str] = field(default_factory=list)
    key_phases: list[int] = field(default_factory=list)
    packet_lengths: list[int] = field(default_factory=list)
    handshake_types: list[int] = field(default_factory=list)
    ciphersuites: list[int] = field(default_factory=list)
    has_certificate: bool = False
    crypto_offsets: list[int] = field(default_factory=list)
    crypto_ends: list[int] = field(default_factory=list)
    max_streams_bidi: list[int] = field(default_factory=list)
    path_challenges: list[str] = field(default_factory=list)
    path_responses: list[str] = field(default_factory=list)
    #: tshark could not decrypt at least one of its packets
    undecrypted: bool = False

    def has(self, packet_type: PacketType) -> bool:
        return any(p.type is packet_type for p in self.packets)


def _values(text: str) -> list[str]:
    return [v for v in text.split(_SEPARATOR) if v != ""] if text else []


def _int(text: str) -> int:
    return int(text, 0)


def _parse_line(line: str, server_port: int) -> Datagram | None:
    columns = line.rstrip("\n").split("\t")
    if len(columns) < len(FIELDS):
        columns += [""] * (len(FIELDS) - len(columns))
    row = dict(zip(FIELDS, columns, strict=True))
    if not row["udp.srcport"]:
        return None
    ip6 = bool(row["ipv6.src"])
    source = (row["ipv6.src"] or row["ip.src"], int(row["udp.srcport"]))
    destination = (row["ipv6.dst"] or row["ip.dst"], int(row["udp.dstport"]))
    direction = (
        Direction.FROM_SERVER if source[1] == server_port else Direction.FROM_CLIENT
    )
    datagram = Datagram(
        number=int(row["frame.number"]),
        time=float(row["frame.time_epoch"]),
        source=source,
        destination=destination,
        ip_version=6 if ip6 else 4,
        size=int(row["udp.length"]) - 8,
        direction=direction,
    )
    forms = [_int(v) for v in _values(row["quic.header_form"])]
    # tshark puts a v2 packet's (permuted) type in its own field.
    long_types = iter(_int(v) for v in _values(row["quic.long.packet_type"]))
    long_types_v2 = iter(_int(v) for v in _values(row["quic.long.packet_type_v2"]))
    versions = iter(_int(v) for v in _values(row["quic.version"]))
    scids = iter(_values(row["quic.scid"]))
    dcids = iter(_values(row["quic.dcid"]))
    for form in forms:
        if form == 0:
            datagram.packets.append(QuicPacket(PacketType.ONE_RTT))
            continue
        version = next(versions, None)
        if version == 0:
            datagram.packets.append(
                QuicPacket(PacketType.VERSION_NEGOTIATION, 0, next(scids, None))
            )
            next(dcids, None)
            continue
        wire_type = next(long_types_v2 if version == QUIC_V2 else long_types, None)
        kind = _LONG_TYPES.get(version or QUIC_V1, _LONG_TYPES[QUIC_V1]).get(
            wire_type if wire_type is not None else -1
        )
        if kind is None:
            continue
        datagram.packets.append(
            QuicPacket(kind, version, next(scids, None), next(dcids, None))
        )
    datagram.token_lengths = [_int(v) for v in _values(row["quic.token_length"])]
    datagram.tokens = [v.replace(":", "") for v in _values(row["quic.token"])]
    datagram.retry_tokens = [
        v.replace(":", "") for v in _values(row["quic.retry_token"])
    ]
    datagram.key_phases = [_bool(v) for v in _values(row["quic.key_phase"])]
    datagram.packet_lengths = [_int(v) for v in _values(row["quic.packet_length"])]
    datagram.handshake_types = [_int(v) for v in _values(row["tls.handshake.type"])]
    datagram.ciphersuites = [_int(v) for v in _values(row["tls.handshake.ciphersuite"])]
    datagram.has_certificate = bool(_values(row["tls.handshake.certificates_length"]))
    offsets = [_int(v) for v in _values(row["quic.crypto.offset"])]
    lengths = [_int(v) for v in _values(row["quic.crypto.length"])]
    datagram.crypto_offsets = offsets
    datagram.crypto_ends = [o + n for o, n in zip(offsets, lengths, strict=False)]
    datagram.max_streams_bidi = [
        _int(v) for v in _values(row["tls.quic.parameter.initial_max_streams_bidi"])
    ]
    datagram.path_challenges = _values(row["quic.path_challenge.data"])
    datagram.undecrypted = bool(row["quic.remaining_payload"])
    datagram.path_responses = _values(row["quic.path_response.data"])
    return datagram


def _bool(text: str) -> int:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return 1
    if lowered in ("false", "0"):
        return 0
    return int(text, 0)


class Trace:
    """The datagrams of one capture, decoded by tshark.

    ``server_port`` is the port the server side of this capture uses (it
    tells the two directions apart and tells tshark to decode QUIC there);
    ``keylog`` decrypts what it can.
    """

    def __init__(
        self,
        pcap: str | Path,
        server_port: int,
        keylog: str | Path | None = None,
    ) -> None:
        self.pcap = Path(pcap)
        self.server_port = server_port
        self.keylog = Path(keylog) if keylog else None
        self.datagrams: list[Datagram] = list(self._read())

    def _read(self) -> Iterator[Datagram]:
        if not self.pcap.exists():
            raise TsharkError(f"no capture at {self.pcap}")
        args = [
            tshark_path(),
            "-n",
            "-r",
            str(self.pcap),
            "-d",
            f"udp.port=={self.server_port},quic",
            "-Y",
            "udp",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            f"aggregator={_SEPARATOR}",
        ]
        if self.keylog is not None and self.keylog.exists():
            args += ["-o", f"tls.keylog_file:{self.keylog}"]
        for name in FIELDS:
            args += ["-e", name]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise TsharkError(
                f"tshark failed on {self.pcap}: {result.stderr.strip()[-500:]}"
            )
        for line in result.stdout.splitlines():
            datagram = _parse_line(line, self.server_port)
            if datagram is not None:
                yield datagram

    # -- the questions checks ask -----------------------------------------

    def sent_by(self, direction: Direction) -> list[Datagram]:
        return [d for d in self.datagrams if d.direction is direction]

    def packets(
        self, packet_type: PacketType, direction: Direction | None = None
    ) -> Iterator[tuple[Datagram, QuicPacket]]:
        for datagram in self.datagrams:
            if direction is not None and datagram.direction is not direction:
                continue
            for packet in datagram.packets:
                if packet.type is packet_type:
                    yield datagram, packet

    def handshake_count(self) -> int:
        """Distinct server SCIDs in server Initials: one per handshake."""
        return len(
            {p.scid for _, p in self.packets(PacketType.INITIAL, Direction.FROM_SERVER)}
        )

    def server_initial_versions(self) -> set[int]:
        return {
            p.version
            for _, p in self.packets(PacketType.INITIAL, Direction.FROM_SERVER)
            if p.version is not None
        }

    def versions(self, direction: Direction) -> set[int]:
        return {
            p.version
            for datagram in self.sent_by(direction)
            for p in datagram.packets
            if p.version
        }

    def retry_tokens(self) -> set[str]:
        return {
            token
            for datagram in self.sent_by(Direction.FROM_SERVER)
            if datagram.has(PacketType.RETRY)
            for token in datagram.retry_tokens
        }

    def client_tokens(self) -> set[str]:
        return {
            token
            for datagram in self.sent_by(Direction.FROM_CLIENT)
            if datagram.has(PacketType.INITIAL)
            for token in datagram.tokens
        }
