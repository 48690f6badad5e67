"""Stream semantics, pinned by scripts run nonblocking and blocking (threads).

Each script is a list of client (C) and server (S) operations over one real
QUIC connection on loopback UDP (quicconn client <-> quicconn listener); see
tests/support/stream_scripts.py for the harness.  Timer-dependent scripts
also (or only) run over a DatagramPair with a FakeClock.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import pytest

import quicconn as q
from tests.support.certs import CertFiles
from tests.support.cores import Capability, pinned_cores, require
from tests.support.stream_scripts import (
    LEGACY_SETUPS,
    C,
    ConnConfig,
    ContextConfig,
    ListenerPool,
    Only,
    S,
    Script,
    Side,
    run_script,
    run_setup,
    script,
    sync,
)


def blob(size: int, seed: str = "x") -> bytes:
    """``size`` deterministic, non-repeating bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


NONE = q.DEFAULT_STREAM_MODE_NONE
AUTO_BIDI = q.DEFAULT_STREAM_MODE_AUTO_BIDI
AUTO_UNI = q.DEFAULT_STREAM_MODE_AUTO_UNI
ACCEPT = q.INCOMING_STREAM_POLICY_ACCEPT
REJECT = q.INCOMING_STREAM_POLICY_REJECT
AUTO = q.INCOMING_STREAM_POLICY_AUTO
UNI = q.STREAM_FLAG_UNI

OK = q.STREAM_STATE_OK
FINISHED = q.STREAM_STATE_FINISHED
WRONG_DIR = q.STREAM_STATE_WRONG_DIR
RESET_LOCAL = q.STREAM_STATE_RESET_LOCAL
RESET_REMOTE = q.STREAM_STATE_RESET_REMOTE
CONN_CLOSED = q.STREAM_STATE_CONN_CLOSED


def _code(expected: int):  # type: ignore[no-untyped-def]
    return lambda exc: exc.error_code == expected


def _read(name: str | None, n: int = 1):  # type: ignore[no-untyped-def]
    return lambda s: s.stream(name).read(n)


def _write(name: str | None, data: bytes = b"x"):  # type: ignore[no-untyped-def]
    return lambda s: s.stream(name).write(data)


def _eq(value, expected, what: str) -> bool:  # type: ignore[no-untyped-def]
    assert value == expected, f"{what}: {value!r} != {expected!r}"
    return True


def _drop_some(s: Side, link: str, count: int) -> None:
    """From now on, lose every third of the next ``count`` datagrams."""
    target = getattr(s.run.env["pair"], link)
    start = target.sent
    target.drop = lambda i, _data: start <= i < start + count and i % 3 == 0


def _blackhole(s: Side, link: str, on: bool) -> None:
    getattr(s.run.env["pair"], link).blackhole = on
    s.run.env["t0"] = s.run.env["clock"].now()


def _fake_time_passed(s: Side, seconds: float) -> bool:
    return bool(s.run.env["clock"].now() - s.run.env["t0"] >= seconds)


def _closed_by_idle_timeout(s: Side) -> bool:
    info = s.conn.get_conn_close_info()
    assert info is not None and info.is_local, info
    assert info.error_code == q.QUIC_LOCAL_ERR_IDLE_TIMEOUT, info
    return True


def _readinto_check(s: Side) -> bool:
    buf = bytearray(5)
    n = s.stream("a").readinto(buf)
    assert (n, bytes(buf)) == (5, b"peeka"), (n, buf)
    n = s.stream("a").readinto(memoryview(buf)[1:])
    assert (n, bytes(buf[1:4])) == (3, b"boo"), (n, buf)
    return True


# ----------------------------------------------------------------------
# the scripts
# ----------------------------------------------------------------------

