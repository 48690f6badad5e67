"""Reusable conformance checks: one OpenSSL-visible contract each.

In the style of trio's ``check_*_stream`` helpers: each ``check_*``
function takes an :class:`~tests.conformance.harness.Endpoints` (a factory
for connected pairs in one cell of the matrix: a core, blocking or
nonblocking, UDP or in memory) and asserts one contract of quicconn's
public API.  They know nothing of the core under test; a contract that
rests on something a core may lack starts with ``ends.require(Capability.X)``,
which skips naming it.

Where both sides must act at once, a check is a stream script
(tests/support/stream_scripts.py): nonblocking, both sides are stepped in
one thread; blocking, each side runs in its own thread and every call
blocks as an application's would.  Where one side's view is the point
(timers, poll, the handshake, idle timeout), the check drives the pair
from one thread (the blocking handshake uses a second one for the
server).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest

import quicconn as q
from quicconn.testing import FakeClock
from tests.conformance.harness import (
    Capability,
    Endpoints,
    blob,
    digest,
    drive,
    now,
    readable,
    wait_until_due,
)
from tests.support.stream_scripts import (
    ALPN,
    C,
    Call,
    ConnConfig,
    ContextConfig,
    Only,
    Op,
    S,
    Side,
    sync,
)

#: RFC 9000, section 18.2: max_ack_delay when a peer does not send it;
#: neither core sends another value.
DEFAULT_MAX_ACK_DELAY = 0.025
OK = q.STREAM_STATE_OK
FINISHED = q.STREAM_STATE_FINISHED
WRONG_DIR = q.STREAM_STATE_WRONG_DIR
RESET_LOCAL = q.STREAM_STATE_RESET_LOCAL
RESET_REMOTE = q.STREAM_STATE_RESET_REMOTE
CONN_CLOSED = q.STREAM_STATE_CONN_CLOSED
AUTO_BIDI = ConnConfig(default_mode=q.DEFAULT_STREAM_MODE_AUTO_BIDI)


def _buffered(stream: q.Stream) -> int:
    """Bytes written to ``stream`` and not yet acknowledged."""
    return stream.get_value_uint(q.VALUE_CLASS_GENERIC, q.VALUE_STREAM_WRITE_BUF_USED)


def _timeout_or_infinite(conn: q.Connection) -> float:
    timeout = conn.get_event_timeout()
    return float("inf") if timeout is None else timeout


def _terminated(conn: q.Connection) -> bool:
    return bool(q.poll([(conn, q.POLL_EVENT_ECD)], 0)[0])


# ----------------------------------------------------------------------
# script operations the checks share
# ----------------------------------------------------------------------


class ReadDigest(Op):
    """Read a stream to its FIN; its length and SHA-256 must be as given."""

    def __init__(self, side: str, name: str, size: int, sha256: str) -> None:
        self.side = side
        self.name = name
        self.size = size
        self.sha256 = sha256

    def describe(self) -> str:
        return f"{self.side}.ReadDigest({self.name!r}, {self.size} bytes)"

    def step(self, s: Side) -> bool:
        state = s.scratch.setdefault(id(self), [hashlib.sha256(), 0])
        stream = s.stream(self.name)
        while True:
            try:
                chunk = stream.read(1 << 20)
            except q.WantReadError:
                return False
            except q.ZeroReturnError:
                break
            state[0].update(chunk)
            state[1] += len(chunk)
            assert state[1] <= self.size, f"more than {self.size} bytes"
        assert (state[1], state[0].hexdigest()) == (self.size, self.sha256), (
            f"{s.name} read {state[1]} bytes with another checksum "
            f"than the {self.size} written"
        )
        return True


class ShutdownRecorded(Op):
    """``shutdown()`` until it returns True, recording every result."""

    def __init__(self, side: str, flags: int, code: int, reason: str) -> None:
        self.side = side
        self.flags = flags
        self.code = code
        self.reason = reason

    def step(self, s: Side) -> bool:
        results = s.run.env.setdefault(f"shutdown {s.name}", [])
        result = s.conn.shutdown(self.flags, self.code, self.reason)
        assert isinstance(result, bool), result
        results.append(result)
        return result


def _expect_want_read(target: Any) -> bool:
    """A nonblocking read with nothing buffered raises WantReadError."""
    with pytest.raises(q.WantReadError) as caught:
        target.read(100)
    assert caught.value.code == q.ERROR_WANT_READ
    assert target.get_error() == q.ERROR_WANT_READ
    return True


def _close_info_is(
    info: q.ConnCloseInfo | None, code: int, reason: str, local: bool
) -> bool:
    assert info is not None, "no close info"
    assert info.error_code == code, info
    assert info.reason == reason, info
    assert info.is_local is local, info
    assert not info.is_transport, info
    return True


# ----------------------------------------------------------------------
# handshake
# ----------------------------------------------------------------------


def check_handshake(ends: Endpoints) -> None:
    """connect()/accept() complete the handshake and return None; nonblocking,
    connect() first raises WantReadError (get_error() == ERROR_WANT_READ);
    blocking, connect() and the listener's accept_connection()/accept() wait.
    Afterwards is_init_finished() on both ends, the ALPN agreed, the calls
    idempotent and get_error() 0."""
    with ends.unconnected() as pair:
        client, listener = pair.client, pair.listener
        assert not client.is_init_finished()
        if ends.blocking:
            client.set_blocking_mode(True)
            accepted: list[q.Connection] = []
            failures: list[BaseException] = []

            def serve() -> None:
                try:
                    listener.set_blocking_mode(True)
                    try:
                        conn = listener.accept_connection()
                    finally:
                        listener.set_blocking_mode(False)
                    assert conn is not None, "blocking accept_connection() gave None"
                    accepted.append(conn)
                    conn.set_blocking_mode(True)
                    assert conn.accept() is None
                except BaseException as exc:
                    failures.append(exc)

            server_thread = threading.Thread(target=serve, name="conformance-accept")
            server_thread.start()
            try:
                assert client.connect() is None
            finally:
                server_thread.join(10)
            assert not server_thread.is_alive(), "the server side did not finish"
            if failures:
                raise failures[0]
            pair.server = server = accepted[0]
        else:
            with pytest.raises(q.WantReadError) as caught:
                client.connect()
            assert caught.value.code == q.ERROR_WANT_READ
            assert client.get_error() == q.ERROR_WANT_READ
            assert not client.is_init_finished()
            pair.handshake(ConnConfig(), ConnConfig())
            assert pair.server is not None
            server = pair.server
        assert client.is_init_finished() and server.is_init_finished()
        assert client.connect() is None and client.do_handshake() is None
        assert server.accept() is None and server.do_handshake() is None
        assert client.get_error() == 0 and server.get_error() == 0
        assert client.get0_alpn_selected() == ALPN == server.get0_alpn_selected()
        assert not client.is_server() and server.is_server()


# ----------------------------------------------------------------------
# the event surface
# ----------------------------------------------------------------------


def check_event_timeout_and_handle_events(ends: Endpoints) -> None:
    """get_event_timeout() is None when nothing is armed (after a first
    handle_events() before connect(), after termination) and seconds to the
    nearest deadline otherwise, 0.0 once it is due (and, as in OpenSSL 3.5,
    for a client not yet started that never handled events); handle_events()
    before a deadline changes nothing, at the deadline it makes progress
    (the timer is serviced, never left due), and
    get_event_timeout()/handle_events() alone carry an exchange to its end.
    net_read_desired() from the first event handling on, still after
    termination (OpenSSL 3.5); net_write_desired() False with nothing
    queued.  Neither depends on the blocking mode, and handle_events()
    never blocks."""
    with ends.unconnected(timed=True) as pair:
        client = pair.client
        assert client.get_event_timeout() == 0.0, "due before the first tick"
        assert not client.net_read_desired() and not client.net_write_desired()
        client.handle_events()  # nothing to do: a no-op
        assert client.get_event_timeout() is None, "armed before connect()"
        assert client.net_read_desired()

        with pytest.raises(q.WantReadError):
            client.connect()  # first flight out: its loss timer is armed
        armed = client.get_event_timeout()
        assert armed is not None and armed > 0
        assert client.net_read_desired()

        pair.handshake(ConnConfig(), ConnConfig())
        pair.settle()
        server = pair.server
        assert server is not None
        for conn in (client, server):
            conn.set_blocking_mode(ends.blocking)
            idle = conn.get_event_timeout()
            assert idle is not None and idle > 1.0, "the idle timer is armed"
            assert conn.net_read_desired() and not conn.net_write_desired()

        # handle_events() never blocks, even on a blocking connection.
        before = now(pair)
        for _ in range(3):
            client.handle_events()
        assert now(pair) - before < 1.0

        # Data in flight arms a loss timer on the client.
        stream = client.new_stream()
        assert stream.write(blob(1000)) == 1000
        assert _buffered(stream) == 1000
        timeout = client.get_event_timeout()
        assert timeout is not None and 0 < timeout < 5.0, timeout
        sent = pair.datagrams.to_server.sent if pair.datagrams is not None else 0
        if pair.clock is not None:
            # Before the deadline handle_events() moves nothing (fake: exact).
            deadline = pair.clock.now() + timeout
            pair.clock.advance(timeout / 2)
            client.handle_events()
            left = client.get_event_timeout()
            assert left is not None
            assert pair.clock.now() + left == pytest.approx(deadline)
            assert pair.datagrams is not None
            assert pair.datagrams.to_server.sent == sent, "sent before the deadline"
        # At the deadline: 0.0, and handle_events() acts (a probe goes out)
        # and re-arms the timer further away.
        wait_until_due(pair, client)
        assert client.get_event_timeout() == 0.0, "due, yet not reported as 0"
        client.handle_events()
        after = client.get_event_timeout()
        assert after is None or after > 0, "handle_events() left the timer due"
        if pair.datagrams is not None:
            assert pair.datagrams.to_server.sent > sent, "nothing sent at the deadline"

        # get_event_timeout() and handle_events() alone finish the exchange:
        # the data arrives and its acknowledgement comes back.
        for _ in range(20):
            server.handle_events()  # input only: an ACK may wait for a timer
            client.handle_events()
            if _buffered(stream) == 0:
                break
            obj = min((client, server), key=_timeout_or_infinite)
            wait_until_due(pair, obj)
            assert obj.get_event_timeout() == 0.0, "due, yet not reported as 0"
            obj.handle_events()
        assert _buffered(stream) == 0, "the data was never acknowledged"

        # Closed and drained: nothing is armed any more.
        client.set_blocking_mode(False)
        server.set_blocking_mode(False)
        client.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK)
        drive(pair, lambda: _terminated(client) and _terminated(server), "termination")
        assert client.get_event_timeout() is None
        assert server.get_event_timeout() is None
        assert client.net_read_desired()  # OpenSSL 3.5: still after termination


def check_net_write_desired_follows_backpressure(ends: Endpoints) -> None:
    """net_write_desired() is True exactly while datagrams wait behind a
    refusing transport (EAGAIN); handle_events() sends them once it takes
    them again, and the data arrives."""
    ends.require_memory("refuse writes (EAGAIN) on demand")
    with ends.connected(timed=True) as pair:
        assert pair.datagrams is not None and pair.server is not None
        client, server = pair.client, pair.server
        assert not client.net_write_desired()
        pair.datagrams.client.congested = True
        stream = client.new_stream()
        stream.write_ex2(b"queued behind EAGAIN", q.WRITE_FLAG_CONCLUDE)
        for _ in range(5):  # a pacer may hold the packet until its deadline
            if client.net_write_desired():
                break
            wait_until_due(pair, client)
            client.handle_events()
        assert client.net_write_desired()
        client.handle_events()
        assert client.net_write_desired(), "still refused, still desired"
        pair.datagrams.client.congested = False
        client.handle_events()
        assert not client.net_write_desired()
        server.handle_events()
        incoming = server.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
        assert incoming is not None
        assert incoming.read() == b"queued behind EAGAIN"


def check_retransmission_at_the_loss_deadline(ends: Endpoints) -> None:
    """A lost datagram is sent again when get_event_timeout() comes due,
    not before, and its data then arrives."""
    ends.require_memory("lose a chosen datagram")
    with ends.connected(timed=True) as pair:
        assert pair.datagrams is not None and pair.clock is not None
        client, server = pair.client, pair.server
        assert server is not None
        link = pair.datagrams.to_server
        first = link.sent
        link.drop = lambda index, _data: index == first
        stream = client.new_stream()
        stream.write(b"lost once")
        assert link.dropped == 1
        timeout = client.get_event_timeout()
        assert timeout is not None and timeout < 5.0, "a loss timer is armed"
        pair.clock.advance(timeout * 0.9)
        client.handle_events()
        assert link.sent == first + 1, "sent again before the deadline"
        pair.clock.advance(client.get_event_timeout() or 0.0)
        client.handle_events()
        assert link.sent > first + 1, "not sent again at the deadline"
        drive(pair, lambda: server.get_accept_stream_queue_len() > 0, "the stream")
        incoming = server.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
        assert incoming is not None
        drive(pair, lambda: incoming.pending() == 9, "the data")
        assert incoming.read(9) == b"lost once"


# ----------------------------------------------------------------------
# streams
# ----------------------------------------------------------------------


def check_default_stream(ends: Endpoints) -> None:
    """The connection's own read()/write() use the default stream: the
    client's first write creates it, the server's first read adopts it;
    stream_conclude() is read as ZeroReturnError (code and get_error()
    ERROR_ZERO_RETURN) on every later read, with read state FINISHED; the
    write state is OK until the FIN is acknowledged, then FINISHED."""
    ends.run(
        "default_stream",
        C.write(None, b"hello on the default stream"),
        S.read_expect(None, b"hello on the default stream"),
        C.conclude(None),
        # OpenSSL 3.5: OK until the peer acknowledged the FIN.
        C.check(lambda s: s.conn.get_stream_write_state() == q.STREAM_STATE_OK, "w OK"),
        S.expect_fin(None),
        S.check(lambda s: s.conn.get_error() == q.ERROR_ZERO_RETURN, "get_error"),
        S.check(lambda s: s.conn.get_stream_read_state() == FINISHED, "r FINISHED"),
        S.expect_fin(None),
        S.write(None, b"reply", conclude=True),
        C.read_expect(None, b"reply"),
        C.expect_fin(None),
        C.check(lambda s: s.conn.get_stream_read_state() == FINISHED, "r FINISHED"),
        C.eventually(
            lambda s: s.conn.get_stream_write_state() == FINISHED, "w FINISHED"
        ),
        client=AUTO_BIDI,
        server=AUTO_BIDI,
    )


def check_multistream_open_and_accept(ends: Endpoints) -> None:
    """Both ends open bidirectional and unidirectional streams (RFC 9000
    stream IDs); accept_stream() takes them from the queue (its length
    counts them), ACCEPT_STREAM_UNI/_BIDI choose the kind; types, locality,
    WRONG_DIR for the missing direction of a unidirectional stream, and
    data and FIN on every stream."""

    def kinds(name: str, kind: int, local: bool) -> Any:
        def check(s: Side) -> bool:
            stream = s.stream(name)
            assert stream.get_stream_type() == kind
            assert stream.is_stream_local() is local
            assert stream.get0_connection() is s.conn
            if kind == q.STREAM_TYPE_WRITE:
                assert stream.get_stream_read_state() == WRONG_DIR
            if kind == q.STREAM_TYPE_READ:
                assert stream.get_stream_write_state() == WRONG_DIR
            return True

        return check

    ends.run(
        "multistream",
        C.new_stream("cb", expect_id=0),
        C.new_stream("cu", q.STREAM_FLAG_UNI, expect_id=2),
        S.new_stream("sb", expect_id=1),
        S.new_stream("su", q.STREAM_FLAG_UNI, expect_id=3),
        C.check(kinds("cb", q.STREAM_TYPE_BIDI, True), "cb"),
        C.check(kinds("cu", q.STREAM_TYPE_WRITE, True), "cu"),
        C.write("cb", b"client bidi", conclude=True),
        C.write("cu", b"client uni", conclude=True),
        S.write("sb", b"server bidi", conclude=True),
        S.write("su", b"server uni", conclude=True),
        S.expect_queue_len(2),
        S.accept(
            "cu", q.ACCEPT_STREAM_UNI, expect_id=2, expect_type=q.STREAM_TYPE_READ
        ),
        S.check(lambda s: s.conn.get_accept_stream_queue_len() == 1, "one left"),
        S.accept("cb", q.ACCEPT_STREAM_BIDI, expect_id=0),
        S.check(kinds("cb", q.STREAM_TYPE_BIDI, False), "cb"),
        S.check(kinds("cu", q.STREAM_TYPE_READ, False), "cu"),
        C.accept("su", q.ACCEPT_STREAM_UNI, expect_id=3),
        C.accept("sb", q.ACCEPT_STREAM_BIDI, expect_id=1),
        C.check(kinds("sb", q.STREAM_TYPE_BIDI, False), "sb"),
        C.check(kinds("su", q.STREAM_TYPE_READ, False), "su"),
        S.read_expect("cu", b"client uni"),
        S.expect_fin("cu"),
        S.read_expect("cb", b"client bidi"),
        S.expect_fin("cb"),
        S.write("cb", b"echo", conclude=True),
        C.read_expect("su", b"server uni"),
        C.expect_fin("su"),
        C.read_expect("sb", b"server bidi"),
        C.expect_fin("sb"),
        C.write("sb", b"echo", conclude=True),
        C.read_expect("cb", b"echo"),
        C.expect_fin("cb"),
        S.read_expect("sb", b"echo"),
        S.expect_fin("sb"),
        *[C.expect_read_state(n, FINISHED) for n in ("cb", "sb", "su")],
        *[C.expect_write_state(n, FINISHED) for n in ("cb", "sb", "cu")],
        *[S.expect_read_state(n, FINISHED) for n in ("cb", "sb", "cu")],
        *[S.expect_write_state(n, FINISHED) for n in ("cb", "sb", "su")],
    )


def check_stream_states_through_fin_and_reset(ends: Endpoints) -> None:
    """Read and write states (as OpenSSL 3.5): OK while open; the writer's
    FINISHED once the peer acknowledged the FIN, the reader's once the FIN
    arrived and all data before it was read;
    RESET_LOCAL / RESET_REMOTE with the application error code on both
    ends after stream_reset(); the reader of a reset stream gets
    StreamResetError(.error_code, .code == ERROR_SSL) on every read."""
    ends.run(
        "fin_and_reset_states",
        C.new_stream("f"),
        C.new_stream("r"),
        C.check(lambda s: s.stream("f").get_stream_write_state() == OK, "w OK"),
        C.check(lambda s: s.stream("f").get_stream_read_state() == OK, "r OK"),
        C.write("f", b"0123456789", conclude=True),
        C.check(lambda s: s.stream("f").get_stream_write_state() == OK, "w OK"),
        C.write("r", b"doomed"),
        S.accept("f", bind_id=0),
        S.accept("r", bind_id=4),
        S.eventually(lambda s: s.stream("f").pending() == 10, "data and FIN"),
        S.expect_read_state("f", OK),
        S.check(lambda s: s.stream("f").get_stream_write_state() == OK, "S w OK"),
        S.read_expect("f", b"0123456789"),
        S.expect_read_state("f", FINISHED),
        S.expect_fin("f"),
        S.read_expect("r", b"doomed"),
        *sync("read"),
        C.reset("r", 42),
        C.check(lambda s: s.stream("r").get_stream_write_state() == RESET_LOCAL, "w"),
        C.check(lambda s: s.stream("r").get_stream_write_error_code() == 42, "code"),
        S.expect_reset("r", 42),
        S.raises(
            lambda s: s.stream("r").read(1),
            q.StreamResetError,
            "read again",
            lambda exc: exc.error_code == 42 and exc.code == q.ERROR_SSL,
        ),
        S.check(lambda s: s.stream("r").get_stream_read_state() == RESET_REMOTE, "r"),
        S.check(lambda s: s.stream("r").get_stream_read_error_code() == 42, "code"),
        S.check(lambda s: s.stream("r").get_error() == q.ERROR_SSL, "get_error"),
        # The other halves are independent.
        S.write("r", b"still open", conclude=True),
        C.read_expect("r", b"still open"),
        C.expect_fin("r"),
        C.check(lambda s: s.stream("r").get_stream_read_error_code() is None, "none"),
        C.eventually(
            lambda s: s.stream("f").get_stream_write_state() == FINISHED, "FIN acked"
        ),
    )


def check_stop_sending(ends: Endpoints) -> None:
    """A reader that frees a stream with data unread sends STOP_SENDING:
    the writer's stack resets the stream with the code (RFC 9000, 3.5), so
    its state becomes RESET_LOCAL with that code (OpenSSL 3.5), and its
    next write raises StreamResetError with it (a blocked writer wakes)."""
    ends.run(
        "stop_sending",
        C.new_stream("a"),
        C.write("a", b"start"),
        S.accept("a"),
        S.read_expect("a", b"start"),
        *sync("started"),
        S.free("a"),
        # Far beyond the window: the write can only end by failing.
        C.raises(
            lambda s: s.stream("a").write(blob(300_000)),
            q.StreamResetError,
            "write after STOP_SENDING",
            lambda exc: exc.error_code == 0 and exc.code == q.ERROR_SSL,
        ),
        C.check(lambda s: s.stream("a").get_error() == q.ERROR_SSL, "get_error"),
        C.expect_write_state("a", q.STREAM_STATE_RESET_LOCAL),
        C.check(lambda s: s.stream("a").get_stream_write_error_code() == 0, "code"),
        # Freeing also reset the server's unconcluded half.
        C.expect_reset("a", 0),
        C.check(lambda s: s.stream("a").get_stream_read_state() == RESET_REMOTE, "r"),
        server_ctx=ContextConfig(max_stream_data=16384),
    )


def check_connection_close_ends_streams(ends: Endpoints) -> None:
    """Once the connection closes, every open stream half on both ends is
    CONN_CLOSED, error codes None; data that arrived before the close stays
    readable, then reads raise ConnectionTerminatedError with the close
    info."""
    ends.run(
        "close_ends_streams",
        C.new_stream("a"),
        C.new_stream("u", q.STREAM_FLAG_UNI),
        C.write("a", b"before the close"),
        C.write("u", b"uni"),
        S.accept("a", bind_id=0),
        S.accept("u", bind_id=2),
        S.expect_read_state("a", OK),
        S.eventually(lambda s: s.stream("a").pending() == 16, "data arrived"),
        *sync("open"),
        C.shutdown(0x1234, "bye", q.SHUTDOWN_FLAG_NO_STREAM_FLUSH),
        S.expect_closed(0x1234, remote=True),
        *[
            op
            for who in (C, S)
            for op in (
                who.expect_read_state("a", CONN_CLOSED),
                who.expect_write_state("a", CONN_CLOSED),
                who.check(
                    lambda s: s.stream("a").get_stream_read_error_code() is None, "rc"
                ),
                who.check(
                    lambda s: s.stream("a").get_stream_write_error_code() is None, "wc"
                ),
            )
        ],
        C.check(lambda s: s.stream("u").get_stream_write_state() == CONN_CLOSED, "u"),
        C.check(lambda s: s.stream("u").get_stream_read_state() == WRONG_DIR, "u r"),
        S.check(lambda s: s.stream("u").get_stream_read_state() == CONN_CLOSED, "u"),
        S.read_expect("a", b"before the close"),
        S.raises(
            lambda s: s.stream("a").read(1),
            q.ConnectionTerminatedError,
            "read after close",
            lambda exc: exc.close_info.error_code == 0x1234 and exc.code == q.ERROR_SSL,
        ),
        C.raises(
            lambda s: s.stream("a").write(b"late"),
            q.ConnectionTerminatedError,
            "write after close",
        ),
    )


def check_stream_count_limit(ends: Endpoints) -> None:
    """The peer's stream limit (here one bidirectional stream): with it
    used up, poll() stops reporting OSB; nonblocking, new_stream() raises
    StreamCountLimitedError (ERROR_SSL); blocking, it waits.  The slot
    comes back once the peer's application is done with its stream (all
    data and FIN both ways, the stream freed), and a new stream opens."""
    ends.require(Capability.STREAM_LIMITS, Capability.STREAM_CREDIT_ON_RELEASE)
    osb = q.POLL_EVENT_OSB

    def limited(s: Side) -> bool:
        with pytest.raises(q.StreamCountLimitedError) as caught:
            s.conn.new_stream()
        assert caught.value.code == q.ERROR_SSL
        return True

    ends.run(
        "stream_count_limit",
        C.check(lambda s: q.poll([(s.conn, osb)], 0) == [osb], "OSB at first"),
        C.new_stream("a", expect_id=0),
        C.check(lambda s: q.poll([(s.conn, osb)], 0) == [0], "no OSB: limit used"),
        Only("nonblocking", C.check(limited, "StreamCountLimitedError")),
        C.write("a", b"one", conclude=True),
        S.accept("a"),
        S.read_expect("a", b"one"),
        S.expect_fin("a"),
        S.write("a", b"done", conclude=True),
        C.read_expect("a", b"done"),
        C.expect_fin("a"),
        *sync("first stream done"),
        S.free("a"),
        # Blocking: waits here until the peer's MAX_STREAMS arrives.
        C.new_stream("b", expect_id=4),
        C.write("b", b"two", conclude=True),
        S.accept("b"),
        S.read_expect("b", b"two"),
        S.expect_fin("b"),
        server_ctx=ContextConfig(max_streams_bidi=1),
    )


# ----------------------------------------------------------------------
# would-block: raise (nonblocking) or wait (blocking)
# ----------------------------------------------------------------------


def check_read_would_block(ends: Endpoints) -> None:
    """With nothing to read, a nonblocking read raises WantReadError
    (.code and get_error() ERROR_WANT_READ) and accept_stream() returns
    None; a blocking read or accept_stream() waits for what the peer sends
    later and returns it.  get_error() is 0 after the next success."""
    ends.run(
        "read_would_block",
        C.new_stream("a"),
        C.write("a", b"first"),
        S.accept("a"),
        S.read_expect("a", b"first"),
        Only("nonblocking", S.check(lambda s: _expect_want_read(s.stream("a")), "WR")),
        Only(
            "nonblocking",
            S.check(lambda s: s.conn.accept_stream() is None, "nothing queued: None"),
        ),
        *sync("empty"),
        # Blocking: the server is already waiting in read() and then in
        # accept_stream() when these arrive.
        C.write("a", b"later"),
        C.new_stream("b"),
        C.write("b", b"new stream", conclude=True),
        S.read_expect("a", b"later"),
        S.check(lambda s: s.stream("a").get_error() == 0, "get_error after success"),
        S.accept("b"),
        S.read_expect("b", b"new stream"),
    )


def _write_until_taken(name: str, data: bytes, key: str) -> Op:
    """The all-or-nothing contract of one write_ex2 of ``data``:

    nonblocking, WantWriteError (.code and get_error() ERROR_WANT_WRITE)
    until all of it fits, a retry with another length is refused
    (SSLError "bad write retry"), and the call that succeeds returns the
    full length; blocking, one call that waits and returns the full
    length.  Records the number of WantWriteErrors in ``env[key]``.
    """

    def attempt(s: Side) -> None:
        stream = s.stream(name)
        wants = s.run.env.setdefault(key, [0])
        try:
            n = stream.write_ex2(data, q.WRITE_FLAG_CONCLUDE)
        except q.WantWriteError as exc:
            assert not s.blocking, "a blocking write raised WantWriteError"
            assert exc.code == q.ERROR_WANT_WRITE
            assert stream.get_error() == q.ERROR_WANT_WRITE
            if wants[0] == 0:
                with pytest.raises(q.SSLError, match="retry"):
                    stream.write_ex2(data[:-1], q.WRITE_FLAG_CONCLUDE)
            wants[0] += 1
            raise
        assert n == len(data), f"write returned {n}, not all {len(data)} bytes"
        assert stream.get_error() == 0

    return Call("C", attempt, f"write {len(data)} to {name}")


def check_write_would_block(ends: Endpoints) -> None:
    """A write beyond the peer's credit: nonblocking, all-or-nothing
    (WantWriteError with ERROR_WANT_WRITE, same-length retries, the full
    length once done); blocking, it waits and returns the full length.
    Every byte arrives once."""
    data = blob(64 * 1024, "ww")
    ends.run(
        "write_would_block",
        C.new_stream("a"),
        _write_until_taken("a", data, "wants"),
        Only(
            "nonblocking",
            C.check(lambda s: s.run.env["wants"][0] > 0, "WantWriteError seen"),
        ),
        S.accept("a"),
        S.read_expect("a", data),
        S.expect_fin("a"),
        server_ctx=ContextConfig(max_stream_data=16384),
    )


def check_flow_control_resumes_when_the_peer_reads(ends: Endpoints) -> None:
    """A writer held by the peer's stream credit stays held while the
    reader reads nothing (the reader never holds more than its window),
    and resumes as the reader consumes."""
    ends.require(Capability.CREDIT_ON_CONSUME)
    window = 32 * 1024
    data = blob(8 * window, "fc")

    def write_all(s: Side) -> None:
        stream = s.stream("a")
        offset: int = s.run.env.setdefault("offset", 0)
        while offset < len(data):
            # Partial mode lets the writer advance by what fits.
            offset += stream.write(memoryview(data)[offset:])
            s.run.env["offset"] = offset
        s.run.env["written"] = True

    def held(s: Side) -> bool:
        stream = s.stream("a")
        for _ in range(5):  # ticks alone do not free the writer
            s.conn.handle_events()
            assert stream.pending() <= window, "peer sent beyond its credit"
        assert stream.pending() == window
        assert not s.run.env.get("written"), "the writer finished unread"
        return True

    ends.run(
        "flow_control",
        C.new_stream("a"),
        C.write("a", b"!"),
        C.call(write_all, "write 256 KiB"),
        S.accept("a"),
        S.eventually(lambda s: s.stream("a").pending() == window, "window full"),
        S.check(held, "the writer is held"),
        S.read_expect("a", b"!" + data),
        C.check(lambda s: s.run.env["written"], "written"),
        client=ConnConfig(mode=q.MODE_ENABLE_PARTIAL_WRITE),
        server_ctx=ContextConfig(max_stream_data=window),
    )


def _partial_write_ops(set_on_stream: bool) -> tuple[Op, ...]:
    data = blob(100_000, "pw")
    if set_on_stream:
        prepare: tuple[Op, ...] = (
            C.new_stream("a"),
            C.check(
                lambda s: bool(
                    s.stream("a").set_mode(q.MODE_ENABLE_PARTIAL_WRITE)
                    & q.MODE_ENABLE_PARTIAL_WRITE
                ),
                "stream mode",
            ),
            C.check(
                lambda s: not s.conn.get_mode() & q.MODE_ENABLE_PARTIAL_WRITE,
                "the connection stays all-or-nothing",
            ),
        )
        target: str | None = "a"
    else:
        prepare = ()
        target = None

    def counted(s: Side) -> bool:
        stats = s.run.env["writes"][("C", target)]
        if s.blocking:
            assert stats["short"] == 0 and stats["want"] == 0, stats
        else:
            assert stats["short"] > 0, f"no partial count: {stats}"
        return True

    return (
        *prepare,
        C.write(target, data, conclude=True),
        C.check(counted, "partial counts (nonblocking) / one full write (blocking)"),
        *((S.accept("a"),) if set_on_stream else ()),
        S.read_expect(target, data),
        S.expect_fin(target),
    )


def check_partial_write_on_the_connection(ends: Endpoints) -> None:
    """With set_mode(MODE_ENABLE_PARTIAL_WRITE) on the connection, a
    nonblocking write to the default stream returns what fit (0 < n <
    len) instead of WantWriteError; a blocking write still returns the
    full length.  Every byte arrives once, in order."""
    ends.run(
        "partial_write_connection",
        *_partial_write_ops(set_on_stream=False),
        client=ConnConfig(
            default_mode=q.DEFAULT_STREAM_MODE_AUTO_BIDI,
            mode=q.MODE_ENABLE_PARTIAL_WRITE,
        ),
        server=AUTO_BIDI,
        server_ctx=ContextConfig(max_stream_data=8192),
    )


def check_partial_write_on_a_stream(ends: Endpoints) -> None:
    """Stream.set_mode(MODE_ENABLE_PARTIAL_WRITE) on one stream (its
    connection left all-or-nothing): a nonblocking write returns what fit;
    a blocking write returns the full length."""
    ends.run(
        "partial_write_stream",
        *_partial_write_ops(set_on_stream=True),
        server_ctx=ContextConfig(max_stream_data=8192),
    )


# ----------------------------------------------------------------------
# shutdown and close
# ----------------------------------------------------------------------


def check_shutdown(ends: Endpoints) -> None:
    """shutdown(0, code, reason): blocking, one call that returns True;
    nonblocking, False until closed, then True.  Concluded data is
    delivered first (the reader still reads it after the close).  Close
    info on both ends: code, reason, application close, is_local only on
    the closer; later writes raise ConnectionTerminatedError.  The peer's
    own shutdown() then completes too."""
    data = blob(200_000, "sd")

    def results_ok(s: Side) -> bool:
        results = s.run.env[f"shutdown {s.name}"]
        if s.blocking:
            assert results == [True], results
        else:
            assert results[0] is False and results[-1] is True, results
            assert results.count(True) == 1, results
        return True

    ends.run(
        "shutdown",
        C.new_stream("a"),
        C.new_stream("b"),
        C.write("a", data, conclude=True),
        S.accept("a"),
        *sync("sent"),
        ShutdownRecorded("C", 0, 0x77, "done here"),
        C.check(results_ok, "shutdown results"),
        C.check(
            lambda s: _close_info_is(
                s.conn.get_conn_close_info(), 0x77, "done here", local=True
            ),
            "local close info",
        ),
        C.raises(
            lambda s: s.stream("b").write(b"x"), q.ConnectionTerminatedError, "write"
        ),
        S.expect_closed(0x77, remote=True),
        S.check(
            lambda s: _close_info_is(
                s.conn.get_conn_close_info(), 0x77, "done here", local=False
            ),
            "remote close info",
        ),
        S.read_expect("a", data),
        S.expect_fin("a"),
        ShutdownRecorded("S", 0, 0, ""),
        S.check(lambda s: s.run.env["shutdown S"][-1] is True, "peer shutdown"),
        S.check(
            lambda s: _close_info_is(
                s.conn.get_conn_close_info(), 0x77, "done here", local=False
            ),
            "the peer's shutdown keeps the first close info",
        ),
    )


def check_shutdown_flushes_a_conclude_made_after_the_data(ends: Endpoints) -> None:
    """An echo server's ending (OpenSSL's quic-server-block demo): the data
    written back, then a separate stream_conclude(), then shutdown() at
    once.  The FIN reaches the reader before the close, even when the
    core's pacing held the FIN back while the data was acknowledged."""
    data = blob(1200, "echo")
    ends.run(
        "shutdown_after_conclude",
        C.new_stream("a"),
        C.write("a", data, conclude=True),
        S.accept("a"),
        S.read_expect("a", data),
        S.expect_fin("a"),
        S.write("a", data),
        S.conclude("a"),
        ShutdownRecorded("S", 0, 0, ""),
        C.read_expect("a", data),
        C.expect_fin("a"),
    )


