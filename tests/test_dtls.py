"""DTLS objects with OpenSSL's DTLS event semantics (DTLSConnection, DTLSListener).

Timer semantics are pinned on a DatagramPair with a FakeClock (exact, no
sleeping); OpenSSL's own wall-clock retransmission is shown on a real-clock
pair; interoperability runs against the system OpenSSL's ``s_server -dtls``
and ``s_client -dtls`` over loopback UDP.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import quicconn
from quicconn.testing import DatagramPair, FakeClock, drop_first
from tests.conftest import free_udp_port, peer_process
from tests.support.certs import CertFiles
from tests.support.pair import make_pair

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


@dataclass
class DtlsEnds:
    """A DTLS client and server joined by a DatagramPair."""

    clock: Any
    pair: DatagramPair
    client: quicconn.DTLSConnection
    server: quicconn.DTLSConnection
    start: float = 0.0

    def try_handshake(self) -> bool:
        """One nonblocking do_handshake() on each side; True when both are done."""
        done = True
        for conn in (self.client, self.server):
            try:
                conn.do_handshake()
            except quicconn.WantReadError:
                done = False
        return done

    def settle(self) -> bool:
        """Repeat try_handshake() while datagrams are still moving (no time passes)."""
        for _ in range(20):
            before = self.pair.to_client.sent + self.pair.to_server.sent
            if self.try_handshake():
                return True
            after = self.pair.to_client.sent + self.pair.to_server.sent
            if after == before and self.pair.in_flight() == 0:
                return False
        raise AssertionError("the handshake kept exchanging datagrams")

    def next_deadline(self) -> float | None:
        timeouts = [
            t
            for t in (self.client.get_event_timeout(), self.server.get_event_timeout())
            if t is not None
        ]
        return min(timeouts) if timeouts else None


def dtls_ends(pki: CertFiles, clock: Any = None) -> DtlsEnds:
    clock = FakeClock() if clock is None else clock
    pair = DatagramPair(clock)
    sctx = quicconn.DTLSContext(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    server = quicconn.DTLSConnection(sctx)
    server.set_transport(pair.server)
    server.set_blocking_mode(False)
    cctx = quicconn.DTLSContext(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    client = quicconn.DTLSConnection(cctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    return DtlsEnds(clock, pair, client, server, clock.now())


def drop_first_flight(clock: Any, start: float) -> Callable[[int, bytes], bool]:
    """Lose everything sent before time moves: the first flight of a link."""
    return lambda _index, _data: clock.now() == start


def established(pki: CertFiles) -> DtlsEnds:
    ends = dtls_ends(pki)
    assert ends.settle()
    return ends


class LineCollector:
    """Collect a peer's output lines in a thread; wait for one to appear."""

    def __init__(self, proc: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: Any) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{text!r} not seen; output was:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(left)


def s_server(pki: CertFiles, port: int) -> Any:
    return peer_process(
        [
            OPENSSL,
            "s_server",
            "-dtls",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(pki.cert),
            "-key",
            str(pki.key),
        ],
        ready_prefix="ACCEPT",
        stdin=True,
    )


def s_client(pki: CertFiles, port: int) -> Any:
    return peer_process(
        [
            OPENSSL,
            "s_client",
            "-dtls",
            "-connect",
            f"127.0.0.1:{port}",
            "-CAfile",
            str(pki.ca),
            "-verify_return_error",
        ],
        stdin=True,
    )


def udp_client(pki: CertFiles, port: int) -> quicconn.DTLSConnection:
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    conn = quicconn.DTLSConnection(ctx)
    conn.set_fd(sock)
    conn._owns_socket = True  # closed with the connection
    conn.set1_host("localhost")
    return conn


