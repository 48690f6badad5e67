"""The core interface's neutral pieces: packet peeks, rules, backend choice.

``quicconn._core.wire`` and ``quicconn._core.rules`` need no QUIC library;
``quicconn._core.registry`` picks the backend a context runs on.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import quicconn
from quicconn._core import registry
from quicconn._core.interface import Capability
from quicconn._core.rules import is_verification_failure, negotiated_idle_timeout
from quicconn._core.wire import (
    MAX_STATELESS_RESET_SIZE,
    MIN_STATELESS_RESET_SIZE,
    long_header_cids,
    long_header_version,
    peek_destination_cid,
    stateless_reset,
    stateless_reset_size,
    stateless_reset_token,
    trailing_reset_token,
)
from quicconn._errors import ConnCloseInfo
from quicconn._objects.context_settings import core_backend

DCID = bytes(range(1, 9))
SCID = bytes(range(0xA0, 0xA5))


def long_header(
    dcid: bytes = DCID, scid: bytes = SCID, version: int = 1, first: int = 0xC3
) -> bytes:
    """A long-header packet: first byte, version, both CIDs, then junk."""
    return (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + b"\x00" * 40
    )


# -- wire: destination connection ID -------------------------------------------


def test_long_header_dcid_is_read_from_its_length_byte() -> None:
    assert peek_destination_cid(long_header(), 8) == DCID
    # The local CID length does not matter for a long header.
    assert peek_destination_cid(long_header(), 4) == DCID
    assert peek_destination_cid(long_header(dcid=b""), 8) == b""
    twenty = bytes(range(20))
    assert peek_destination_cid(long_header(dcid=twenty), 8) == twenty


def test_long_header_dcid_does_not_depend_on_the_version() -> None:
    for version in (0, 1, 0x6B3343CF, 0x1A2A3A4A, 0xFF00001D):
        assert peek_destination_cid(long_header(version=version), 8) == DCID
    # Nor on the bits RFC 8999 leaves to each version (fixed bit clear too).
    assert peek_destination_cid(long_header(first=0x80), 8) == DCID


def test_short_header_dcid_has_the_local_length() -> None:
    packet = bytes([0x41]) + DCID + b"payload" * 4
    assert peek_destination_cid(packet, 8) == DCID
    assert peek_destination_cid(packet, 4) == DCID[:4]
    assert peek_destination_cid(packet, 0) == b""
    assert peek_destination_cid(bytes([0x41]) + DCID, 8) == DCID  # exactly enough


def test_truncated_datagrams_have_no_dcid() -> None:
    assert peek_destination_cid(b"", 8) is None
    packet = long_header()
    for size in range(6 + len(DCID)):
        assert peek_destination_cid(packet[:size], 8) is None, size
    assert peek_destination_cid(packet[: 6 + len(DCID)], 8) == DCID
    short = bytes([0x41]) + DCID
    for size in range(len(short)):
        assert peek_destination_cid(short[:size], 8) is None, size


def test_cid_longer_than_20_bytes_is_refused() -> None:
    assert peek_destination_cid(long_header(dcid=bytes(21)), 8) is None
    assert peek_destination_cid(long_header(dcid=bytes(255)), 8) is None
    assert peek_destination_cid(bytes([0x41]) + bytes(40), 21) is None


def test_dcid_peek_agrees_with_aioquic_on_a_real_initial() -> None:
    from aioquic.buffer import Buffer
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import pull_quic_header

    client = QuicConnection(configuration=QuicConfiguration(is_client=True))
    client.connect(("127.0.0.1", 4433), now=0.0)
    (datagram, _), *_ = client.datagrams_to_send(now=0.0)
    header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
    assert peek_destination_cid(datagram, 8) == header.destination_cid
    assert long_header_version(datagram) == header.version
    assert long_header_cids(datagram) == (
        header.destination_cid,
        header.source_cid,
    )


def test_long_header_version_and_cids() -> None:
    assert long_header_version(long_header(version=0x1A2A3A4A)) == 0x1A2A3A4A
    assert long_header_version(bytes([0x41]) + DCID) is None
    assert long_header_version(long_header()[:4]) is None
    assert long_header_cids(long_header()) == (DCID, SCID)
    # The source CID's length byte, or the ID itself, cut off.
    assert long_header_cids(long_header()[: 6 + len(DCID)]) is None
    assert long_header_cids(long_header()[: 6 + len(DCID) + 3]) is None
    assert long_header_cids(bytes([0x41]) + DCID + SCID) is None


# -- wire: stateless resets -------------------------------------------------


def test_stateless_reset_tokens_are_derived_per_cid() -> None:
    key = os.urandom(32)
    token = stateless_reset_token(key, DCID)
    assert len(token) == 16
    assert token == stateless_reset_token(key, DCID)
    assert token != stateless_reset_token(key, SCID)
    assert token != stateless_reset_token(os.urandom(32), DCID)


def test_a_reset_is_shorter_than_what_it_answers() -> None:
    assert stateless_reset_size(MIN_STATELESS_RESET_SIZE + 1) is None
    assert stateless_reset_size(MIN_STATELESS_RESET_SIZE + 2) == (
        MIN_STATELESS_RESET_SIZE + 1
    )
    assert stateless_reset_size(1200) == MAX_STATELESS_RESET_SIZE
    token = bytes(range(16))
    reset = stateless_reset(30, token)
    assert len(reset) == 30 and reset.endswith(token)
    assert reset[0] & 0xC0 == 0x40  # a short header with the fixed bit set
    assert trailing_reset_token(reset) == token


def test_only_short_headers_long_enough_can_be_resets() -> None:
    token = bytes(range(16))
    assert trailing_reset_token(bytes(MIN_STATELESS_RESET_SIZE - 1)) is None
    assert trailing_reset_token(bytes([0x40]) + bytes(4) + token) == token
    assert trailing_reset_token(bytes([0xC0]) + bytes(20) + token) is None


# -- rules ------------------------------------------------------------------


def close(code: int, *, local: bool = True, transport: bool = True) -> ConnCloseInfo:
    return ConnCloseInfo(
        error_code=code,
        frame_type=6 if transport else None,
        reason="",
        is_local=local,
        is_transport=transport,
    )


def test_verification_failure_is_a_local_certificate_alert() -> None:
    for alert in (42, 43, 44, 45, 46, 48):
        assert is_verification_failure(close(0x100 + alert))
    assert not is_verification_failure(close(0x100 + 40))  # handshake_failure
    assert not is_verification_failure(close(0x100 + 48, local=False))
    assert not is_verification_failure(close(0x100 + 48, transport=False))
    assert not is_verification_failure(close(48))


def test_negotiated_idle_timeout_is_the_smaller_nonzero_one() -> None:
    assert negotiated_idle_timeout(30.0, None) == 30.0
    assert negotiated_idle_timeout(30.0, 0.0) == 30.0
    assert negotiated_idle_timeout(30.0, 10.0) == 10.0
    assert negotiated_idle_timeout(5.0, 10.0) == 5.0
    assert negotiated_idle_timeout(0.0, 10.0) == 10.0
    assert negotiated_idle_timeout(0.0, None) is None
    assert negotiated_idle_timeout(0.0, 0.0) is None


# -- registry ---------------------------------------------------------------


class _ClientOnlyBackend:
    """A stand-in for a backend that cannot be a server."""

    name = "clientonly"
    capabilities = frozenset({Capability.CLIENT})


@pytest.fixture
def client_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Register ``clientonly`` (installed: it "needs" aioquic), preferred first."""
    backend = _ClientOnlyBackend()
    monkeypatch.setitem(registry._BACKENDS, "clientonly", ("unused", "aioquic"))
    monkeypatch.setitem(registry._loaded, "clientonly", backend)
    monkeypatch.setattr(registry, "PREFERENCE", ("clientonly", "aioquic"))
    monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE, raising=False)
    return backend


