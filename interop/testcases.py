"""The interop runner's testcases: files, link scenario and pass criteria.

Each :class:`Testcase` says what the server serves (file sizes), which link
the simulator sets up (the runner's scenario string), what name each
endpoint is given in ``TESTCASE`` and how the result is judged.  The checks
follow the runner's published criteria (quic-interop-runner's testcases.py),
reimplemented over :class:`interop.trace.Trace` captures and the downloaded
files; where one differs, its docstring says so.

A check returns ``None`` when satisfied or a sentence saying what failed.
"""

from __future__ import annotations

import enum
import filecmp
import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .trace import QUIC_V1, QUIC_V2, Datagram, Direction, PacketType, Trace

KB = 1 << 10
MB = 1 << 20

SIMPLE = "simple-p2p --delay=15ms --bandwidth=10Mbps --queue=25"
LONG_RTT = "simple-p2p --delay=750ms --bandwidth=10Mbps --queue=25"
DROP_30 = (
    "drop-rate --delay=15ms --bandwidth=10Mbps --queue=25 "
    "--rate_to_server=30 --rate_to_client=30 --burst_to_server=3 --burst_to_client=3"
)
DROP_2 = (
    "drop-rate --delay=15ms --bandwidth=10Mbps --queue=25 "
    "--rate_to_server=2 --rate_to_client=2 --burst_to_server=3 --burst_to_client=3"
)
CORRUPT_30 = DROP_30.replace("drop-rate", "corrupt-rate")
CORRUPT_2 = DROP_2.replace("drop-rate", "corrupt-rate")
AMPLIFICATION = (
    "droplist --delay=15ms --bandwidth=10Mbps --queue=25 --drops_to_server=2,3,4,5,6,7"
)
BLACKHOLE = "blackhole --delay=15ms --bandwidth=10Mbps --queue=25 --on=5s --off=2s"
REBIND_PORT = (
    "rebind --delay=15ms --bandwidth=10Mbps --queue=25 --first-rebind=1s "
    "--rebind-freq=5s"
)
REBIND_ADDR = REBIND_PORT + " --rebind-addr"