@pytest.fixture
def dtls_server_ctx(pki: CertFiles) -> quicconn.DTLSContext:
    ctx = quicconn.DTLSContext(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    return ctx


# ----------------------------------------------------------------------------
# nonblocking handshake: WANT_READ as SSL_do_handshake(3) describes
# ----------------------------------------------------------------------------


def test_nonblocking_handshake_raises_want_read_until_each_flight_arrives(pki):
    ends = dtls_ends(pki)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    assert ends.client.get_error() == quicconn.ERROR_WANT_READ
    assert ends.pair.to_server.sent == 1  # ClientHello, one record, one datagram
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()  # nothing arrived: still WANT_READ, nothing resent
    assert ends.pair.to_server.sent == 1
    with pytest.raises(quicconn.WantReadError):
        ends.server.accept()  # ServerHello .. ServerHelloDone
    assert ends.pair.to_client.sent >= 3
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()  # ClientKeyExchange, CCS, Finished
    ends.server.accept()
    assert ends.server.is_init_finished()
    ends.client.connect()
    assert ends.client.is_init_finished()
    assert ends.client.get_error() == 0
    assert ends.client.get_version() == "DTLSv1.2"
    assert ends.clock.now() == ends.start  # no time was needed


def test_every_record_travels_in_a_datagram_of_its_own_within_the_mtu(pki):
    ends = dtls_ends(pki)
    for conn in (ends.client, ends.server):
        conn.set_mtu(600)
    assert ends.settle()
    for link in (ends.pair.to_client, ends.pair.to_server):
        for _when, size, _lost in link.log:
            assert size <= 600
    # The server's certificate (about 800 bytes) had to be fragmented.
    assert ends.pair.to_client.sent >= 5


def test_handshake_raises_want_write_while_the_socket_refuses_datagrams(pki):
    ends = dtls_ends(pki)
    ends.pair.client.congested = True
    with pytest.raises(quicconn.WantReadError):
        ends.client.do_handshake()  # the ClientHello is queued behind EAGAIN
    assert ends.pair.to_server.sent == 0 and ends.client.net_write_desired()
    with pytest.raises(quicconn.WantWriteError):
        ends.client.do_handshake()
    assert ends.client.get_error() == quicconn.ERROR_WANT_WRITE
    ends.pair.client.congested = False
    with pytest.raises(quicconn.WantReadError):
        ends.client.do_handshake()  # flushed; now waiting for the server
    assert ends.pair.to_server.sent == 1 and not ends.client.net_write_desired()
    assert ends.settle()


def test_set_connect_and_accept_state_choose_the_handshake_role(pki):
    pair = DatagramPair(FakeClock())
    sctx = quicconn.DTLSContext(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)  # verify_mode VERIFY_NONE
    active = quicconn.DTLSConnection(sctx)
    active.set_connect_state()  # SSL_set_connect_state on a server context
    assert not active.is_server()
    active.set_transport(pair.client)
    active.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    active.set_blocking_mode(False)
    passive = quicconn.DTLSConnection(sctx)
    passive.set_accept_state()
    passive.set_transport(pair.server)
    passive.set_blocking_mode(False)
    for _ in range(4):
        for conn in (active, passive):
            with contextlib.suppress(quicconn.WantReadError):
                conn.do_handshake()
    assert active.is_init_finished() and passive.is_init_finished()
    with pytest.raises(ValueError, match="role cannot change"):
        active.set_accept_state()


def test_connect_and_accept_refuse_the_wrong_role(pki):
    ends = dtls_ends(pki)
    with pytest.raises(ValueError, match="accept"):
        ends.client.accept()
    with pytest.raises(ValueError, match="connect"):
        ends.server.connect()


# ----------------------------------------------------------------------------
# the timer: get_event_timeout() / handle_events() = DTLSv1_get/handle_timeout
# ----------------------------------------------------------------------------


def test_event_timeout_is_the_retransmission_timer_and_none_when_unarmed(pki):
    ends = dtls_ends(pki)
    assert ends.client.get_event_timeout() is None  # nothing sent yet
    assert ends.client.DTLSv1_get_timeout() is None
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    assert ends.client.get_event_timeout() == pytest.approx(1.0)  # OpenSSL's 1 s
    assert ends.client.DTLSv1_get_timeout() == pytest.approx(1.0)
    ends.clock.advance(0.25)
    assert ends.client.get_event_timeout() == pytest.approx(0.75)
    assert ends.settle()
    for conn in (ends.client, ends.server):
        assert conn.get_event_timeout() is None  # no flight awaits an answer
        assert conn.DTLSv1_get_timeout() is None
        assert conn.DTLSv1_handle_timeout() == 0


def test_handle_events_retransmits_only_at_the_deadline_and_doubles_the_timer(pki):
    ends = dtls_ends(pki)
    ends.pair.to_server.blackhole = True
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    first = ends.pair.to_server.log[0]
    ends.clock.advance(0.99)
    ends.client.handle_events()
    assert ends.client.DTLSv1_handle_timeout() == 0  # not due yet
    assert ends.pair.to_server.sent == 1
    ends.clock.advance(0.01)
    assert ends.client.get_event_timeout() == 0.0
    assert ends.client.DTLSv1_handle_timeout() == 1
    assert ends.pair.to_server.sent == 2
    assert ends.pair.to_server.log[1][1] == first[1]  # the same ClientHello
    assert ends.client.get_event_timeout() == pytest.approx(2.0)
    ends.client.handle_events()  # not due again: nothing happens
    assert ends.pair.to_server.sent == 2


def test_timer_backs_off_to_sixty_seconds_and_gives_up_after_twelve_expiries(pki):
    ends = dtls_ends(pki)
    ends.pair.to_server.blackhole = True
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    intervals = []
    while (timeout := ends.client.get_event_timeout()) is not None:
        intervals.append(round(timeout, 3))
        ends.clock.advance(timeout)
        ends.client.handle_events()  # never raises
    assert intervals == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60]
    assert ends.pair.to_server.sent == 13  # the first flight + 12 retransmissions
    assert ends.client.DTLSv1_handle_timeout() == 0  # nothing pending any more
    with pytest.raises(quicconn.SSLError, match="timed out"):
        ends.client.connect()
    assert ends.client.get_error() == quicconn.ERROR_SSL
    assert ends.client.state is quicconn.DTLSState.FAILED
    assert not ends.client.net_read_desired()