def test_unknown_core_names_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE, raising=False)
    with pytest.raises(ValueError, match=r"unknown QUIC core 'nosuch'.*aioquic.*auto"):
        registry.resolve("nosuch")
    with pytest.raises(ValueError, match="unknown QUIC core 'nosuch'"):
        registry.get("nosuch")
    with pytest.raises(ValueError, match="unknown QUIC core 'nosuch'"):
        quicconn.Context(quicconn.CLIENT, core="nosuch")


def test_aioquic_is_known_installed_and_able() -> None:
    assert "aioquic" in registry.known()
    assert "aioquic" in registry.available()
    backend = registry.get("aioquic")
    assert backend.name == "aioquic"
    # Everything but taking a batch of datagrams in one call: aioquic
    # processes one per call (a speed matter, never asked for).
    able = frozenset(Capability) - {Capability.BATCHED_RECEIVE}
    assert backend.capabilities == able
    assert registry.resolve("aioquic", set(able)) is backend


def test_environment_variable_chooses_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, "aioquic")
    assert registry.resolve().name == "aioquic"
    assert quicconn.Context(quicconn.CLIENT).core == "aioquic"
    monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, "nosuch")
    with pytest.raises(ValueError, match="unknown QUIC core 'nosuch'"):
        registry.resolve()
    # Configuration time: the context refuses it, not its first connection.
    with pytest.raises(ValueError, match="unknown QUIC core 'nosuch'"):
        quicconn.Context(quicconn.CLIENT)
    # An explicit choice wins over the environment.
    assert registry.resolve("aioquic").name == "aioquic"
    assert quicconn.Context(quicconn.CLIENT, core="aioquic").core == "aioquic"