def check_rapid_shutdown(ends: Endpoints) -> None:
    """shutdown(SHUTDOWN_FLAG_RAPID) returns at the first call, in either
    mode, without waiting out the closing period: False, as OpenSSL 3.5
    returns 0, since the connection is not terminated yet (and False again
    when repeated); the peer learns the code and reason."""

    def rapid(s: Side) -> bool:
        assert s.conn.shutdown(q.SHUTDOWN_FLAG_RAPID, 0x55, "rapid") is False
        assert s.conn.shutdown(q.SHUTDOWN_FLAG_RAPID, 0x55, "rapid") is False
        assert q.poll([(s.conn, q.POLL_EVENT_EC)], 0)[0] & q.POLL_EVENT_EC
        return _close_info_is(s.conn.get_conn_close_info(), 0x55, "rapid", True)

    ends.run(
        "rapid_shutdown",
        C.new_stream("a"),
        C.write("a", b"acknowledged first"),
        S.accept("a"),
        S.read_expect("a", b"acknowledged first"),
        C.eventually(lambda s: _buffered(s.stream("a")) == 0, "nothing to flush"),
        *sync("read"),
        C.check(rapid, "rapid shutdown"),
        S.expect_closed(0x55, remote=True),
        S.check(
            lambda s: _close_info_is(
                s.conn.get_conn_close_info(), 0x55, "rapid", local=False
            ),
            "remote close info",
        ),
    )