SCRIPTS: list[Script] = [
    # -- FIN, both ways -------------------------------------------------
    script(
        "bidi_echo_with_fin_both_ways",
        C.new_stream("a", expect_id=0),
        C.write("a", b"hello server", conclude=True),
        S.accept("a", expect_id=0, expect_type=q.STREAM_TYPE_BIDI),
        S.read_expect("a", b"hello server"),
        S.expect_fin("a"),
        S.expect_read_state("a", FINISHED),
        S.write("a", b"hello client"),
        S.conclude("a"),
        S.expect_write_state("a", FINISHED),
        C.read_expect("a", b"hello client"),
        C.expect_fin("a"),
        C.expect_read_state("a", FINISHED),
        C.expect_write_state("a", FINISHED),
    ),
    script(
        "fin_is_reported_again_on_every_read",
        C.new_stream("a"),
        C.write("a", b"z", conclude=True),
        S.accept("a"),
        S.read_expect("a", b"z"),
        S.expect_fin("a"),
        S.expect_fin("a"),
        S.raises(lambda s: s.stream("a").peek(1), q.ZeroReturnError, "peek after FIN"),
        S.check(
            lambda s: s.stream("a").get_error() == q.ERROR_ZERO_RETURN, "get_error"
        ),
    ),
    script(
        "read_state_is_ok_until_the_data_before_the_fin_is_read",
        C.new_stream("a"),
        C.write("a", b"0123456789", conclude=True),
        S.accept("a"),
        S.eventually(lambda s: s.stream("a").pending() == 10, "data and FIN"),
        # OpenSSL 3.5: FINISHED only once nothing is left before the FIN.
        S.expect_read_state("a", OK),
        S.read_expect("a", b"0123"),
        S.check(lambda s: s.stream("a").pending() == 6, "6 bytes pending"),
        S.expect_read_state("a", OK),
        S.read_expect("a", b"456789"),
        S.expect_read_state("a", FINISHED),
        S.expect_fin("a"),
    ),
    script(
        "write_ex2_conclude_sends_fin_with_the_last_byte",
        C.new_stream("a"),
        C.call(
            lambda s: _eq(
                s.stream("a").write_ex2(b"last words", q.WRITE_FLAG_CONCLUDE),
                10,
                "write_ex2 count",
            ),
            "write_ex2",
        ),
        # OpenSSL 3.5: OK until the peer acknowledged the FIN.
        C.check(lambda s: s.stream("a").get_stream_write_state() == OK, "OK"),
        S.accept("a"),
        S.read_expect("a", b"last words"),
        S.expect_fin("a"),
        C.expect_write_state("a", FINISHED),
    ),
    script(
        "empty_write_ex2_with_conclude_sends_only_fin",
        C.new_stream("a"),
        C.write("a", b"", conclude=True),
        S.accept("a"),
        S.expect_fin("a"),
        S.expect_read_state("a", FINISHED),
    ),
    script(
        "conclude_is_idempotent_and_stops_writes",
        C.new_stream("a"),
        C.write("a", b"data"),
        C.conclude("a"),
        C.conclude("a"),  # the man page: a no-op, and a success
        C.raises(_write("a"), q.SSLError, "write after conclude"),
        C.check(lambda s: s.stream("a").get_stream_write_error_code() is None, "code"),
        S.accept("a"),
        S.read_expect("a", b"data"),
        S.expect_fin("a"),
        C.expect_write_state("a", FINISHED),
    ),
    script(
        "server_opened_bidi_stream_echoes",
        S.new_stream("b", expect_id=1),
        S.write("b", b"from the server", conclude=True),
        C.accept("b", expect_id=1, expect_type=q.STREAM_TYPE_BIDI),
        C.read_expect("b", b"from the server"),
        C.expect_fin("b"),
        C.write("b", b"back", conclude=True),
        S.read_expect("b", b"back"),
        S.expect_fin("b"),
    ),
    # -- unidirectional streams -----------------------------------------
    script(
        "uni_client_to_server",
        C.new_stream("u", UNI, expect_id=2),
        C.check(
            lambda s: s.stream("u").get_stream_type() == q.STREAM_TYPE_WRITE, "type"
        ),
        C.check(lambda s: s.stream("u").get_stream_read_state() == WRONG_DIR, "rstate"),
        C.raises(_read("u"), q.SSLError, "read on a send-only stream"),
        C.write("u", blob(5000), conclude=True),
        S.accept("u", expect_id=2, expect_type=q.STREAM_TYPE_READ),
        S.check(
            lambda s: s.stream("u").get_stream_write_state() == WRONG_DIR, "wstate"
        ),
        S.raises(_write("u"), q.SSLError, "write on a receive-only stream"),
        S.raises(
            lambda s: s.stream("u").stream_reset(1), q.SSLError, "reset receive-only"
        ),
        S.read_expect("u", blob(5000)),
        S.expect_fin("u"),
    ),
    script(
        "uni_server_to_client",
        S.new_stream("u", UNI, expect_id=3),
        S.write("u", blob(7000, "s"), conclude=True),
        C.accept("u", expect_id=3, expect_type=q.STREAM_TYPE_READ),
        C.read_expect("u", blob(7000, "s")),
        C.expect_fin("u"),
    ),
    script(
        "uni_streams_both_directions_at_once",
        C.new_stream("cu", UNI),
        S.new_stream("su", UNI),
        C.write("cu", blob(30000, "c"), conclude=True),
        S.write("su", blob(30000, "s"), conclude=True),
        C.accept("su", q.ACCEPT_STREAM_UNI),
        S.accept("cu", q.ACCEPT_STREAM_UNI),
        C.read_expect("su", blob(30000, "s")),
        S.read_expect("cu", blob(30000, "c")),
        C.expect_fin("su"),
        S.expect_fin("cu"),
    ),
    script(
        "stream_ids_follow_rfc9000_numbering",
        C.new_stream("b0", expect_id=0),
        C.new_stream("u0", UNI, expect_id=2),
        C.new_stream("b1", expect_id=4),
        C.new_stream("u1", UNI, expect_id=6),
        S.new_stream("sb0", expect_id=1),
        S.new_stream("su0", UNI, expect_id=3),
        S.new_stream("sb1", expect_id=5),
        C.check(lambda s: s.stream("b1").is_stream_local(), "local"),
        C.check(lambda s: s.stream("b1").get0_connection() is s.conn, "connection"),
    ),
    # -- resets ---------------------------------------------------------
    script(
        "client_reset_is_read_as_stream_reset_error_with_code",
        C.new_stream("a"),
        C.write("a", b"partial"),
        S.accept("a"),
        S.read_expect("a", b"partial"),
        *sync("read"),
        C.reset("a", 42),
        C.check(lambda s: s.stream("a").get_stream_write_state() == RESET_LOCAL, "w"),
        C.check(lambda s: s.stream("a").get_stream_write_error_code() == 42, "code"),
        C.raises(_write("a"), q.SSLError, "write after reset"),
        S.expect_reset("a", 42),
        S.expect_read_state("a", RESET_REMOTE),
        S.check(lambda s: s.stream("a").get_stream_read_error_code() == 42, "rcode"),
    ),
    script(
        "server_reset_is_read_as_stream_reset_error_with_code",
        C.new_stream("a"),
        C.write("a", b"ping"),
        S.accept("a"),
        S.read_expect("a", b"ping"),
        S.reset("a", 7),
        C.expect_reset("a", 7),
        C.expect_read_state("a", RESET_REMOTE),
        C.check(lambda s: s.stream("a").get_stream_read_error_code() == 7, "code"),
        # The other direction is unaffected.
        C.write("a", b"still open", conclude=True),
        S.read_expect("a", b"still open"),
        S.expect_fin("a"),
    ),
    script(
        "reads_after_reset_keep_raising_with_the_code",
        S.new_stream("s", UNI),
        S.write("s", b"abc"),
        S.reset("s", 1234),
        C.accept("s"),
        C.expect_reset("s", 1234),
        C.raises(_read("s", 10), q.StreamResetError, "read again", _code(1234)),
        C.raises(
            lambda s: s.stream("s").peek(1), q.StreamResetError, "peek", _code(1234)
        ),
        C.raises(
            lambda s: s.stream("s").readinto(bytearray(4)),
            q.StreamResetError,
            "readinto",
            _code(1234),
        ),
        C.check(lambda s: s.stream("s").get_error() == q.ERROR_SSL, "get_error"),
        C.check(lambda s: s.stream("s").get_stream_read_state() == RESET_REMOTE, "st"),
    ),
    script(
        "second_reset_fails_and_keeps_the_first_code",
        C.new_stream("a"),
        C.write("a", b"x"),
        C.reset("a", 5),
        # OpenSSL 3.5 fails a second reset (SSL_ERROR_SSL).
        C.raises(lambda s: s.stream("a").stream_reset(6), q.SSLError, "again"),
        C.check(lambda s: s.stream("a").get_stream_write_error_code() == 5, "code"),
        S.accept("a"),
        S.expect_reset("a", 5),
    ),
    script(
        "reset_after_conclude_is_refused",
        C.new_stream("a"),
        C.write("a", b"done", conclude=True),
        C.raises(
            lambda s: s.stream("a").stream_reset(3), q.SSLError, "reset concluded"
        ),
        S.accept("a"),
        S.read_expect("a", b"done"),
        S.expect_fin("a"),
    ),
    script(
        "reset_before_any_data_opens_a_reset_stream",
        C.new_stream("a"),
        C.reset("a", 11),
        S.accept("a"),
        S.expect_reset("a", 11),
    ),
    # -- STOP_SENDING ---------------------------------------------------
    script(
        "freeing_an_unread_stream_sends_stop_sending",
        C.new_stream("a"),
        C.write("a", b"more to come"),
        S.accept("a"),
        S.read_expect("a", b"more"),
        S.free("a"),
        # The stack answers STOP_SENDING with RESET_STREAM: RESET_LOCAL.
        C.expect_write_state("a", RESET_LOCAL),
        C.check(lambda s: s.stream("a").get_stream_write_error_code() == 0, "code 0"),
        C.raises(_write("a"), q.StreamResetError, "write after STOP", _code(0)),
        # The server's unconcluded send part was reset when it was freed.
        C.expect_reset("a", 0),
    ),
    script(
        "stop_sending_wakes_a_blocked_writer",
        C.new_stream("a"),
        C.write("a", b"start"),
        S.accept("a"),
        S.read_expect("a", b"start"),
        *sync("accepted"),
        S.free("a"),
        # Far more than the 16 KiB window: the write can only end by failing.
        C.raises(_write("a", blob(400_000)), q.StreamResetError, "big write", _code(0)),
        server_ctx=ContextConfig(max_stream_data=16384),
    ),
    script(
        "freeing_after_fin_sends_no_stop_sending",
        C.new_stream("a"),
        C.write("a", b"complete", conclude=True),
        S.accept("a"),
        S.eventually(lambda s: s.stream("a").pending() == 8, "data and FIN"),
        S.free("a"),
        # No STOP_SENDING: the client's send part ends FINISHED, but the
        # server's send part was reset by the free.
        C.expect_reset("a", 0),
        C.expect_write_state("a", FINISHED),
    ),
    script(
        "freeing_a_concluded_stream_still_delivers_its_data",
        C.new_stream("a"),
        C.write("a", blob(200_000, "f"), conclude=True),
        C.free("a"),
        S.accept("a"),
        S.read_expect("a", blob(200_000, "f")),
        S.expect_fin("a"),
    ),
    script(
        "freeing_an_unconcluded_stream_resets_it",
        C.new_stream("a"),
        C.write("a", b"unfinished"),
        S.accept("a"),
        S.read_expect("a", b"unfinished"),
        *sync("read"),
        C.free("a"),
        S.expect_reset("a", 0),
        S.expect_read_state("a", RESET_REMOTE),
    ),
    script(
        "freed_stream_object_is_unusable",
        C.new_stream("a"),
        C.free("a"),
        C.free("a"),
        C.check(lambda s: s.stream("a").freed, "freed"),
        S.accept("a"),
        S.expect_reset("a", 0),
    ),
    # -- connection close with open streams -----------------------------
    script(
        "client_close_puts_server_streams_in_conn_closed",
        C.new_stream("a"),
        C.new_stream("b"),
        C.write("a", b"aa"),
        C.write("b", b"bb"),
        S.accept("a"),
        S.accept("b"),
        S.read_expect("a", b"aa"),
        S.read_expect("b", b"bb"),
        *sync("open"),
        C.shutdown(0x1234, "bye", q.SHUTDOWN_FLAG_NO_STREAM_FLUSH),
        S.expect_closed(0x1234, remote=True),
        S.expect_read_state("a", CONN_CLOSED),
        S.expect_write_state("b", CONN_CLOSED),
        S.check(
            lambda s: s.stream("a").get_stream_read_error_code() is None, "no code"
        ),
        S.raises(_read("a"), q.ConnectionTerminatedError, "read on closed"),
        S.raises(_write("b"), q.ConnectionTerminatedError, "write on closed"),
        S.raises(
            lambda s: s.conn.new_stream(), q.ConnectionTerminatedError, "new_stream"
        ),
        S.raises(
            lambda s: s.conn.accept_stream(), q.ConnectionTerminatedError, "accept"
        ),
        C.check(lambda s: s.stream("a").get_stream_write_state() == CONN_CLOSED, "c"),
        C.expect_closed(0x1234, remote=False),
    ),
    script(
        "server_close_wakes_a_blocked_reader_and_acceptor",
        C.new_stream("a"),
        C.write("a", b"request"),
        S.accept("a"),
        S.read_expect("a", b"request"),
        *sync("open"),
        S.shutdown(77, "going away", q.SHUTDOWN_FLAG_RAPID),
        C.raises(_read("a", 100), q.ConnectionTerminatedError, "blocked read"),
        C.raises(
            lambda s: s.conn.accept_stream(), q.ConnectionTerminatedError, "accept"
        ),
        C.expect_closed(77, remote=True),
        C.check(lambda s: s.stream("a").get_stream_read_state() == CONN_CLOSED, "st"),
    ),
    script(
        "residual_data_is_readable_after_the_connection_closed",
        S.new_stream("s", UNI),
        S.write("s", b"last data before close"),
        C.accept("s"),
        C.eventually(lambda s: s.stream("s").pending() == 22, "all data arrived"),
        *sync("arrived"),
        S.shutdown(5, "", q.SHUTDOWN_FLAG_NO_STREAM_FLUSH | q.SHUTDOWN_FLAG_RAPID),
        C.expect_read_state("s", CONN_CLOSED),
        C.read_expect("s", b"last data before close"),
        C.raises(_read("s"), q.ConnectionTerminatedError, "nothing left"),
    ),
    script(
        "shutdown_flushes_stream_data_before_closing",
        C.new_stream("a"),
        C.new_stream("b"),
        C.write("a", blob(150_000, "a"), conclude=True),
        C.write("b", blob(150_000, "b"), conclude=True),
        C.shutdown(0, "done"),
        S.accept("a"),
        S.accept("b"),
        S.read_expect("a", blob(150_000, "a")),
        S.read_expect("b", blob(150_000, "b")),
        S.expect_fin("a"),
        S.expect_fin("b"),
        S.expect_closed(0, remote=True),
    ),
    script(
        "writes_are_refused_once_shutdown_began",
        C.new_stream("a"),
        C.write("a", b"x"),
        C.call(
            lambda s: s.conn.shutdown(
                q.SHUTDOWN_FLAG_NO_BLOCK | q.SHUTDOWN_FLAG_RAPID, 0, ""
            ),
            "shutdown no-block",
        ),
        C.raises(_write("a"), q.ConnectionTerminatedError, "write while shutting down"),
        C.raises(lambda s: s.conn.new_stream(), q.ConnectionTerminatedError, "new"),
        # Shutting down goes on only as shutdown() is called again.
        C.shutdown(0, "", q.SHUTDOWN_FLAG_RAPID),
        S.expect_closed(0),
    ),
    # -- stream-count limits --------------------------------------------
    script(
        "nonblocking_new_stream_at_the_limit_raises_retryable_error",
        C.new_stream("a"),
        C.new_stream("b"),
        C.check(
            lambda s: (
                s.conn.get_value_uint(
                    q.VALUE_CLASS_GENERIC, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL
                )
                == 0
            ),
            "no bidi credit",
        ),
        C.raises(
            lambda s: s.conn.new_stream(q.STREAM_FLAG_NO_BLOCK),
            q.StreamCountLimitedError,
            "third stream",
            lambda exc: exc.code == q.ERROR_SSL,
        ),
        C.write("a", b"1", conclude=True),
        C.write("b", b"2", conclude=True),
        S.accept("a"),
        S.accept("b"),
        S.read_expect("a", b"1"),
        S.read_expect("b", b"2"),
        S.expect_fin("a"),
        S.expect_fin("b"),
        S.write("a", b"", conclude=True),
        S.write("b", b"", conclude=True),
        C.expect_fin("a"),
        C.expect_fin("b"),
        S.free("a"),
        S.free("b"),
        # Completed streams give credit back (MAX_STREAMS).
        C.new_stream("c", expect_id=8),
        server_ctx=ContextConfig(max_streams_bidi=2),
    ),
    script(
        "blocking_new_stream_waits_for_max_streams",
        C.new_stream("a"),
        C.write("a", b"first", conclude=True),
        # At the limit: blocks (nonblocking: retried) until the server is done.
        C.new_stream("b", expect_id=4),
        C.write("b", b"second", conclude=True),
        S.accept("a"),
        S.read_expect("a", b"first"),
        S.expect_fin("a"),
        S.write("a", b"", conclude=True),
        S.free("a"),  # as in OpenSSL, the slot returns once the stream is freed
        S.accept("b"),
        S.read_expect("b", b"second"),
        server_ctx=ContextConfig(max_streams_bidi=1),
    ),
    script(
        "uni_stream_limit_is_separate_from_bidi",
        C.new_stream("u", UNI),
        C.raises(
            lambda s: s.conn.new_stream(UNI | q.STREAM_FLAG_NO_BLOCK),
            q.StreamCountLimitedError,
            "second uni",
        ),
        C.new_stream("b"),
        C.write("u", b"uni", conclude=True),
        S.accept("u"),
        S.read_expect("u", b"uni"),
        S.expect_fin("u"),
        S.free("u"),
        C.new_stream("u2", UNI, expect_id=6),
        server_ctx=ContextConfig(max_streams_uni=1),
    ),
    script(
        "advance_flag_opens_a_stream_beyond_the_limit",
        C.new_stream("a"),
        C.new_stream("early", q.STREAM_FLAG_ADVANCE, expect_id=4),
        C.write("early", b"queued until allowed", conclude=True),
        C.write("a", b"first", conclude=True),
        S.accept("a"),
        S.read_expect("a", b"first"),
        S.expect_fin("a"),
        S.write("a", b"", conclude=True),
        S.free("a"),
        S.accept("early", expect_id=4),
        S.read_expect("early", b"queued until allowed"),
        S.expect_fin("early"),
        server_ctx=ContextConfig(max_streams_bidi=1),
    ),
    script(
        "peer_streams_keep_their_slots_until_freed",
        *[C.new_stream(f"u{i}", UNI, expect_id=2 + 4 * i) for i in range(3)],
        *[C.write(f"u{i}", b"%d" % i, conclude=True) for i in range(3)],
        S.expect_queue_len(3),
        *sync("queued"),
        # A round trip: a MAX_STREAMS frame, had one been sent, came first.
        C.new_stream("p"),
        C.write("p", b"ping"),
        S.accept("p", q.ACCEPT_STREAM_BIDI),
        S.read_expect("p", b"ping"),
        S.write("p", b"pong"),
        C.read_expect("p", b"pong"),
        C.raises(
            lambda s: s.conn.new_stream(UNI | q.STREAM_FLAG_NO_BLOCK),
            q.StreamCountLimitedError,
            "finished streams still queued hold every uni slot",
        ),
        *sync("limited"),
        S.accept("a", q.ACCEPT_STREAM_UNI, expect_id=2),
        S.read_expect("a", b"0"),
        S.free("a"),  # accepted, finished and freed: the peer gets a slot back
        C.new_stream("u3", UNI, expect_id=14),
        C.write("u3", b"3", conclude=True),
        S.accept("b", q.ACCEPT_STREAM_UNI, expect_id=6),
        S.expect_queue_len(2),
        server_ctx=ContextConfig(max_streams_uni=3),
        needs=(Capability.STREAM_CREDIT_ON_RELEASE,),
    ),
    # -- accept queue ---------------------------------------------------
    script(
        "accept_queue_length_and_kind_filters",
        C.new_stream("b1"),
        C.new_stream("u1", UNI),
        C.new_stream("b2"),
        C.write("b1", b"1"),
        C.write("u1", b"2"),
        C.write("b2", b"3"),
        S.expect_queue_len(3),
        S.accept("u", q.ACCEPT_STREAM_UNI, expect_id=2),
        S.accept("x", q.ACCEPT_STREAM_BIDI, expect_id=0),
        S.check(lambda s: s.conn.get_accept_stream_queue_len() == 1, "one left"),
        S.check(
            lambda s: (
                s.conn.accept_stream(q.ACCEPT_STREAM_NO_BLOCK | q.ACCEPT_STREAM_UNI)
                is None
            ),
            "no uni left",
        ),
        S.accept("y", expect_id=4),
        S.check(
            lambda s: s.conn.accept_stream(q.ACCEPT_STREAM_NO_BLOCK) is None, "empty"
        ),
    ),
    script(
        "many_streams_interleaved",
        *[C.new_stream(f"c{i}") for i in range(16)],
        *[
            C.write(f"c{i}", blob(3000 + 100 * i, f"c{i}"), conclude=True)
            for i in range(16)
        ],
        *[S.accept(f"c{i}", expect_id=4 * i) for i in range(16)],
        *[
            S.read_expect(f"c{i}", blob(3000 + 100 * i, f"c{i}"))
            for i in range(15, -1, -1)
        ],
        *[S.write(f"c{i}", blob(500, f"r{i}"), conclude=True) for i in range(16)],
        *[C.read_expect(f"c{i}", blob(500, f"r{i}")) for i in range(16)],
        *[C.expect_fin(f"c{i}") for i in range(16)],
    ),
    # -- default stream modes -------------------------------------------
    script(
        "auto_bidi_write_first_creates_a_client_bidi_default_stream",
        C.check(lambda s: s.conn.get_stream_type() == q.STREAM_TYPE_BIDI, "type"),
        C.check(
            lambda s: s.conn.get_stream_read_state() == q.STREAM_STATE_NONE, "none"
        ),
        C.write(None, b"GET /\r\n"),
        C.check(lambda s: s.conn.get_stream_id() == 0, "default is stream 0"),
        C.check(lambda s: s.conn.is_stream_local(), "local"),
        S.accept("a", expect_id=0),
        S.read_expect("a", b"GET /\r\n"),
        S.write("a", b"reply", conclude=True),
        C.read_expect(None, b"reply"),
        C.expect_fin(None),
        C.check(lambda s: s.conn.get_stream_read_state() == FINISHED, "finished"),
        C.raises(
            lambda s: s.conn.set_default_stream_mode(NONE), ValueError, "too late"
        ),
        client=ConnConfig(default_mode=AUTO_BIDI),
    ),
    script(
        "auto_uni_write_first_creates_a_send_only_default_stream",
        C.write(None, b"one way", conclude=True),
        C.check(lambda s: s.conn.get_stream_id() == 2, "uni stream 2"),
        C.check(lambda s: s.conn.get_stream_type() == q.STREAM_TYPE_WRITE, "type"),
        C.raises(_read(None), q.SSLError, "read on send-only default"),
        C.check(lambda s: s.conn.get_stream_read_state() == WRONG_DIR, "WRONG_DIR"),
        S.accept("u", expect_id=2),
        S.read_expect("u", b"one way"),
        S.expect_fin("u"),
        client=ConnConfig(default_mode=AUTO_UNI),
    ),
    script(
        "read_first_binds_the_servers_first_bidi_stream",
        S.new_stream("s", expect_id=1),
        S.write("s", b"server speaks first"),
        C.read_expect(None, b"server speaks first"),
        C.check(lambda s: s.conn.get_stream_id() == 1, "default is stream 1"),
        C.check(lambda s: not s.conn.is_stream_local(), "remote"),
        C.check(lambda s: s.conn.get_accept_stream_queue_len() == 0, "dequeued"),
        C.write(None, b"client answers", conclude=True),
        S.read_expect("s", b"client answers"),
        S.expect_fin("s"),
        client=ConnConfig(default_mode=AUTO_BIDI),
    ),
    script(
        "read_first_may_bind_a_server_uni_stream",
        S.new_stream("s", UNI, expect_id=3),
        S.write("s", b"uni default", conclude=True),
        C.read_expect(None, b"uni default"),
        C.check(lambda s: s.conn.get_stream_type() == q.STREAM_TYPE_READ, "READ"),
        C.raises(_write(None), q.SSLError, "write on a receive-only default"),
        C.expect_fin(None),
        client=ConnConfig(default_mode=AUTO_UNI),
    ),
    script(
        "mode_none_has_no_default_stream",
        C.raises(_write(None), q.SSLError, "write"),
        C.raises(_read(None), q.SSLError, "read"),
        C.check(lambda s: s.conn.get_stream_type() == q.STREAM_TYPE_NONE, "type"),
        C.check(lambda s: s.conn.get_stream_id() is None, "no id"),
        C.check(lambda s: s.conn.write_ex2(b"") == 0, "empty write is a no-op"),
        client=ConnConfig(default_mode=NONE),
    ),
    script(
        "new_stream_inhibits_the_default_stream",
        C.new_stream("a"),
        C.raises(_write(None), q.SSLError, "default write after new_stream"),
        C.check(lambda s: s.conn.get_stream_type() == q.STREAM_TYPE_NONE, "NONE"),
        C.raises(lambda s: s.conn.set_default_stream_mode(NONE), ValueError, "late"),
        client=ConnConfig(default_mode=AUTO_BIDI),
    ),
    # -- incoming stream policies ---------------------------------------
    script(
        "auto_policy_rejects_peer_streams_once_a_default_stream_exists",
        C.write(None, b"default"),
        S.accept("a"),
        S.read_expect("a", b"default"),
        *sync("default made"),
        S.new_stream("intruder"),
        S.write("intruder", b"are you there?"),
        # Rejected with STOP_SENDING and RESET_STREAM, error code 0; the
        # writer's stack answers STOP_SENDING with a reset: RESET_LOCAL.
        S.expect_write_state("intruder", RESET_LOCAL),
        S.expect_reset("intruder", 0),
        C.raises(
            lambda s: s.conn.accept_stream(q.ACCEPT_STREAM_NO_BLOCK),
            ValueError,
            "accept under REJECT",
        ),
        C.check(lambda s: s.conn.get_accept_stream_queue_len() == 0, "not queued"),
        client=ConnConfig(default_mode=AUTO_BIDI, policy=AUTO),
    ),
    script(
        "auto_policy_accepts_before_a_default_stream_exists",
        S.new_stream("s1"),
        S.write("s1", b"one"),
        C.accept("first"),
        C.read_expect("first", b"one"),
        *sync("accepted"),
        # accept_stream() inhibited the default stream: AUTO now rejects.
        S.new_stream("s2"),
        S.write("s2", b"two"),
        S.expect_reset("s2", 0),
        client=ConnConfig(default_mode=AUTO_BIDI, policy=AUTO),
    ),
    script(
        "auto_policy_with_mode_none_accepts_everything",
        *[S.new_stream(f"s{i}") for i in range(3)],
        *[S.write(f"s{i}", bytes([i]) * 10, conclude=True) for i in range(3)],
        *[C.accept(f"s{i}", expect_id=1 + 4 * i) for i in range(3)],
        *[C.read_expect(f"s{i}", bytes([i]) * 10) for i in range(3)],
        client=ConnConfig(default_mode=NONE, policy=AUTO),
    ),
    script(
        "accept_policy_keeps_accepting_beside_a_default_stream",
        C.write(None, b"default"),
        S.accept("d"),
        S.read_expect("d", b"default"),
        S.new_stream("extra"),
        S.write("extra", b"extra", conclude=True),
        C.accept("extra", expect_id=1),
        C.read_expect("extra", b"extra"),
        C.expect_fin("extra"),
        client=ConnConfig(default_mode=AUTO_BIDI, policy=ACCEPT),
    ),
    script(
        "reject_policy_uses_the_application_error_code",
        S.new_stream("b"),
        S.write("b", b"bidi"),
        S.new_stream("u", UNI),
        S.write("u", b"uni"),
        S.expect_write_state("b", RESET_LOCAL),
        S.expect_write_state("u", RESET_LOCAL),
        S.check(lambda s: s.stream("b").get_stream_write_error_code() == 99, "b code"),
        S.check(lambda s: s.stream("u").get_stream_write_error_code() == 99, "u code"),
        S.expect_reset("b", 99),
        C.raises(
            lambda s: s.conn.accept_stream(q.ACCEPT_STREAM_NO_BLOCK),
            ValueError,
            "REJECT",
        ),
        client=ConnConfig(default_mode=NONE, policy=REJECT, policy_code=99),
    ),
    script(
        "server_side_policy_and_mode_apply_to_accepted_connections",
        C.new_stream("a"),
        C.new_stream("b"),
        C.write("a", b"a", conclude=True),
        C.write("b", b"b", conclude=True),
        S.accept("a"),
        S.accept("b"),
        S.read_expect("b", b"b"),
        S.read_expect("a", b"a"),
        server=ConnConfig(default_mode=AUTO_BIDI, policy=ACCEPT),
    ),
    # -- flow control and back-pressure ----------------------------------
    script(
        "large_write_against_a_small_window",
        C.new_stream("a"),
        C.write("a", blob(600_000, "big"), conclude=True),
        S.accept("a"),
        S.read_expect("a", blob(600_000, "big")),
        S.expect_fin("a"),
        server_ctx=ContextConfig(max_stream_data=20_000, max_data=40_000),
    ),
    script(
        "large_writes_both_ways_on_many_streams",
        *[C.new_stream(f"c{i}") for i in range(4)],
        *[C.write(f"c{i}", blob(120_000, f"up{i}"), conclude=True) for i in range(4)],
        *[
            op
            for i in range(4)
            for op in (
                S.accept(f"c{i}"),
                S.read_expect(f"c{i}", blob(120_000, f"up{i}")),
            )
        ],
        *[S.write(f"c{i}", blob(120_000, f"down{i}"), conclude=True) for i in range(4)],
        *[C.read_expect(f"c{i}", blob(120_000, f"down{i}")) for i in range(4)],
        server_ctx=ContextConfig(max_stream_data=32_768),
        client_ctx=ContextConfig(max_stream_data=32_768),
    ),
    script(
        "partial_write_mode_returns_short_counts",
        C.new_stream("a"),
        C.write("a", blob(100_000, "p"), conclude=True),
        Only(
            "nonblocking",
            C.check(
                lambda s: s.run.env["writes"][("C", "a")]["short"] > 0,
                "at least one short write",
            ),
        ),
        S.accept("a"),
        S.read_expect("a", blob(100_000, "p")),
        S.expect_fin("a"),
        client=ConnConfig(mode=q.MODE_ENABLE_PARTIAL_WRITE),
        server_ctx=ContextConfig(max_stream_data=8192),
    ),
    script(
        "all_or_nothing_write_reports_the_full_length_once_done",
        C.new_stream("a"),
        C.write("a", blob(100_000, "aon"), conclude=True),
        Only(
            "nonblocking",
            C.check(
                lambda s: (
                    s.run.env["writes"][("C", "a")]["short"] == 0
                    and s.run.env["writes"][("C", "a")]["want"] > 0
                ),
                "WantWriteError, then the whole length",
            ),
        ),
        S.accept("a"),
        S.read_expect("a", blob(100_000, "aon")),
        server_ctx=ContextConfig(max_stream_data=8192),
    ),
    script(
        "all_or_nothing_retry_with_another_length_is_refused",
        C.new_stream("a"),
        Only(
            "nonblocking",
            C.raises(_write("a", blob(50_000)), q.WantWriteError, "first try"),
        ),
        Only(
            "nonblocking",
            C.raises(_write("a", blob(10)), q.SSLError, "different length"),
        ),
        server_ctx=ContextConfig(max_stream_data=4096),
    ),
    script(
        "write_buffer_values_track_unacknowledged_data",
        C.new_stream("a"),
        C.check(
            lambda s: (
                s.stream("a").get_value_uint(
                    q.VALUE_CLASS_GENERIC, q.VALUE_STREAM_WRITE_BUF_SIZE
                )
                == 1024 * 1024
            ),
            "size",
        ),
        C.write("a", b"y" * 1000),
        C.check(
            lambda s: (
                s.stream("a").get_value_uint(
                    q.VALUE_CLASS_GENERIC, q.VALUE_STREAM_WRITE_BUF_USED
                )
                + s.stream("a").get_value_uint(
                    q.VALUE_CLASS_GENERIC, q.VALUE_STREAM_WRITE_BUF_AVAIL
                )
                == 1024 * 1024
            ),
            "used + avail == size",
        ),
        S.accept("a"),
        S.read_expect("a", b"y" * 1000),
        C.eventually(
            lambda s: (
                s.stream("a").get_value_uint(
                    q.VALUE_CLASS_GENERIC, q.VALUE_STREAM_WRITE_BUF_USED
                )
                == 0
            ),
            "acknowledged",
        ),
    ),
    # -- reading details ------------------------------------------------
    script(
        "peek_and_readinto",
        C.new_stream("a"),
        C.write("a", b"peekaboo", conclude=True),
        S.accept("a"),
        S.eventually(lambda s: s.stream("a").pending() == 8, "arrived"),
        S.check(lambda s: s.stream("a").peek(4) == b"peek", "peek"),
        S.check(lambda s: s.stream("a").peek() == b"peekaboo", "peek all"),
        S.check(_readinto_check, "readinto"),
        S.expect_fin("a"),
    ),
    # -- the default stream, at connection level -------------------------
    script(
        "connection_level_conclude_and_reset_act_on_the_default_stream",
        C.write(None, b"request"),
        C.call(lambda s: s.conn.stream_conclude(), "conn.stream_conclude"),
        C.call(lambda s: s.conn.stream_conclude(), "again: a no-op"),
        C.check(lambda s: s.conn.get_stream_write_state() == OK, "OK until acked"),
        C.raises(lambda s: s.conn.stream_reset(1), q.SSLError, "reset after conclude"),
        S.accept("a"),
        S.read_expect("a", b"request"),
        S.expect_fin("a"),
        S.write("a", b"partial answer"),
        S.reset("a", 31),
        C.expect_reset(None, 31),
        C.check(lambda s: s.conn.get_stream_read_error_code() == 31, "read code"),
        client=ConnConfig(default_mode=AUTO_BIDI),
    ),
    script(
        "connection_get_error_tracks_the_last_call",
        C.write(None, b"x"),
        Only(
            "nonblocking",
            C.raises(_read(None), q.WantReadError, "nothing to read yet"),
        ),
        Only(
            "nonblocking",
            C.check(lambda s: s.conn.get_error() == q.ERROR_WANT_READ, "WANT_READ"),
        ),
        S.accept("a"),
        S.read_expect("a", b"x"),
        S.write("a", b"y", conclude=True),
        C.read_expect(None, b"y"),
        C.check(lambda s: s.conn.get_error() == q.ERROR_NONE, "NONE after success"),
        C.expect_fin(None),
        C.check(lambda s: s.conn.get_error() == q.ERROR_ZERO_RETURN, "ZERO_RETURN"),
        client=ConnConfig(default_mode=AUTO_BIDI),
    ),
    script(
        "a_stream_can_be_nonblocking_on_a_blocking_connection",
        C.new_stream("a"),
        C.call(lambda s: s.stream("a").set_blocking_mode(False), "stream nonblocking"),
        C.check(lambda s: not s.stream("a").get_blocking_mode(), "mode"),
        C.raises(_read("a"), q.WantReadError, "would block"),
        C.check(lambda s: s.stream("a").get_error() == q.ERROR_WANT_READ, "get_error"),
        C.write("a", b"hi", conclude=True),
        S.accept("a"),
        S.read_expect("a", b"hi"),
        S.write("a", b"ho", conclude=True),
        C.read_expect("a", b"ho"),
    ),
    # -- timers: fake clock only ----------------------------------------
    script(
        "idle_timeout_closes_open_streams",
        C.new_stream("a"),
        C.write("a", b"then silence"),
        S.accept("a"),
        S.read_expect("a", b"then silence"),
        C.expect_read_state("a", CONN_CLOSED),
        S.expect_write_state("a", CONN_CLOSED),
        C.raises(_read("a"), q.ConnectionTerminatedError, "read after idle timeout"),
        S.raises(_read("a"), q.ConnectionTerminatedError, "read after idle timeout"),
        C.check(_closed_by_idle_timeout, "local idle close"),
        client_ctx=ContextConfig(idle_timeout=5.0),
        server_ctx=ContextConfig(idle_timeout=5.0),
        modes=("fakeclock",),
    ),
    script(
        "lost_datagrams_are_retransmitted_on_every_stream",
        C.call(lambda s: _drop_some(s, "to_server", 300), "lose client datagrams"),
        S.call(lambda s: _drop_some(s, "to_client", 300), "lose server datagrams"),
        *[C.new_stream(f"c{i}") for i in range(3)],
        *[C.write(f"c{i}", blob(80_000, f"l{i}"), conclude=True) for i in range(3)],
        *[S.accept(f"c{i}", bind_id=4 * i) for i in range(3)],
        *[S.read_expect(f"c{i}", blob(80_000, f"l{i}")) for i in range(3)],
        *[S.write(f"c{i}", blob(40_000, f"m{i}"), conclude=True) for i in range(3)],
        *[C.read_expect(f"c{i}", blob(40_000, f"m{i}")) for i in range(3)],
        *[C.expect_fin(f"c{i}") for i in range(3)],
        modes=("fakeclock",),
    ),
    script(
        "a_blackhole_shorter_than_the_idle_timeout_is_survived",
        C.new_stream("a"),
        C.write("a", b"before"),
        S.accept("a"),
        S.read_expect("a", b"before"),
        *sync("flowing"),
        C.call(lambda s: _blackhole(s, "to_server", True), "blackhole"),
        C.write("a", b"during"),
        C.eventually(lambda s: _fake_time_passed(s, 8.0), "8 s of silence"),
        C.call(lambda s: _blackhole(s, "to_server", False), "restore"),
        S.read_expect("a", b"during"),
        C.write("a", b"after", conclude=True),
        S.read_expect("a", b"after"),
        S.expect_fin("a"),
        modes=("fakeclock",),
    ),
    script(
        "reset_of_a_stream_with_lost_data_is_delivered",
        C.new_stream("a"),
        C.call(lambda s: _drop_some(s, "to_server", 30), "lose some"),
        C.write("a", blob(40_000, "r")),
        C.reset("a", 66),
        S.accept("a"),
        S.expect_reset("a", 66),
        modes=("fakeclock",),
    ),
]


