"""Stream API details that need no script: argument checks, misuse messages,
values, and objects used after they were freed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import quicconn as q
from tests.support.certs import CertFiles
from tests.support.stream_scripts import (
    ContextConfig,
    ListenerPool,
    Script,
    loopback_pair,
)


@pytest.fixture(scope="module")
def pool(pki: CertFiles) -> Iterator[ListenerPool]:
    listeners = ListenerPool(pki)
    yield listeners
    listeners.close()


@pytest.fixture
def pair(pool: ListenerPool) -> Iterator[tuple[q.Connection, q.Connection]]:
    with loopback_pair(pool, Script("api", ())) as (client, server, _env):
        client.set_blocking_mode(True)
        server.set_blocking_mode(True)
        yield client, server


def test_bad_flags_and_codes_are_refused_with_clear_messages(
    pair: tuple[q.Connection, q.Connection],
) -> None:
    client, _ = pair
    with pytest.raises(ValueError, match="unknown new_stream"):
        client.new_stream(1 << 7)
    with pytest.raises(TypeError, match="new_stream"):
        client.new_stream("uni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown accept_stream"):
        client.accept_stream(1 << 9)
    with pytest.raises(ValueError, match="default stream mode"):
        client.set_default_stream_mode(7)
    with pytest.raises(ValueError, match="incoming stream policy"):
        client.set_incoming_stream_policy(9)
    with pytest.raises(ValueError, match=r"2\*\*62"):
        client.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_REJECT, 2**62)
    stream = client.new_stream()
    with pytest.raises(ValueError, match="WRITE_FLAG_CONCLUDE"):
        stream.write_ex2(b"x", 1 << 3)
    with pytest.raises(ValueError, match="no flags"):
        stream.stream_conclude(1)
    with pytest.raises(ValueError, match=r"2\*\*62"):
        stream.stream_reset(-1)
    with pytest.raises(TypeError, match="read size"):
        stream.read("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="writable buffer"):
        stream.readinto(b"immutable")
    assert stream.read(0) == b""
    assert stream.readinto(bytearray()) == 0
    with pytest.raises(ValueError, match="VALUE_CLASS_GENERIC"):
        stream.get_value_uint(
            q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_STREAM_WRITE_BUF_SIZE
        )
    with pytest.raises(ValueError, match="not a stream value"):
        stream.get_value_uint(q.VALUE_CLASS_GENERIC, q.VALUE_QUIC_IDLE_TIMEOUT)


def test_stream_count_limited_error_is_an_ssl_error(
    pool: ListenerPool,
) -> None:
    sc = Script("limit", (), server_ctx=ContextConfig(max_streams_bidi=0))
    with loopback_pair(pool, sc) as (client, _server, _env):
        assert (
            client.get_value_uint(
                q.VALUE_CLASS_GENERIC, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL
            )
            == 0
        )
        with pytest.raises(q.StreamCountLimitedError, match="MAX_STREAMS") as caught:
            client.new_stream()  # nonblocking connection
        assert isinstance(caught.value, q.SSLError)
        assert caught.value.code == q.ERROR_SSL
        assert client.get_error() == q.ERROR_SSL
        client.set_blocking_mode(True)
        with pytest.raises(q.StreamCountLimitedError):
            client.new_stream(q.STREAM_FLAG_NO_BLOCK)
        advanced = client.new_stream(q.STREAM_FLAG_ADVANCE)
        assert advanced.get_stream_id() == 0


def test_remote_stream_availability_reflects_the_local_limit(
    pool: ListenerPool,
) -> None:
    sc = Script(
        "avail", (), server_ctx=ContextConfig(max_streams_bidi=5, max_streams_uni=3)
    )
    with loopback_pair(pool, sc) as (client, server, _env):
        generic = q.VALUE_CLASS_GENERIC
        assert client.get_value_uint(generic, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL) == 5
        assert client.get_value_uint(generic, q.VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL) == 3
        assert (
            server.get_value_uint(generic, q.VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL) == 5
        )
        assert server.get_value_uint(generic, q.VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL) == 3


def test_context_stream_limits_are_validated(pki: CertFiles) -> None:
    ctx = q.Context(q.SERVER)
    ctx.max_streams_bidi = 0
    ctx.max_streams_uni = 1000
    assert (ctx.max_streams_bidi, ctx.max_streams_uni) == (0, 1000)
    with pytest.raises(ValueError, match="max_streams_bidi"):
        ctx.max_streams_bidi = -1
    with pytest.raises(ValueError, match="max_streams_uni"):
        ctx.max_streams_uni = True  # type: ignore[assignment]


def test_streams_of_a_freed_connection_say_so(
    pool: ListenerPool,
) -> None:
    with loopback_pair(pool, Script("freed", ())) as (client, _server, _env):
        client.set_blocking_mode(True)
        stream = client.new_stream()
        client.free()
        with pytest.raises(ValueError, match="freed"):
            stream.write(b"x")
        with pytest.raises(ValueError, match="freed"):
            client.new_stream()
        assert q.poll([(stream, q.POLL_EVENT_W)], timeout=0) == [q.POLL_EVENT_F]


def test_freeing_a_stream_twice_and_using_it_after(
    pair: tuple[q.Connection, q.Connection],
) -> None:
    client, _ = pair
    stream = client.new_stream()
    stream.write(b"abc")
    with stream:
        pass  # leaving the block frees it
    stream.free()
    assert stream.freed
    with pytest.raises(q.SSLError, match="reset locally"):
        stream.write(b"more")


def test_accept_stream_refused_under_the_reject_policy_says_how_to_fix(
    pair: tuple[q.Connection, q.Connection],
) -> None:
    client, _ = pair
    client.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_REJECT, 5)
    with pytest.raises(ValueError, match="INCOMING_STREAM_POLICY_ACCEPT"):
        client.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)


def test_stream_repr_and_types(pair: tuple[q.Connection, q.Connection]) -> None:
    client, _ = pair
    bidi = client.new_stream()
    uni = client.new_stream(q.STREAM_FLAG_UNI)
    assert repr(bidi) == "<quicconn.Stream id=0 bidi local>"
    assert repr(uni) == "<quicconn.Stream id=2 write-only local>"
    assert bidi.get_stream_type() == q.STREAM_TYPE_BIDI
    assert uni.get_stream_write_state() == q.STREAM_STATE_OK
    assert uni.get_stream_read_state() == q.STREAM_STATE_WRONG_DIR
    assert bidi.get_mode() == client.get_mode()
    assert bidi.set_mode(q.MODE_ENABLE_PARTIAL_WRITE) & q.MODE_ENABLE_PARTIAL_WRITE
    assert not client.get_mode() & q.MODE_ENABLE_PARTIAL_WRITE, "per stream"
    assert bidi.clear_mode(q.MODE_ENABLE_PARTIAL_WRITE) == client.get_mode()


def test_unconnected_socket_stays_open_after_free(pki: CertFiles) -> None:
    # Stream objects never own the socket; neither does a connection set_fd() to.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = q.Connection(q.Context(q.CLIENT))
    conn.set_fd(sock)
    conn.free()
    assert sock.fileno() != -1
    sock.close()
