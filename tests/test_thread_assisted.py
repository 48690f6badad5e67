"""Thread-assisted mode (OSSL_QUIC_client_thread_method, THREAD_ASSISTED
domains) and keep-alive PINGs.

The thread tests run in real time over loopback UDP (an assist thread on a
FakeClock would move the test's clock by itself, which quicconn refuses);
the keep-alive rule itself is shown on a FakeClock pair, exactly.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest

import quicconn
from quicconn._core.rules import keep_alive_interval
from quicconn._objects.connection import channel_of
from quicconn._objects.surface import events_reactor
from quicconn._quic.assist import assist_of
from tests.support.certs import CertFiles
from tests.support.pair import make_pair

ALPN = ["quicconn-test"]


def client(
    pki: CertFiles, port: int, role: int, idle: float = 30.0
) -> quicconn.Connection:
    ctx = quicconn.Context(role)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    ctx.idle_timeout = idle
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock.fileno())  # a duplicate, owned by the connection
    sock.close()
    conn.set1_host("localhost")
    return conn


def thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.parametrize("role", [quicconn.CLIENT_THREAD, quicconn.CLIENT])
def test_the_assist_thread_processes_data_and_keeps_the_connection_alive(
    pki: CertFiles, aioquic_server: int, role: int
) -> None:
    """The application makes no call for 3 s; the peer (aioquic's server)
    sends data 0.5 s in; the idle timeout is 1 s.  Thread-assisted, poll()
    without handling events reports the stream readable and the connection
    is alive; without the assist thread, nothing was processed meanwhile,
    and the next call handles what waited in the socket before the timers
    that expired meanwhile (OpenSSL's tick order: queued packets, then
    timers), so the data is read."""
    conn = client(pki, aioquic_server, role, idle=1.0)
    try:
        conn.connect()
        stream = conn.new_stream()
        stream.write(b"after 0.5 send 1000\n")
        time.sleep(3.0)  # no call at all
        revents = quicconn.poll(
            [(stream, quicconn.POLL_EVENT_R), (conn, quicconn.POLL_EVENT_EC)],
            timeout=0,
            flags=quicconn.POLL_FLAG_NO_HANDLE_EVENTS,
        )
        if role == quicconn.CLIENT_THREAD:
            assert revents == [quicconn.POLL_EVENT_R, 0]
            assert conn.get_conn_close_info() is None
            assert len(stream.read()) == 1000
            stream.write(b"still here")
            assert conn.get_conn_close_info() is None
        else:
            assert revents == [0, 0], "nothing should have processed the data"
            assert len(stream.read()) == 1000
    finally:
        conn.free()


def test_an_idle_assist_thread_uses_under_50_ms_of_cpu_in_2_s(
    pki: CertFiles, aioquic_server: int
) -> None:
    conn = client(pki, aioquic_server, quicconn.CLIENT_THREAD)
    try:
        conn.connect()
        assist = assist_of(events_reactor(conn))
        assert assist is not None and assist.thread.is_alive()
        time.sleep(0.2)  # the handshake's last ACKs and timers settle
        before = thread_cpu(assist.thread)
        ticks = assist.ticks
        time.sleep(2.0)
        cpu = thread_cpu(assist.thread) - before
        assert cpu < 0.05, f"the assist thread used {cpu * 1000:.1f} ms of CPU"
        assert assist.ticks - ticks < 20, "it woke up without cause"
    finally:
        conn.free()
    assist.thread.join(2.0)
    assert not assist.thread.is_alive(), "freeing the connection ends the thread"


def test_blocking_calls_from_several_threads_share_the_socket_with_it(
    pki: CertFiles, aioquic_server: int
) -> None:
    """Every public call is thread-safe: four threads, each with a stream
    on one thread-assisted connection, echo through aioquic's server."""
    conn = client(pki, aioquic_server, quicconn.CLIENT_THREAD)
    errors: list[BaseException] = []
    try:
        conn.connect()

        def worker(i: int) -> None:
            try:
                stream = conn.new_stream()
                payload = bytes([i]) * 200_000
                stream.write(b"echo\n")
                stream.write_ex2(payload, quicconn.WRITE_FLAG_CONCLUDE)
                got = bytearray()
                while True:
                    try:
                        got += stream.read()
                    except quicconn.ZeroReturnError:
                        break
                assert got == payload
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
    finally:
        conn.free()


def test_a_thread_assisted_domain_serves_its_listener_without_calls(
    pki: CertFiles,
) -> None:
    """Server side through a domain: handshakes complete and data is
    acknowledged while the server application only waits for the queue."""
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(ALPN)
    domain = sctx.new_domain(quicconn.DOMAIN_FLAG_THREAD_ASSISTED)
    listener = domain.new_listener_from(("127.0.0.1", 0))
    listener.listen()
    assert listener.get0_domain() is domain
    assert listener.get_domain_flags() & quicconn.DOMAIN_FLAG_THREAD_ASSISTED
    port = listener.local_address()[1]
    conn = client(pki, port, quicconn.CLIENT)
    try:
        conn.connect()  # the server application has made no call since listen()
        stream = conn.new_stream()
        stream.write_ex2(b"x" * 100_000, quicconn.WRITE_FLAG_CONCLUDE)
        # Wait until the server acknowledged every byte: only its assist
        # thread can, the server application makes no call.
        used = quicconn.VALUE_STREAM_WRITE_BUF_USED
        deadline = time.monotonic() + 10
        while stream.get_value_uint(quicconn.VALUE_CLASS_GENERIC, used):
            assert time.monotonic() < deadline, "the server acknowledged nothing"
            quicconn.poll([(conn, quicconn.POLL_EVENT_EC)], timeout=0.05)
        assert listener.get_accept_connection_queue_len() == 1
        server = listener.accept_connection()
        assert server is not None and server.get0_domain() is domain
        server.accept()
        sstream = server.accept_stream()
        assert sstream is not None
        assert sstream.pending() == 100_000, "received without a server call"
        server.free()
    finally:
        conn.free()
        listener.free()
        domain.free()


def test_thread_assisted_mode_refuses_a_fake_clock(pki: CertFiles) -> None:
    ends = make_pair(pki)
    ctx = quicconn.Context(quicconn.CLIENT_THREAD)
    conn = quicconn.Connection(ctx)
    with pytest.raises(ValueError, match="real clock"):
        conn.set_transport(ends.pair.client)


# -- keep-alive, on a fake clock --------------------------------------------------


@pytest.mark.usefixtures("each_core")  # each core schedules its own PINGs
def test_keep_alive_pings_hold_an_idle_connection_open(pki: CertFiles) -> None:
    """With keep-alive on, a connection both ends keep ticking outlives many
    idle timeouts; a PING goes out after every half idle timeout of
    silence (OpenSSL's ping deadline)."""
    ends = make_pair(pki, client_idle_ms=2000)
    channel_of(ends.client).settings.keep_alive = True  # before the handshake
    ends.handshake()
    established = ends.clock.now()
    sent: list[float] = []
    while ends.clock.now() - established < 20.0:
        before = ends.pair.to_server.sent
        ends.step()
        if ends.pair.to_server.sent > before:
            sent.append(ends.clock.now() - established)
    assert ends.client.get_conn_close_info() is None
    interval = keep_alive_interval(2.0)
    assert interval == 1.0
    # After the handshake settled, the client sends exactly at the
    # keep-alive deadlines: one PING per interval of silence.
    late = [t for t in sent if t > 3.0]
    gaps = [b - a for a, b in itertools.pairwise(late)]
    assert gaps and all(g == pytest.approx(interval, abs=0.01) for g in gaps), gaps


@pytest.mark.usefixtures("each_core")
def test_without_keep_alive_the_idle_timeout_closes_it(pki: CertFiles) -> None:
    ends = make_pair(pki, client_idle_ms=2000)
    ends.handshake()
    established = ends.clock.now()
    while ends.client.get_conn_close_info() is None:
        ends.step()
        assert ends.clock.now() - established < 10
    info = ends.client.get_conn_close_info()
    assert info is not None
    assert info.error_code == quicconn.QUIC_LOCAL_ERR_IDLE_TIMEOUT


def test_keep_alive_interval_follows_openssl() -> None:
    assert keep_alive_interval(None) is None
    assert keep_alive_interval(0.0) is None
    assert keep_alive_interval(2.0) == 1.0
    assert keep_alive_interval(30.0) == 15.0
    assert keep_alive_interval(120.0) == 25.0  # NATs: at most 25 s of silence