def test_legacy_handle_timeout_returns_minus_one_when_the_timeout_fails(pki):
    ends = dtls_ends(pki)
    ends.pair.to_server.blackhole = True
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    results = []
    for _ in range(13):
        timeout = ends.client.DTLSv1_get_timeout()
        assert timeout is not None
        ends.clock.advance(timeout)
        results.append(ends.client.DTLSv1_handle_timeout())
    assert results == [1] * 12 + [-1]


# ----------------------------------------------------------------------------
# the seed's rule: DTLS needs handle_events(); QUIC handles events implicitly
# ----------------------------------------------------------------------------


def test_dtls_handshake_with_a_lost_server_flight_never_completes_without_handle_events(
    pki,
):
    ends = dtls_ends(pki)
    ends.pair.to_client.drop = drop_first_flight(ends.clock, ends.start)
    assert not ends.settle()
    lost = ends.pair.to_client.dropped
    assert lost >= 3
    for _ in range(30):  # 30 s of application I/O calls, no handle_events()
        ends.clock.advance(1.0)
        assert not ends.settle()
    assert ends.pair.to_client.sent == lost  # the server never retransmitted
    assert ends.pair.to_server.sent == 1  # nor did the client
    assert ends.server.get_event_timeout() == 0.0  # it says so, and waits
    assert not ends.client.is_init_finished()


def test_dtls_handshake_with_a_lost_server_flight_completes_after_handle_events_at_the_deadline(  # noqa: E501
    pki,
):
    ends = dtls_ends(pki)
    ends.pair.to_client.drop = drop_first_flight(ends.clock, ends.start)
    assert not ends.settle()
    lost = ends.pair.to_client.sent
    deadline = ends.next_deadline()
    assert deadline == pytest.approx(1.0)
    ends.clock.advance(deadline * 0.999)
    ends.server.handle_events()
    ends.client.handle_events()
    assert not ends.settle()  # a moment early: nothing was retransmitted
    assert ends.pair.to_client.sent == lost
    ends.clock.advance(ends.next_deadline())
    ends.server.handle_events()
    ends.client.handle_events()
    assert ends.settle()
    retransmitted = [
        when for when, _size, lost_ in ends.pair.to_client.log if not lost_
    ]
    assert retransmitted[0] - ends.start == pytest.approx(1.0)
    assert ends.client.is_init_finished() and ends.server.is_init_finished()


def test_quic_connection_with_a_lost_server_flight_recovers_through_implicit_event_handling(  # noqa: E501
    pki,
):
    ends = make_pair(pki)  # QUIC client + listener on the same kind of DatagramPair
    start = ends.clock.now()
    ends.pair.to_client.drop = drop_first_flight(ends.clock, start)
    for _ in range(50):
        try:
            ends.client.connect()  # nonblocking: ticks implicitly
            break
        except quicconn.WantReadError:
            pass
        ends.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)  # ticks
        if ends.pair.in_flight() == 0:
            wait = ends.next_deadline()
            assert wait is not None
            ends.clock.advance(wait)
    assert ends.client.is_init_finished()
    assert ends.pair.to_client.dropped >= 1
    assert ends.clock.now() > start  # recovered at a timer, without handle_events()


# ----------------------------------------------------------------------------
# blocking mode and OpenSSL's own (wall-clock) retransmission
# ----------------------------------------------------------------------------


def test_blocking_handshake_retransmits_by_itself_like_a_blocking_bio(pki):
    ends = dtls_ends(pki, clock=quicconn.MonotonicClock())
    ends.pair.to_client.drop = drop_first(1)  # the ServerHello
    ends.client.set_blocking_mode(True)
    ends.server.set_blocking_mode(True)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            ends.server.accept()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    began, cpu0 = time.monotonic(), time.process_time()
    ends.client.connect()
    thread.join(10)
    wall, cpu = time.monotonic() - began, time.process_time() - cpu0
    assert not errors and not thread.is_alive()
    assert ends.server.is_init_finished()
    assert 0.9 < wall < 5  # after OpenSSL's 1 s timer
    assert ends.pair.to_client.dropped == 1
    # Both sides slept in poll(2) through the second of silence.
    assert cpu < 0.2, f"the blocking handshake burned {cpu * 1000:.0f} ms of CPU"


def test_lost_final_server_flight_is_recovered_by_openssls_retransmission(pki):
    """The case a byte-for-byte resend could not recover: the server already
    has the client's Finished and only answers a re-encrypted retransmission."""
    ends = dtls_ends(pki, clock=quicconn.MonotonicClock())
    lost: list[bytes] = []

    def final_flight(_index: int, data: bytes) -> bool:
        # ChangeCipherSpec, or a record of epoch 1 (the server's Finished).
        final = data[:1] == b"\x14" or data[3:5] == b"\x00\x01"
        if final and len(lost) < 2:
            lost.append(data)
            return True
        return False

    ends.pair.to_client.drop = final_flight
    ends.client.set_blocking_mode(True)
    ends.server.set_blocking_mode(True)
    received: list[bytes] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            ends.server.accept()  # done once its last flight is sent
            received.append(ends.server.read())  # answers the retransmission
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    began = time.monotonic()
    ends.client.connect()
    ends.client.write(b"after recovery")
    thread.join(10)
    assert not errors and received == [b"after recovery"]
    assert len(lost) == 2
    assert 0.9 < time.monotonic() - began < 5