def check_no_block_shutdown_in_explicit_mode_does_not_tick(ends: Endpoints) -> None:
    """Under VALUE_EVENT_HANDLING_MODE_EXPLICIT, shutdown(SHUTDOWN_FLAG_NO_BLOCK)
    handles no events: a datagram waiting for the client stays unread until
    handle_events() (as read() and accept_stream() leave it)."""
    with ends.connected() as pair:
        client, server = pair.client, pair.server
        assert server is not None
        client.set_value_uint(
            q.VALUE_CLASS_GENERIC,
            q.VALUE_EVENT_HANDLING_MODE,
            q.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
        )
        outgoing = server.new_stream()
        outgoing.write(b"waiting in the client's socket")
        assert readable(client, timeout=5.0), "the datagram never arrived"
        assert client.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK) is False
        assert readable(client), "shutdown(NO_BLOCK) handled events"
        client.handle_events()
        assert not readable(client), "handle_events() left the datagram"


def check_idle_timeout(ends: Endpoints) -> None:
    """With no traffic, both ends close when the idle timeout expires, not
    before: close info local, a transport close, the reason says idle
    timeout.  Blocking, a call waiting on the connection (accept_stream())
    ends with ConnectionTerminatedError carrying that close info; on a
    FakeClock the wait jumps the clock instead of sleeping."""
    idle = 0.3
    config = ContextConfig(idle_timeout=idle)
    began = time.monotonic()
    with ends.connected(client_ctx=config, server_ctx=config, timed=True) as pair:
        client, server = pair.client, pair.server
        assert server is not None
        start = now(pair)
        # Settled: the idle timer is the only one armed, and it says when.
        expected = client.get_event_timeout()
        # RFC 9000, section 10.1: the effective idle timeout is at least
        # three PTOs.  RFC 9002, section 6.2.1: PTO = smoothed_rtt +
        # max(4 * rttvar, 1 ms) + max_ack_delay; smoothed_rtt and rttvar
        # (section 5.3) never exceed the largest RTT sample, and no sample
        # is longer than the connection has existed.  On a busy machine
        # the handshake's samples can make three PTOs exceed 0.3 s.
        lifetime = (
            time.monotonic() - began
            if pair.clock is None
            else pair.clock.now() - FakeClock().now()
        )
        max_pto = 5 * lifetime + DEFAULT_MAX_ACK_DELAY
        assert expected is not None and expected <= max(idle, 3 * max_pto), (
            expected,
            lifetime,
        )
        if ends.blocking:
            with pytest.raises(q.ConnectionTerminatedError) as caught:
                client.accept_stream()
            assert caught.value.close_info == client.get_conn_close_info()
        else:
            drive(pair, lambda: client.get_conn_close_info() is not None, "idle close")
        elapsed = now(pair) - start
        if pair.clock is not None:
            assert elapsed == pytest.approx(expected, abs=1e-3), (elapsed, expected)
        else:
            assert expected * 0.99 <= elapsed < expected + 5.0, (elapsed, expected)
        server.set_blocking_mode(False)
        drive(pair, lambda: server.get_conn_close_info() is not None, "server close")
        for conn in (client, server):
            info = conn.get_conn_close_info()
            assert info is not None
            assert info.is_local and info.is_transport, info
            assert info.error_code == q.QUIC_LOCAL_ERR_IDLE_TIMEOUT, info
            with pytest.raises(q.ConnectionTerminatedError):
                conn.write(b"late")