SCRIPT_IDS = [sc.name for sc in SCRIPTS]
assert len(set(SCRIPT_IDS)) == len(SCRIPT_IDS), "duplicate script names"


@pytest.fixture(scope="module")
def pool(pki: CertFiles) -> Iterator[ListenerPool]:
    listeners = ListenerPool(pki)
    yield listeners
    listeners.close()


#: A script that rests on a capability pins one core's behaviour: it runs on
#: every core (skipped, naming the capability, where it is missing); the
#: rest run on the default core (the conformance suite covers the others).
CASES = [
    pytest.param(sc, mode, core, id=f"{mode}-{sc.name}" + (f"-{core}" if core else ""))
    for sc in SCRIPTS
    for mode in sc.modes
    for core in (pinned_cores() if sc.needs else [None])
]


@pytest.mark.parametrize(("sc", "mode", "core"), CASES)
def test_stream_script(
    sc: Script, mode: str, core: str | None, pool: ListenerPool, pki: CertFiles
) -> None:
    require(*sc.needs, core=core)
    if core is None:
        run_script(sc, mode, pool, pki)
    else:
        setup = dataclasses.replace(LEGACY_SETUPS[mode], core=core)
        run_setup(sc, setup, pool, pki, label=f"{mode}/{core}")


def test_there_are_at_least_forty_scripts() -> None:
    assert len(SCRIPTS) >= 40