def test_on_the_real_clock_only_handle_events_retransmits_and_openssl_does_it(pki):
    ends = dtls_ends(pki, clock=quicconn.MonotonicClock())
    ends.pair.to_server.blackhole = True
    captured: list[bytes] = []
    send = ends.pair.client.send_batch

    def capture(datagrams: Any) -> None:
        captured.extend(d for d, _ in datagrams)
        send(datagrams)

    ends.pair.client.send_batch = capture  # type: ignore[method-assign]
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    timeout = ends.client.get_event_timeout()
    assert timeout is not None and 0.9 < timeout <= 1.0
    with selectors.DefaultSelector() as sel:
        sel.register(ends.client.get_rpoll_descriptor(), selectors.EVENT_READ)
        sel.select(timeout)  # nothing arrives: the wait ends at the deadline
    time.sleep(0.02)  # past OpenSSL's deadline too
    assert ends.client.get_event_timeout() == 0.0
    for _ in range(3):
        # OpenSSL itself would retransmit from inside SSL_do_handshake here.
        with pytest.raises(quicconn.WantReadError):
            ends.client.connect()
    assert len(captured) == 1
    assert ends.client.DTLSv1_handle_timeout() == 1
    assert len(captured) == 2
    # OpenSSL resent the ClientHello in a new record (sequence number 1).
    assert captured[0][13:] == captured[1][13:]
    assert captured[0][5:11] == bytes(6) and captured[1][5:11] == bytes(5) + b"\1"
    assert ends.client.get_event_timeout() == pytest.approx(2.0, abs=0.05)


def test_blocking_server_connections_share_the_listener_socket_across_threads(
    pki, dtls_server_ctx
):
    listener = dtls_server_ctx.new_listener(("127.0.0.1", 0))
    listener.listen()
    port = listener.local_address()[1]
    count = 3
    errors: list[BaseException] = []
    echoed: list[bytes] = []

    def serve() -> None:
        try:
            conn = listener.accept_connection()  # blocking, like its connections
            assert conn is not None
            conn.accept()
            data = conn.read()
            conn.write(data.upper())
            with contextlib.suppress(quicconn.ZeroReturnError):
                conn.read()  # wait for the client's close_notify
            conn.free()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def client(i: int) -> None:
        try:
            conn = udp_client(pki, port)
            conn.connect()
            conn.write(b"thread %d" % i)
            echoed.append(conn.read())
            conn.shutdown()
            conn.free()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    servers = [threading.Thread(target=serve) for _ in range(count)]
    clients = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in servers + clients:
        t.start()
    for t in servers + clients:
        t.join(15)
    listener.free()
    assert not errors
    assert not any(t.is_alive() for t in servers + clients)
    assert sorted(echoed) == [b"THREAD 0", b"THREAD 1", b"THREAD 2"]


# ----------------------------------------------------------------------------
# freeing an object while another thread waits on its socket
# ----------------------------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def block_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[Any]]:
    """Run ``call`` in a thread; its outcome (result or exception) lands in a list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.3)  # long enough to be asleep in poll(2) on the socket
    assert thread.is_alive(), f"the call did not block: {outcome}"
    return thread, outcome


def test_freeing_a_listener_while_another_thread_blocks_in_accept_closes_every_descriptor_and_returns_none(  # noqa: E501
    dtls_server_ctx,
):
    """The last DTLS object on a socket goes while a thread sleeps on it.

    The sleeping thread must be woken (a descriptor closed under poll(2)
    does not wake it) and close the descriptors itself once out of poll, so
    neither thread sees a closed descriptor: nothing raises, nothing leaks.
    """
    before = open_descriptors()
    listener = dtls_server_ctx.new_listener(("127.0.0.1", 0))  # owns its socket
    listener.listen()
    thread, outcome = block_in_thread(listener.accept_connection)
    listener.free()
    thread.join(5)
    assert not thread.is_alive(), "accept_connection() still blocked after free()"
    assert outcome == [None]
    assert open_descriptors() == before


def test_freeing_a_connection_while_another_thread_blocks_in_its_handshake_ends_the_call_and_closes_every_descriptor(  # noqa: E501
    pki,
):
    """A blocking handshake waits for a silent peer, its timer armed (1 s)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        before = open_descriptors()
        conn = udp_client(pki, silent.getsockname()[1])  # owns its socket
        thread, outcome = block_in_thread(conn.connect)
        conn.free()
        thread.join(5)
        assert not thread.is_alive(), "connect() still blocked after free()"
        assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
        assert "freed" in str(outcome[0])
        assert open_descriptors() == before
    finally:
        silent.close()