# ----------------------------------------------------------------------
# poll()
# ----------------------------------------------------------------------


def check_poll_events(ends: Endpoints) -> None:
    """poll() revents: OSB while a bidirectional stream can be opened; W on
    a writable stream; ISB while a peer's stream waits to be accepted; R
    while data (or the FIN) can be read, cleared once read; EC once the
    connection closes.  Level-triggered; poll(items, 0) only reports;
    blocking, poll(items, None) waits for the event."""
    R, W, EC = q.POLL_EVENT_R, q.POLL_EVENT_W, q.POLL_EVENT_EC
    ISB, OSB = q.POLL_EVENT_ISB, q.POLL_EVENT_OSB
    with ends.connected(timed=True) as pair:
        client, server = pair.client, pair.server
        assert server is not None

        def wait_for(items: list[tuple[Any, int]], index: int, bits: int) -> list[int]:
            if ends.blocking:
                revents = q.poll(items, None)
                assert revents[index] & bits == bits, (revents, bits)
                return revents
            box: list[list[int]] = []

            def ready() -> bool:
                box[:] = [q.poll(items, 0)]
                return box[0][index] & bits == bits

            drive(pair, ready, f"poll bits {bits:#x}")
            return box[0]

        mine = client.new_stream()
        revents = q.poll([(client, OSB | ISB | EC), (mine, R | W)], 0)
        assert revents == [OSB, W], revents
        assert q.poll([(client, OSB | ISB | EC), (mine, R | W)], 0) == revents

        pushed = server.new_stream()
        pushed.write(b"pushed")
        wait_for([(client, ISB)], 0, ISB)
        assert q.poll([(client, ISB | OSB | EC)], 0) == [ISB | OSB]
        incoming = client.accept_stream()
        assert incoming is not None
        assert not q.poll([(client, ISB)], 0)[0], "ISB after the accept"
        assert wait_for([(incoming, R)], 0, R) == [R]
        assert incoming.read(100) == b"pushed"
        assert q.poll([(incoming, R)], 0) == [0], "R stays after reading all"

        pushed.stream_conclude()
        assert wait_for([(incoming, R)], 0, R) == [R], "the FIN is readable"
        with pytest.raises(q.ZeroReturnError):
            incoming.read(1)

        server.set_blocking_mode(False)
        server.shutdown(q.SHUTDOWN_FLAG_RAPID | q.SHUTDOWN_FLAG_NO_STREAM_FLUSH, 9, "")
        wait_for([(client, EC)], 0, EC)
        assert q.poll([(client, EC | ISB | OSB)], 0) == [EC]