def test_explicit_core_without_a_needed_capability_is_refused(
    client_only: Any,
) -> None:
    assert registry.resolve("clientonly", {Capability.CLIENT}) is client_only
    with pytest.raises(ValueError, match="'clientonly' QUIC core cannot do server"):
        registry.resolve("clientonly", {Capability.SERVER})
    with pytest.raises(ValueError, match="cannot do server"):
        quicconn.Context(quicconn.SERVER, core="clientonly")


def test_auto_skips_cores_without_a_needed_capability(client_only: Any) -> None:
    assert registry.resolve(None, {Capability.CLIENT}) is client_only
    assert registry.resolve("auto", {Capability.SERVER}).name == "aioquic"
    assert core_backend(quicconn.Context(quicconn.SERVER)).name == "aioquic"


def test_auto_with_no_able_core_says_what_is_missing(
    client_only: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "PREFERENCE", ("clientonly",))
    with pytest.raises(ValueError, match="no installed QUIC core can do server"):
        registry.resolve(None, {Capability.SERVER})


def test_mode_async_with_an_engine_needs_async_signing(client_only: Any) -> None:
    ctx = quicconn.Context(quicconn.CLIENT, core="clientonly")
    assert core_backend(ctx) is client_only
    ctx.set_mode(quicconn.MODE_ASYNC)
    assert core_backend(ctx) is client_only  # no engine: signing stays synchronous
    with quicconn.ThreadPoolEngine(max_workers=1) as engine:
        # Refused when configured, and the context is left as it was.
        with pytest.raises(ValueError, match="MODE_ASYNC private-key offload"):
            ctx.set_async_engine(engine)
        assert ctx.get_async_engine() is None
        assert core_backend(ctx) is client_only


def test_qh3_is_known_installed_preferred_and_pinned() -> None:
    # The qh3 core reaches into qh3._hazmat, outside qh3's semver promise:
    # the installed version must be one the pin in pyproject.toml allows and
    # this backend was tested with.
    import qh3

    assert "qh3" in registry.known()
    assert registry.available()[:2] == ["qh3", "aioquic"]
    assert qh3.__version__ in QH3_TESTED
    assert registry.resolve("auto", {Capability.SERVER}).name == "qh3"


#: The qh3 releases the qh3 core was tested with (pyproject.toml's pin).
QH3_TESTED = ("2.1.0",)