def test_freeing_a_listener_connection_releases_a_thread_blocked_in_its_read(
    pki, dtls_server_ctx
):
    """The socket stays (the listener still uses it); the blocked read ends."""
    listener = dtls_server_ctx.new_listener(("127.0.0.1", 0))
    listener.listen()
    client = udp_client(pki, listener.local_address()[1])
    connecting = threading.Thread(target=client.connect)
    connecting.start()
    server = listener.accept_connection()
    assert server is not None
    server.accept()
    connecting.join(10)
    try:
        thread, outcome = block_in_thread(server.read)  # the client sends nothing
        server.free()
        thread.join(5)
        assert not thread.is_alive(), "read() still blocked after free()"
        assert len(outcome) == 1 and isinstance(outcome[0], ValueError), outcome
    finally:
        client.free()
        listener.free()


# ----------------------------------------------------------------------------
# data, records, closing, want-write
# ----------------------------------------------------------------------------


def test_records_keep_their_boundaries_both_ways(pki):
    ends = established(pki)
    for i in range(3):
        assert ends.client.write(b"record %d" % i) == 8
    assert [ends.server.read() for _ in range(3)] == [
        b"record 0",
        b"record 1",
        b"record 2",
    ]
    ends.server.write(b"0123456789")
    assert ends.client.read(4) == b"0123"
    assert ends.client.pending() == 6
    buf = bytearray(16)
    assert ends.client.readinto(buf) == 6 and bytes(buf[:6]) == b"456789"
    with pytest.raises(quicconn.WantReadError):
        ends.client.read()  # nonblocking: nothing more
    assert ends.client.get_error() == quicconn.ERROR_WANT_READ


def test_close_notify_is_zero_return_and_shutdown_completes_on_both_sides(pki):
    ends = established(pki)
    assert ends.client.shutdown() is False  # sent; the peer's not yet received
    assert ends.client.state is quicconn.DTLSState.CLOSING
    with pytest.raises(quicconn.ZeroReturnError):
        ends.server.read()
    assert ends.server.get_error() == quicconn.ERROR_ZERO_RETURN
    assert ends.server.shutdown() is True  # the client's had arrived already
    assert ends.client.shutdown() is True
    assert ends.client.state is quicconn.DTLSState.CLOSED
    assert ends.server.state is quicconn.DTLSState.CLOSED


def test_write_raises_want_write_while_the_socket_refuses_datagrams(pki):
    ends = established(pki)
    ends.pair.client.congested = True
    assert ends.client.write(b"queued") == 6  # taken, held behind EAGAIN
    assert ends.client.net_write_desired()
    with pytest.raises(quicconn.WantWriteError):
        ends.client.write(b"more")
    assert ends.client.get_error() == quicconn.ERROR_WANT_WRITE
    ends.pair.client.congested = False
    assert ends.client.write(b"more") == 4
    assert not ends.client.net_write_desired()
    assert [ends.server.read(), ends.server.read()] == [b"queued", b"more"]


def test_write_refuses_empty_and_oversized_records(pki):
    ends = established(pki)
    with pytest.raises(ValueError, match="1 to 16384"):
        ends.client.write(b"")
    with pytest.raises(ValueError, match="1 to 16384"):
        ends.client.write(bytes(16385))
    assert ends.client.get_data_mtu() < 1200


def test_malformed_datagrams_are_ignored_during_and_after_the_handshake(pki):
    ends = dtls_ends(pki)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    garbage = [b"", b"\x16", b"\x16\xfe\xfd" + bytes(200), b"\x17" * 50, bytes(1500)]
    ends.pair.server.send_batch([(g, ends.pair.CLIENT_ADDRESS) for g in garbage])
    ends.client.handle_events()
    assert ends.settle()
    ends.pair.server.send_batch([(g, ends.pair.CLIENT_ADDRESS) for g in garbage])
    ends.server.write(b"still fine")
    assert ends.client.read() == b"still fine"


def test_after_shutdown_writes_are_refused_and_reads_continue_until_close_notify(
    pki,
):
    ends = established(pki)
    assert ends.client.shutdown() is False
    with pytest.raises(quicconn.SSLError, match="after shutdown"):
        ends.client.write(b"late")
    assert ends.client.state is quicconn.DTLSState.CLOSING  # not failed
    ends.server.write(b"half-closed")
    assert ends.client.read() == b"half-closed"
    ends.server.write(b"discarded by the second shutdown() call")
    assert ends.client.shutdown() is False  # nonblocking: not yet
    with pytest.raises(quicconn.ZeroReturnError):
        ends.server.read()
    assert ends.server.shutdown() is True
    with pytest.raises(quicconn.ZeroReturnError):
        ends.client.read()
    assert ends.client.shutdown() is True