class Result(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"


@dataclass
class Evidence:
    """What a run left behind, for the checks to judge."""

    www: Path
    downloads: Path
    files: list[str]
    client_trace: Trace
    server_trace: Trace
    keylog: Path | None


Check = Callable[[Evidence], "str | None"]


class Unjudgeable(Exception):
    """A check cannot decide from the capture: the run counts as unsupported."""


@dataclass(frozen=True)
class Testcase:
    name: str
    abbreviation: str
    description: str
    files: tuple[int, ...]
    checks: tuple[Check, ...]
    scenario: str = SIMPLE
    client_testname: str | None = None
    server_testname: str | None = None
    timeout: float = 60.0
    cert_chain_length: int = 1
    ipv6: bool = False
    filename_length: int = 10
    needs_keylog: bool = False
    #: Measurements report a number (``unit``) over several repetitions.
    unit: str | None = None
    repetitions: int = 1

    def testname(self, role: str) -> str:
        if role == "client":
            return self.client_testname or self.name
        return self.server_testname or self.name

    def make_files(self, www: Path, rng: random.Random) -> list[str]:
        """Random files of the testcase's sizes in ``www``; returns their names."""
        names: list[str] = []
        for size in self.files:
            name = "".join(
                rng.choice(string.ascii_lowercase) for _ in range(self.filename_length)
            )
            (www / name).write_bytes(os.urandom(size))
            names.append(name)
        return names


# ----------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------


def files_match(ev: Evidence) -> str | None:
    """Every file downloaded, byte for byte, and nothing else."""
    present = {p.name for p in ev.downloads.iterdir() if p.is_file()}
    missing = [f for f in ev.files if f not in present]
    extra = sorted(present - set(ev.files))
    if missing:
        shown = ", ".join(missing[:3]) + ("..." if len(missing) > 3 else "")
        return f"{len(missing)} of {len(ev.files)} files missing ({shown})"
    if extra:
        return f"unexpected downloaded files: {', '.join(extra[:3])}"
    for name in ev.files:
        if not filecmp.cmp(ev.www / name, ev.downloads / name, shallow=False):
            got = (ev.downloads / name).stat().st_size
            want = (ev.www / name).stat().st_size
            return f"{name}: content differs ({got} bytes, expected {want})"
    return None


def version_is_v1(ev: Evidence) -> str | None:
    versions = ev.server_trace.server_initial_versions()
    if versions != {QUIC_V1}:
        return f"expected only QUIC v1 in server Initials, saw {_hexes(versions)}"
    return None


def handshakes(expected: int) -> Check:
    def check(ev: Evidence) -> str | None:
        count = ev.server_trace.handshake_count()
        if count != expected:
            return f"expected {expected} handshake(s), counted {count}"
        return None

    check.__name__ = f"handshakes_{expected}"
    return check


def no_retry(ev: Evidence) -> str | None:
    if ev.client_trace.retry_tokens() or any(
        True for _ in ev.client_trace.packets(PacketType.RETRY)
    ):
        return "the server sent a Retry, which this testcase does not expect"
    return None


def retry_used(ev: Evidence) -> str | None:
    """A Retry was sent and a client Initial carried its token.

    The runner also checks that the client did not reset its packet
    numbers; that needs the Initial decrypted, which tshark 4.0 cannot do
    after a Retry, so it is not checked here.
    """
    tokens = ev.client_trace.retry_tokens()
    if not tokens:
        return "no Retry packet (with a token) from the server"
    if not tokens & ev.client_trace.client_tokens():
        return "no client Initial used the Retry token"
    return None


def two_client_hellos(ev: Evidence) -> str | None:
    """The ClientHello was sent at least twice (the client's PTO fired).

    Counted as client Initials carrying CRYPTO data from offset 0: tshark
    does not dissect a retransmitted CRYPTO frame as TLS again, so the
    handshake type alone would count the ClientHello once.
    """
    hellos = sum(
        d.crypto_offsets.count(0)
        for d in ev.client_trace.sent_by(Direction.FROM_CLIENT)
        if d.has(PacketType.INITIAL)
    )
    if hellos < 2:
        return f"expected the ClientHello retransmitted (>= 2), saw {hellos}"
    return None


def only_chacha20(ev: Evidence) -> str | None:
    offered = {
        suite
        for d in ev.client_trace.sent_by(Direction.FROM_CLIENT)
        if d.has(PacketType.INITIAL) and 1 in d.handshake_types
        for suite in d.ciphersuites
    }
    if offered != {0x1303}:
        return (
            f"expected only TLS_CHACHA20_POLY1305_SHA256 offered, saw {_hexes(offered)}"
        )
    return None


def stream_limit_at_most_1000(ev: Evidence) -> str | None:
    limits = [
        limit
        for d in ev.client_trace.sent_by(Direction.FROM_SERVER)
        for limit in d.max_streams_bidi
    ]
    if not limits:
        return "could not read the server's initial_max_streams_bidi (decryption?)"
    if max(limits) > 1000:
        return f"the server allowed {max(limits)} bidi streams at once (> 1000)"
    return None


def second_handshake_without_certificate(ev: Evidence) -> str | None:
    by_scid: dict[str, bool] = {}
    order: list[str] = []
    for datagram, packet in ev.client_trace.packets(
        PacketType.HANDSHAKE, Direction.FROM_SERVER
    ):
        scid = packet.scid or ""
        if scid not in by_scid:
            by_scid[scid] = False
            order.append(scid)
        by_scid[scid] |= datagram.has_certificate
    if len(order) < 2:
        return f"expected Handshake packets of 2 connections, saw {len(order)}"
    if not by_scid[order[0]]:
        return "no Certificate in the first handshake (decryption failed?)"
    if by_scid[order[-1]]:
        return "the server sent a Certificate in the resumed handshake"
    return None


def _one_rtt_bytes(datagram: Datagram) -> int:
    if len(datagram.packet_lengths) == len(datagram.packets):
        return sum(
            n
            for n, p in zip(datagram.packet_lengths, datagram.packets, strict=True)
            if p.type is PacketType.ONE_RTT
        )
    return datagram.size if datagram.has(PacketType.ONE_RTT) else 0


def requests_in_zero_rtt(ev: Evidence) -> str | None:
    """0-RTT data was sent, and little went in 1-RTT (the runner's bound)."""
    zero = sum(
        d.size
        for d in ev.client_trace.sent_by(Direction.FROM_CLIENT)
        if d.has(PacketType.ZERO_RTT)
    )
    one = sum(_one_rtt_bytes(d) for d in ev.client_trace.sent_by(Direction.FROM_CLIENT))
    if zero == 0:
        return "the client sent no 0-RTT packets"
    bound = 0.5 * 250 * 40
    if one > bound:
        return f"the client sent {one} bytes in 1-RTT packets (> {bound:.0f})"
    return None


def amplification_respected(ev: Evidence) -> str | None:
    """At most 3x (4x with the runner's tolerance) before the client is validated."""
    crypto = max(
        (
            end
            for d in ev.server_trace.sent_by(Direction.FROM_SERVER)
            if d.has(PacketType.HANDSHAKE)
            for end in d.crypto_ends
        ),
        default=0,
    )
    if crypto < 7500:
        return f"only {crypto} bytes of Handshake CRYPTO data: not the long cert chain?"
    allowed = 0
    with_tolerance = 0
    for datagram in ev.server_trace.datagrams:
        if datagram.has(PacketType.VERSION_NEGOTIATION):
            return "unexpected Version Negotiation"
        if datagram.direction is Direction.FROM_CLIENT:
            if datagram.has(PacketType.HANDSHAKE):
                return None  # the client's address is validated from here on
            if datagram.has(PacketType.INITIAL):
                allowed += 3 * datagram.size
                with_tolerance += 4 * datagram.size
            continue
        if datagram.size >= with_tolerance:
            return (
                f"the server sent {datagram.size} bytes with {with_tolerance} "
                "allowed (4x what the client sent)"
            )
        allowed -= datagram.size
        with_tolerance -= datagram.size
    return "the client never sent a Handshake packet"


def keys_updated(ev: Evidence) -> str | None:
    client = [
        phase
        for d in ev.client_trace.sent_by(Direction.FROM_CLIENT)
        for phase in d.key_phases
    ]
    server = [
        phase
        for d in ev.server_trace.sent_by(Direction.FROM_SERVER)
        for phase in d.key_phases
    ]
    if not client or not server:
        return "could not read key phase bits (decryption failed?)"
    if 1 not in client or 1 not in server:
        return (
            f"key phase 1 seen from client {client.count(1)} times, "
            f"from server {server.count(1)} times; both needed"
        )
    return None


def negotiated_v2(ev: Evidence) -> str | None:
    """The client started in v1 and the server switched to v2 (RFC 9368)."""
    first = next(
        ev.client_trace.packets(PacketType.INITIAL, Direction.FROM_CLIENT), None
    )
    if first is None:
        return "no client Initial"
    if first[1].version != QUIC_V1:
        return f"the client's first Initial was version {_hexes({first[1].version})}"
    server = ev.client_trace.versions(Direction.FROM_SERVER)
    if QUIC_V2 not in server:
        return f"the server never used QUIC v2 (versions {_hexes(server)})"
    return None


def ipv6_only(ev: Evidence) -> str | None:
    v4 = [d for d in ev.server_trace.datagrams if d.ip_version == 4]
    if v4:
        return f"{len(v4)} IPv4 datagrams in an IPv6 test"
    return None


def path_validated_after_rebinding(ev: Evidence) -> str | None:
    """The server saw the client move, and challenged each new path.

    As in the runner, only a move to a path not used before needs a
    PATH_CHALLENGE in the server's first datagram on it; returning to an
    earlier path (a NAT handing back an old port) does not.
    """
    sent = ev.server_trace.sent_by(Direction.FROM_SERVER)
    ports = {d.destination for d in sent}
    if len(ports) <= 1:
        return "the server only ever sent to one client address; no rebinding seen"
    seen: set[tuple[str, int]] = set()
    # Only the challenges opening a new path must be answered: a server may
    # also probe the old path (RFC 9000, section 9.3.3), which after a NAT
    # rebinding nobody can answer.
    challenges: set[str] = set()
    for datagram in sent:
        if seen and datagram.destination not in seen:
            if not datagram.path_challenges and datagram.undecrypted:
                raise Unjudgeable(
                    f"tshark could not decrypt the server's first datagram to "
                    f"{datagram.destination}: a client with zero-length "
                    "connection IDs cannot be followed across a rebinding"
                )
            if not datagram.path_challenges:
                return (
                    f"the server's first datagram to {datagram.destination} "
                    "had no PATH_CHALLENGE"
                )
            challenges.update(datagram.path_challenges)
        seen.add(datagram.destination)
    responses = {
        r
        for d in ev.client_trace.sent_by(Direction.FROM_CLIENT)
        for r in d.path_responses
    }
    unanswered = challenges - responses
    if unanswered:
        return f"{len(unanswered)} PATH_CHALLENGE(s) never answered"
    return None


def addresses_rebound(ev: Evidence) -> str | None:
    hosts = {d.destination[0] for d in ev.server_trace.sent_by(Direction.FROM_SERVER)}
    if len(hosts) <= 1:
        return "the server saw a single client address; no address rebinding seen"
    return None


def goodput_kbps(ev: Evidence, size: int) -> float | None:
    """File bits over the span of the server's 1-RTT datagrams, as the runner."""
    times = [
        d.time
        for d in ev.client_trace.sent_by(Direction.FROM_SERVER)
        if d.has(PacketType.ONE_RTT)
    ]
    if len(times) < 2 or times[-1] == times[0]:
        return None
    return 8 * size / ((times[-1] - times[0]) * 1000)


def _hexes(values: set[int] | set[int | None]) -> str:
    return ", ".join(sorted(hex(v) for v in values if v is not None)) or "none"


# ----------------------------------------------------------------------
# the testcases
# ----------------------------------------------------------------------

_BASIC = (files_match, version_is_v1)

TESTCASES: tuple[Testcase, ...] = (
    Testcase(
        "handshake",
        "H",
        "Handshake completes successfully.",
        (1 * KB,),
        (*_BASIC, no_retry, handshakes(1)),
    ),
    Testcase(
        "transfer",
        "DC",
        "Stream data is transferred; the connection closes.",
        (2 * MB, 3 * MB, 5 * MB),
        (handshakes(1), *_BASIC),
    ),
    Testcase(
        "longrtt",
        "LR",
        "Handshake completes when the RTT is long (1.5 s).",
        (1 * KB,),
        (handshakes(1), *_BASIC, two_client_hellos),
        scenario=LONG_RTT,
        client_testname="handshake",
        server_testname="handshake",
    ),
    Testcase(
        "chacha20",
        "C20",
        "Handshake completes using ChaCha20 only.",
        (3 * MB,),
        (handshakes(1), only_chacha20, *_BASIC),
    ),
    Testcase(
        "multiplexing",
        "M",
        "Thousands of files over one connection; stream limit <= 1000.",
        (32,) * 1999,
        (handshakes(1), *_BASIC, stream_limit_at_most_1000),
        client_testname="transfer",
        server_testname="transfer",
        needs_keylog=True,
    ),
    Testcase(
        "retry",
        "S",
        "The server sends a Retry and the client uses its token.",
        (10 * KB,),
        (handshakes(1), *_BASIC, retry_used),
    ),
    Testcase(
        "resumption",
        "R",
        "The second connection resumes the first's TLS session.",
        (5 * KB, 10 * KB),
        (handshakes(2), second_handshake_without_certificate, *_BASIC),
        needs_keylog=True,
    ),
    Testcase(
        "zerortt",
        "Z",
        "The second connection sends its requests in 0-RTT.",
        (32,) * 40,
        (handshakes(2), *_BASIC, requests_in_zero_rtt),
        filename_length=250,
    ),
    Testcase(
        "http3",
        "3",
        "An HTTP/3 transaction succeeds.",
        (5 * KB, 10 * KB, 500 * KB),
        (handshakes(1), *_BASIC),
    ),
    Testcase(
        "multiconnect",
        "MC",
        "One connection per file, sequentially.",
        (1 * KB,) * 10,
        (handshakes(10), *_BASIC),
    ),
    Testcase(
        "keyupdate",
        "U",
        "The client updates keys and the server follows.",
        (3 * MB,),
        (handshakes(1), *_BASIC, keys_updated),
        server_testname="transfer",
        needs_keylog=True,
    ),
    Testcase(
        "v2",
        "V2",
        "Compatible version negotiation to QUIC v2.",
        (1 * KB,),
        (handshakes(1), files_match, negotiated_v2),
        server_testname="transfer",
    ),
    Testcase(
        "amplificationlimit",
        "A",
        "The server obeys the 3x amplification limit.",
        (5 * KB,),
        (handshakes(1), *_BASIC, amplification_respected),
        scenario=AMPLIFICATION,
        client_testname="transfer",
        server_testname="transfer",
        cert_chain_length=9,
        needs_keylog=True,
    ),
    Testcase(
        "blackhole",
        "B",
        "A transfer survives the network blacking out for 2 s.",
        (10 * MB,),
        (handshakes(1), *_BASIC),
        scenario=BLACKHOLE,
        client_testname="transfer",
        server_testname="transfer",
    ),
    Testcase(
        "handshakeloss",
        "L1",
        "50 handshakes complete with 30% loss.",
        (1 * KB,) * 50,
        (handshakes(50), *_BASIC),
        scenario=DROP_30,
        client_testname="multiconnect",
        server_testname="multiconnect",
        timeout=300,
    ),
    Testcase(
        "transferloss",
        "L2",
        "A transfer completes with 2% loss.",
        (2 * MB,),
        (handshakes(1), *_BASIC),
        scenario=DROP_2,
        client_testname="transfer",
        server_testname="transfer",
    ),
    Testcase(
        "handshakecorruption",
        "C1",
        "50 handshakes complete with 30% corruption.",
        (1 * KB,) * 50,
        (handshakes(50), *_BASIC),
        scenario=CORRUPT_30,
        client_testname="multiconnect",
        server_testname="multiconnect",
        timeout=300,
    ),
    Testcase(
        "transfercorruption",
        "C2",
        "A transfer completes with 2% corruption.",
        (2 * MB,),
        (handshakes(1), *_BASIC),
        scenario=CORRUPT_2,
        client_testname="transfer",
        server_testname="transfer",
    ),
    Testcase(
        "ipv6",
        "6",
        "A transfer over IPv6 only.",
        (5 * KB, 10 * KB),
        (handshakes(1), *_BASIC, ipv6_only),
        client_testname="transfer",
        server_testname="transfer",
        ipv6=True,
    ),
    Testcase(
        "rebind-port",
        "BP",
        "A transfer survives the client's port changing (NAT).",
        (10 * MB,),
        (handshakes(1), *_BASIC, path_validated_after_rebinding),
        scenario=REBIND_PORT,
        client_testname="transfer",
        server_testname="transfer",
        needs_keylog=True,
    ),
    Testcase(
        "rebind-addr",
        "BA",
        "A transfer survives the client's address changing.",
        (10 * MB,),
        (handshakes(1), *_BASIC, addresses_rebound, path_validated_after_rebinding),
        scenario=REBIND_ADDR,
        client_testname="transfer",
        server_testname="transfer",
        needs_keylog=True,
    ),
    Testcase(
        "goodput",
        "G",
        "Goodput of a 10 MB download over the 10 Mbit/s link.",
        (10 * MB,),
        (handshakes(1), *_BASIC),
        client_testname="transfer",
        server_testname="transfer",
        unit="kbps",
        repetitions=3,
    ),
)

BY_NAME = {t.name: t for t in TESTCASES}


def get(name: str) -> Testcase:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown testcase {name!r}; known: {', '.join(BY_NAME)}"
        ) from None