def test_pyproject_pins_qh3_to_the_tested_releases() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["fast"] == [f"qh3=={QH3_TESTED[0]}"]


def test_auto_takes_aioquic_for_what_qh3_cannot_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE, raising=False)
    ctx = quicconn.Context(quicconn.CLIENT)
    assert ctx.core == "qh3"
    assert ctx.congestion_control == "cubic"  # qh3's own
    ctx.congestion_control = "reno"  # only aioquic has Reno
    assert ctx.core == "aioquic" and ctx.congestion_control == "reno"
    conn = quicconn.Connection(ctx)
    try:
        assert conn.get_core_name() == "aioquic"
    finally:
        conn.free()
    server = quicconn.Context(quicconn.SERVER)
    server.stateless_reset_key = b"k" * 32  # every token derived: aioquic
    assert server.core == "aioquic"


def test_an_explicit_core_refuses_what_it_cannot_do_when_configured() -> None:
    ctx = quicconn.Context(quicconn.CLIENT, core="qh3")
    with pytest.raises(ValueError, match="'qh3' QUIC core cannot do Reno"):
        ctx.congestion_control = "reno"
    assert ctx.congestion_control == "cubic"  # unchanged
    ctx.congestion_control = "cubic"
    server = quicconn.Context(quicconn.SERVER, core="qh3")
    with pytest.raises(ValueError, match="stateless reset tokens derived"):
        server.stateless_reset_key = b"k" * 32
    assert server.stateless_reset_key is None


def test_every_object_says_which_core_it_runs_on(pki: Any) -> None:
    for name in registry.available():
        server = quicconn.Context(quicconn.SERVER, core=name)
        server.load_cert_chain(pki.cert, pki.key)
        lst = server.new_listener(("127.0.0.1", 0))
        client = quicconn.Connection(quicconn.Context(quicconn.CLIENT, core=name))
        try:
            assert server.core == name
            assert lst.get_core_name() == name
            assert client.get_core_name() == name
        finally:
            client.free()
            lst.free()


# -- the HTTP/3 codec, through the interface ------------------------------------


class _Streams:
    """An in-memory :class:`H3Transport`: writes queue up for the other side."""

    def __init__(self, is_client: bool) -> None:
        self._next = {False: 0 if is_client else 1, True: 2 if is_client else 3}
        self.sent: list[tuple[int, bytes, bool]] = []
        self.closed: tuple[int, str] | None = None

    def open_stream(self, unidirectional: bool) -> int:
        stream_id = self._next[unidirectional]
        self._next[unidirectional] += 4
        return stream_id

    def write(self, stream_id: int, data: bytes, fin: bool) -> None:
        self.sent.append((stream_id, data, fin))

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        pass

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        pass

    def close(self, error_code: int, reason: str) -> None:
        self.closed = (error_code, reason)

    def peer_max_datagram_frame_size(self) -> int | None:
        return None

    def local_max_datagram_frame_size(self) -> int | None:
        return None

    def send_datagram(self, data: bytes) -> None:
        raise AssertionError("no DATAGRAM frames here")


def test_h3_codec_yields_neutral_events() -> None:
    from quicconn._core.interface import H3DataReceived, H3HeadersReceived

    backend = registry.get("aioquic")
    client_streams, server_streams = _Streams(True), _Streams(False)
    client = backend.new_h3_codec(
        client_streams, is_client=True, max_field_section_size=65536
    )
    server = backend.new_h3_codec(
        server_streams, is_client=False, max_field_section_size=65536
    )

    def deliver(streams: _Streams, to: Any) -> list[Any]:
        events: list[Any] = []
        sent, streams.sent = streams.sent, []
        for stream_id, data, fin in sent:
            events += to.handle_stream_data(stream_id, data, fin)
        return events

    request = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")]
    request += [(b":authority", b"localhost")]
    client.send_headers(0, request, end_stream=True)
    assert deliver(client_streams, server) == [H3HeadersReceived(0, request, True)]
    server.send_headers(0, [(b":status", b"200")], end_stream=False)
    server.send_data(0, b"hello", end_stream=True)
    events = deliver(server_streams, client)
    assert events[0] == H3HeadersReceived(0, [(b":status", b"200")], False)
    body = b"".join(e.data for e in events[1:] if isinstance(e, H3DataReceived))
    assert body == b"hello" and events[-1].stream_ended
    assert client_streams.closed is None and server_streams.closed is None