def test_alpn_is_negotiated(pki):
    pair = DatagramPair(FakeClock())
    cctx = quicconn.DTLSContext(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(["coap", "webrtc"])
    sctx = quicconn.DTLSContext(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(["webrtc"])
    client = client_for(cctx, pair)
    client.set1_host("localhost")
    server = quicconn.DTLSConnection(sctx)
    server.set_transport(pair.server)
    server.set_blocking_mode(False)
    for _ in range(4):
        for conn in (client, server):
            with contextlib.suppress(quicconn.WantReadError):
                conn.do_handshake()
    assert client.get0_alpn_selected() == server.get0_alpn_selected() == "webrtc"


def test_keys_are_logged_only_when_asked(pki, tmp_path, monkeypatch):
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    quiet = dtls_ends(pki)
    assert quiet.client._ctx.keylog_filename is None
    keylog = tmp_path / "keys.log"
    ends = dtls_ends(pki)
    ends.client._ctx.keylog_filename = str(keylog)
    assert ends.settle()
    lines = keylog.read_text().splitlines()
    assert lines and all(line.startswith("CLIENT_RANDOM ") for line in lines)


def _record(kind: int, epoch: int, body: bytes, extra: int = 0) -> bytes:
    header = bytes([kind, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + bytes(5) + b"\7"
    return header + (len(body) + extra).to_bytes(2, "big") + body


def test_invalid_records_from_the_peer_address_are_dropped_before_openssl(pki):
    """RFC 6347 4.1.2.7: invalid records are discarded, not a handshake failure."""
    ends = dtls_ends(pki)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    junk = [
        _record(99, 0, b"\x01"),  # unknown content type
        _record(23, 0, b"clear application data"),  # never in epoch 0
        _record(20, 0, b"\x01\x02"),  # ChangeCipherSpec is one byte
        _record(21, 0, b"\x02"),  # an alert is two bytes
        _record(22, 0, b"\x02"),  # shorter than a handshake header
        _record(22, 0, bytes(40)) + b"trailing",  # bytes after the last record
        _record(22, 0, bytes(40), extra=10),  # longer than the datagram
        b"\x16\x03\x03" + bytes(40),  # a TLS (not DTLS) version
    ]
    ends.pair.server.send_batch([(j, ends.pair.CLIENT_ADDRESS) for j in junk])
    assert ends.settle()
    assert ends.client.datagrams_malformed == len(junk)
    ends.server.write(b"intact")
    assert ends.client.read() == b"intact"


# ----------------------------------------------------------------------------
# verification (on by default, host names checked)
# ----------------------------------------------------------------------------


def client_for(
    ctx: quicconn.DTLSContext, pair: DatagramPair
) -> quicconn.DTLSConnection:
    conn = quicconn.DTLSConnection(ctx)
    conn.set_transport(pair.client)
    conn.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    conn.set_blocking_mode(False)
    return conn


def run_against_server(
    pki: CertFiles, client: quicconn.DTLSConnection, pair: Any
) -> None:
    sctx = quicconn.DTLSContext(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    server = quicconn.DTLSConnection(sctx)
    server.set_transport(pair.server)
    server.set_blocking_mode(False)
    for _ in range(6):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except quicconn.WantReadError:
                pass
            except quicconn.Error:
                if conn is client:
                    raise


def test_client_verifies_the_certificate_chain_by_default(pki, other_pki):
    pair = DatagramPair(FakeClock())
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    assert ctx.verify_mode == quicconn.VERIFY_PEER
    ctx.load_verify_locations(other_pki.ca)
    client = client_for(ctx, pair)
    client.set1_host("localhost")
    with pytest.raises(quicconn.VerificationError, match="self signed cert in chain"):
        run_against_server(pki, client, pair)
    assert client.get_error() == quicconn.ERROR_SSL
    assert client.state is quicconn.DTLSState.FAILED
    with pytest.raises(quicconn.VerificationError):
        client.connect()  # the failure sticks
    # Like an SSL_CTX, the context may change between connections.
    ctx.load_verify_locations(pki.ca)
    pair = DatagramPair(FakeClock())
    client = client_for(ctx, pair)
    client.set1_host("localhost")
    run_against_server(pki, client, pair)
    assert client.is_init_finished()


def test_client_checks_the_host_name(pki):
    pair = DatagramPair(FakeClock())
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    client = client_for(ctx, pair)
    client.set1_host("example.com")
    with pytest.raises(
        quicconn.VerificationError, match=r"does not match 'example\.com'"
    ):
        run_against_server(pki, client, pair)


def test_client_accepts_an_ip_address_in_the_certificate(pki):
    pair = DatagramPair(FakeClock())
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    client = client_for(ctx, pair)
    client.set1_host("127.0.0.1")
    run_against_server(pki, client, pair)
    assert client.is_init_finished()
    peer = client.get_peer_certificate()
    assert peer is not None and "localhost" in peer.subject.rfc4514_string()


def test_verification_without_trusted_cas_says_how_to_fix_it(pki):
    pair = DatagramPair(FakeClock())
    client = client_for(quicconn.DTLSContext(quicconn.CLIENT), pair)
    client.set1_host("localhost")
    with pytest.raises(quicconn.VerificationError, match="load_verify_locations"):
        run_against_server(pki, client, pair)


def test_verification_needs_a_host_name_unless_turned_off(pki):
    pair = DatagramPair(FakeClock())
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    with pytest.raises(ValueError, match="set1_host"):
        client_for(ctx, pair).connect()
    ctx.verify_mode = quicconn.VERIFY_NONE
    pair = DatagramPair(FakeClock())
    client = client_for(ctx, pair)
    run_against_server(pki, client, pair)
    assert client.is_init_finished()


def test_context_misuse_is_reported_clearly(pki, tmp_path):
    with pytest.raises(TypeError, match="DTLSContext"):
        quicconn.DTLSConnection(quicconn.Context(quicconn.CLIENT))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="DTLSContext"):
        quicconn.Connection(quicconn.DTLSContext(quicconn.CLIENT))  # type: ignore[arg-type]
    ctx = quicconn.DTLSContext(quicconn.SERVER)
    with pytest.raises(FileNotFoundError):
        ctx.load_cert_chain(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="cannot use"):
        ctx.load_cert_chain(pki.cert, pki.ca)  # a certificate is not a key
    with pytest.raises(ValueError, match="no certificate"):
        ctx.new_listener(("127.0.0.1", 0))
    with pytest.raises(ValueError, match="server context"):
        quicconn.DTLSContext(quicconn.CLIENT).new_listener(("127.0.0.1", 0))
    with pytest.raises(ValueError, match="max_datagram_size"):
        ctx.max_datagram_size = 100
    with pytest.raises(ValueError, match="no transport"):
        quicconn.DTLSConnection(quicconn.DTLSContext(quicconn.CLIENT)).connect()


# ----------------------------------------------------------------------------
# handle_events() on any object
# ----------------------------------------------------------------------------


def test_handle_events_on_objects_that_are_neither_quic_nor_dtls_is_a_noop(pki):
    for obj in (object(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "x", None):
        assert quicconn.handle_events(obj) is None
        assert quicconn.get_event_timeout(obj) is None  # infinite
        if isinstance(obj, socket.socket):
            obj.close()


def test_module_level_functions_dispatch_to_dtls_and_quic_objects(pki):
    ends = dtls_ends(pki)
    ends.pair.to_server.blackhole = True
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    assert quicconn.get_event_timeout(ends.client) == pytest.approx(1.0)
    ends.clock.advance(1.0)
    quicconn.handle_events(ends.client)
    assert ends.pair.to_server.sent == 2  # DTLSv1_handle_timeout ran
    quic = make_pair(pki)
    with pytest.raises(quicconn.WantReadError):
        quic.client.connect()
    assert quicconn.get_event_timeout(quic.client) == quic.client.get_event_timeout()
    quicconn.handle_events(quic.listener)  # the QUIC tick answers the Initial
    assert quic.pair.to_client.sent >= 1


# ----------------------------------------------------------------------------
# the listener: cookie exchange, several peers on one socket
# ----------------------------------------------------------------------------


def test_listener_answers_with_a_cookie_and_keeps_no_state_until_it_returns(
    pki, dtls_server_ctx
):
    clock = FakeClock()
    pair = DatagramPair(clock)
    listener = dtls_server_ctx.new_listener(pair.server)
    listener.set_blocking_mode(False)
    listener.listen()
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    client = client_for(ctx, pair)
    client.set1_host("localhost")
    with pytest.raises(quicconn.WantReadError):
        client.connect()
    assert listener.accept_connection() is None  # a HelloVerifyRequest went back
    assert listener.stats.hello_verify_requests_sent == 1
    assert listener.get_accept_connection_queue_len() == 0
    assert listener.get_event_timeout() is None  # stateless: no timer
    with pytest.raises(quicconn.WantReadError):
        client.connect()  # ClientHello again, now with the cookie
    server = listener.accept_connection()
    assert server is not None and server.get_peer_addr() == pair.CLIENT_ADDRESS
    for _ in range(4):
        for conn in (client, server):
            with contextlib.suppress(quicconn.WantReadError):
                conn.do_handshake()
    assert client.is_init_finished() and server.is_init_finished()


def test_listener_handle_events_retransmits_for_its_connections(pki, dtls_server_ctx):
    clock = FakeClock()
    pair = DatagramPair(clock)
    listener = dtls_server_ctx.new_listener(
        pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    listener.set_blocking_mode(False)
    listener.listen()
    ctx = quicconn.DTLSContext(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    client = client_for(ctx, pair)
    client.set1_host("localhost")
    with pytest.raises(quicconn.WantReadError):
        client.connect()
    server = listener.accept_connection()
    assert server is not None and listener.stats.hello_verify_requests_sent == 0
    pair.to_client.blackhole = True
    with pytest.raises(quicconn.WantReadError):
        server.accept()
    sent = pair.to_client.sent
    assert listener.get_event_timeout() == pytest.approx(1.0)
    clock.advance(1.0)
    listener.handle_events()
    assert pair.to_client.sent == 2 * sent  # the whole flight again


def test_listener_ignores_garbage_from_unknown_addresses(dtls_server_ctx):
    pair = DatagramPair(FakeClock())
    listener = dtls_server_ctx.new_listener(pair.server)
    listener.set_blocking_mode(False)
    listener.listen()
    for junk in (b"", b"\x16\xfe\xfd", b"\x16\xfe\xfd" + bytes(300), bytes(2000)):
        pair.client.send_batch([(junk, pair.SERVER_ADDRESS)])
        listener.handle_events()
    assert listener.accept_connection() is None
    assert pair.to_client.sent == 0  # nothing is answered to non-ClientHellos


def test_one_listener_socket_serves_several_quicconn_clients(pki, dtls_server_ctx):
    listener = dtls_server_ctx.new_listener(("127.0.0.1", 0))
    listener.set_blocking_mode(False)
    listener.listen()
    port = listener.local_address()[1]
    clients = [udp_client(pki, port) for _ in range(3)]
    replies: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def run_client(i: int) -> None:
        try:
            conn = clients[i]
            conn.connect()
            conn.write(b"ping %d" % i)
            replies[i] = conn.read()
            conn.shutdown()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run_client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    servers: list[quicconn.DTLSConnection] = []
    answered: set[int] = set()
    deadline = time.monotonic() + 10
    with selectors.DefaultSelector() as sel:
        sel.register(listener.fileno(), selectors.EVENT_READ)
        while len(answered) < 3 and time.monotonic() < deadline:
            timeout = quicconn.get_event_timeout(listener)
            sel.select(0.2 if timeout is None else min(timeout, 0.2))
            listener.handle_events()
            while (conn := listener.accept_connection()) is not None:
                servers.append(conn)
            for idx, conn in enumerate(servers):
                try:
                    conn.accept()
                    if idx not in answered:
                        data = conn.read()
                        conn.write(b"pong " + data)
                        answered.add(idx)
                except quicconn.WantReadError:
                    pass
    for t in threads:
        t.join(10)
    assert not errors
    assert sorted(replies.values()) == [b"pong ping 0", b"pong ping 1", b"pong ping 2"]
    assert listener.stats.hello_verify_requests_sent == 3
    assert len({s.get_peer_addr() for s in servers}) == 3
    for conn in clients + servers:
        conn.free()
    listener.free()


# ----------------------------------------------------------------------------
# interoperability with OpenSSL's s_server / s_client (system OpenSSL 3.0)
# ----------------------------------------------------------------------------


def test_client_against_openssl_s_server(pki):
    port = free_udp_port()
    with s_server(pki, port) as (proc, _):
        out = LineCollector(proc)
        conn = udp_client(pki, port)
        try:
            conn.connect()
            assert conn.get_version() == "DTLSv1.2"
            conn.write(b"hello from quicconn\n")
            out.wait_for("hello from quicconn")
            proc.stdin.write("hello from s_server\n")
            proc.stdin.flush()
            assert conn.read() == b"hello from s_server\n"
            out.wait_for(f"CIPHER is {conn.get_cipher_name()}")
            assert conn.shutdown() is False  # close_notify sent
            out.wait_for("DONE")  # s_server saw it
        finally:
            conn.free()


def test_nonblocking_client_against_openssl_s_server_in_an_event_loop(pki):
    port = free_udp_port()
    with s_server(pki, port) as (proc, _):
        out = LineCollector(proc)
        conn = udp_client(pki, port)
        conn.set_blocking_mode(False)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(conn.get_rpoll_descriptor(), selectors.EVENT_READ)
                while True:
                    try:
                        conn.connect()
                        break
                    except quicconn.WantReadError:
                        sel.select(conn.get_event_timeout())
                        conn.handle_events()
                conn.write(b"nonblocking hello\n")
                out.wait_for("nonblocking hello")
        finally:
            conn.free()


@pytest.fixture
def dtls_listener(
    dtls_server_ctx: quicconn.DTLSContext,
) -> Iterator[quicconn.DTLSListener]:
    listener = dtls_server_ctx.new_listener(("127.0.0.1", 0))
    listener.listen()
    yield listener
    listener.free()


def test_listener_serves_two_openssl_s_clients_at_once(pki, dtls_listener):
    port = dtls_listener.local_address()[1]
    with s_client(pki, port) as (proc_a, _), s_client(pki, port) as (proc_b, _):
        outs = [LineCollector(proc_a), LineCollector(proc_b)]
        conns = [dtls_listener.accept_connection() for _ in range(2)]
        for conn in conns:
            assert conn is not None
            conn.accept()
        for out in outs:
            out.wait_for("Verify return code: 0 (ok)")
        for i, proc in enumerate((proc_a, proc_b)):
            proc.stdin.write(f"hello from s_client {i}\n")
            proc.stdin.flush()
        got = set()
        for conn in conns:
            assert conn is not None
            data = conn.read()
            got.add(data)
            conn.write(b"echo " + data)
        assert got == {b"hello from s_client 0\n", b"hello from s_client 1\n"}
        outs[0].wait_for("echo hello from s_client 0")
        outs[1].wait_for("echo hello from s_client 1")
        assert dtls_listener.stats.hello_verify_requests_sent == 2
        for conn in conns:
            assert conn is not None
            conn.free()


def test_single_peer_server_connection_against_openssl_s_client(pki, dtls_server_ctx):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = quicconn.DTLSConnection(dtls_server_ctx)
    server.set_fd(sock)
    try:
        with s_client(pki, sock.getsockname()[1]) as (proc, _):
            out = LineCollector(proc)
            server.accept()  # learns its peer from the first datagram
            out.wait_for("Verify return code: 0 (ok)")
            proc.stdin.write("over one socket\n")
            proc.stdin.flush()
            assert server.read() == b"over one socket\n"
            server.write(b"back at you\n")
            out.wait_for("back at you")
    finally:
        server.free()
        sock.close()