# ----------------------------------------------------------------------
# keys and volume
# ----------------------------------------------------------------------


def check_key_update(ends: Endpoints) -> None:
    """key_update() on either end, repeatedly, while data flows both ways
    on one stream: every byte arrives once, in order, across the updates;
    key_update() before the handshake is refused (ValueError)."""
    fresh = q.Connection(q.Context(q.CLIENT, core=ends.core))
    try:
        with pytest.raises(ValueError):
            fresh.key_update()
    finally:
        fresh.free()
    rounds = 3
    chunk = 40_000

    def update(s: Side) -> None:
        s.conn.key_update()

    ops: list[Op] = [C.new_stream("a"), C.write("a", b"go"), S.accept("a")]
    ops.append(S.read_expect("a", b"go"))
    for i in range(rounds):
        ops += [
            C.call(update, f"client key update {i}"),
            C.write("a", blob(chunk, f"c{i}")),
            S.read_expect("a", blob(chunk, f"c{i}")),
            S.call(update, f"server key update {i}"),
            S.write("a", blob(chunk, f"s{i}")),
            C.read_expect("a", blob(chunk, f"s{i}")),
        ]
    ops += [C.conclude("a"), S.expect_fin("a"), S.conclude("a"), C.expect_fin("a")]
    ends.run("key_update", *ops)


def check_large_transfer(ends: Endpoints) -> None:
    """Megabytes each way (2 MiB up and 1 MiB down on a bidirectional
    stream, 1 MiB on a unidirectional one, the last two at once): lengths
    and SHA-256 checksums match, every FIN arrives."""
    up, down, uni = blob(2 << 20, "up"), blob(1 << 20, "down"), blob(1 << 20, "uni")
    ends.run(
        "large_transfer",
        C.new_stream("a"),
        C.new_stream("u", q.STREAM_FLAG_UNI),
        C.write("a", up, conclude=True),
        C.write("u", uni, conclude=True),
        S.accept("a", bind_id=0),
        ReadDigest("S", "a", len(up), digest(up)),
        S.accept("u", bind_id=2),
        S.write("a", down, conclude=True),
        ReadDigest("S", "u", len(uni), digest(uni)),
        ReadDigest("C", "a", len(down), digest(down)),
    )