def test_crypto_offsets_of_real_client_initials() -> None:
    """The gate tells a ClientHello's first Initial from its continuation
    (qh3's ML-KEM ClientHello spans two, each padded to 1200 bytes)."""
    qh3 = pytest.importorskip("qh3")
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from quicconn._core.initial import crypto_offsets

    client = QuicConnection(configuration=QuicConfiguration(is_client=True))
    client.connect(("127.0.0.1", 4433), now=0.0)
    (datagram, _), *_ = client.datagrams_to_send(now=0.0)
    assert crypto_offsets(datagram) == [0]

    fork = qh3.QuicConnection(configuration=qh3.QuicConfiguration(is_client=True))
    fork.connect(("127.0.0.1", 4433), now=0.0)
    first, second = (data for data, _ in fork.datagrams_to_send(now=0.0)[:2])
    assert 0 in (crypto_offsets(first) or [])
    rest = crypto_offsets(second)
    assert rest and 0 not in rest  # the rest of the ClientHello
    assert crypto_offsets(first[:-1] + bytes([first[-1] ^ 1])) is None  # tag


def test_qh3_transport_parameters_are_rewritten_in_place() -> None:
    """The qh3 backend sets its own stream limits and DATAGRAM frame size
    on the parameters qh3 encoded, leaving the rest as qh3 wrote them."""
    pytest.importorskip("qh3")
    from qh3._hazmat import Buffer
    from qh3.quic.packet import (
        QuicTransportParameters,
        pull_quic_transport_parameters,
        push_quic_transport_parameters,
    )

    from quicconn._core.qh3.config import rewrite_transport_parameters

    original = QuicTransportParameters(
        initial_max_data=4_194_304,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=103,
        max_datagram_frame_size=65536,
        stateless_reset_token=bytes(range(16)),
    )
    buf = Buffer(capacity=512)
    push_quic_transport_parameters(buf, original)
    encoded = bytes(buf.data)

    off = rewrite_transport_parameters(encoded, {0x08: 7, 0x09: 300, 0x20: None})
    parsed = pull_quic_transport_parameters(Buffer(data=off))
    assert (parsed.initial_max_streams_bidi, parsed.initial_max_streams_uni) == (7, 300)
    assert parsed.max_datagram_frame_size is None
    assert parsed.initial_max_data == 4_194_304
    assert parsed.stateless_reset_token == bytes(range(16))

    without = QuicTransportParameters(initial_max_data=1)
    buf = Buffer(capacity=512)
    push_quic_transport_parameters(buf, without)
    added = rewrite_transport_parameters(bytes(buf.data), {0x20: 1200})
    assert (
        pull_quic_transport_parameters(Buffer(data=added)).max_datagram_frame_size
        == 1200
    )


def test_initial_keys_match_the_rfc_9001_test_vectors() -> None:
    """The gate's Initial keys (RFC 9001 appendix A.1, for the client's
    DCID 0x8394c8f03e515708), which it decrypts new clients' Initials and
    protects its refusals with."""
    from quicconn._core.initial import client_initial_keys, server_initial_keys

    dcid = bytes.fromhex("8394c8f03e515708")
    assert [k.hex() for k in client_initial_keys(1, dcid)] == [
        "1f369613dd76d5467730efcbe3b1a22d",
        "fa044b2f42a3fd3b46fb255c",
        "9f50449e04a0e810283a1e9933adedd2",
    ]
    assert [k.hex() for k in server_initial_keys(1, dcid)] == [
        "cf3a5331653c364c88f0f379b6067e37",
        "0ac1493ca1905853b0bba03e",
        "c206b8d9b9f0f37644430b490eeaa314",
    ]
