"""quicconn.poll(): SSL_poll's events over connections, streams and listeners.

Real UDP on loopback (a poll-driven echo server, clients on their own
sockets), plus a FakeClock pair where a timer decides the outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import quicconn as q
from quicconn.testing import DatagramPair
from tests.support.certs import CertFiles
from tests.support.stream_scripts import (
    ContextConfig,
    client_context,
    server_context,
)

R, W, ER, EW = q.POLL_EVENT_R, q.POLL_EVENT_W, q.POLL_EVENT_ER, q.POLL_EVENT_EW
EC, ECD, F = q.POLL_EVENT_EC, q.POLL_EVENT_ECD, q.POLL_EVENT_F
ISB, ISU, OSB, OSU, IC = (
    q.POLL_EVENT_ISB,
    q.POLL_EVENT_ISU,
    q.POLL_EVENT_OSB,
    q.POLL_EVENT_OSU,
    q.POLL_EVENT_IC,
)


def payload(conn_index: int, stream_index: int, size: int) -> bytes:
    seed = f"{conn_index}/{stream_index}".encode()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:size])


# ----------------------------------------------------------------------
# fixtures: a listener and handshaken nonblocking pairs
# ----------------------------------------------------------------------


@dataclass
class Pair:
    client: q.Connection
    server: q.Connection
    listener: q.Listener
    sock: socket.socket


def _handshake(listener: q.Listener, pki: CertFiles, cfg: ContextConfig) -> Pair:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = q.Connection(client_context(pki, cfg))
    client.set_fd(sock)
    client.set1_initial_peer_addr(listener.local_address())
    client.set1_host("127.0.0.1")
    client.set_blocking_mode(False)
    client.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    server = None
    deadline = time.monotonic() + 10
    client_done = server_done = False
    while not (client_done and server_done):
        assert time.monotonic() < deadline
        if not client_done:
            try:
                client.connect()
                client_done = True
            except q.WantReadError:
                pass
        if server is None:
            server = listener.accept_connection(q.ACCEPT_CONNECTION_NO_BLOCK)
            if server is not None:
                server.set_blocking_mode(False)
                server.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
        if server is not None and not server_done:
            try:
                server.accept()
                server_done = True
            except q.WantReadError:
                pass
        q.poll([(client, 0), (listener, 0)], timeout=0.005)
    assert server is not None
    return Pair(client, server, listener, sock)


@pytest.fixture
def listener(pki: CertFiles) -> Iterator[q.Listener]:
    ctx = server_context(pki, ContextConfig(max_streams_bidi=2, max_streams_uni=1))
    lis = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    lis.set_blocking_mode(False)
    lis.listen()
    yield lis
    lis.free()


@pytest.fixture
def pair(listener: q.Listener, pki: CertFiles) -> Iterator[Pair]:
    p = _handshake(listener, pki, ContextConfig())
    yield p
    p.client.free()
    p.server.free()
    p.sock.close()


def wait_for(
    items: list[q.PollItem], want: int, index: int = 0, limit: float = 5.0
) -> int:
    """Blocking poll until item ``index`` reports one of ``want``."""
    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {want:#x} on item {index} within {limit} s"
        revents = q.poll(items, timeout=left)
        if revents[index] & want:
            return revents[index]


# ----------------------------------------------------------------------
# the big one: 50 connections x 4 streams, served by poll() alone
# ----------------------------------------------------------------------


@dataclass
class _ServedStream:
    stream: q.Stream
    received: bytearray = field(default_factory=bytearray)
    reply: memoryview | None = None
    sent: int = 0


def _serve_with_poll(
    listener: q.Listener,
    expect_streams: int,
    stop: threading.Event,
    stats: dict[str, int],
) -> None:
    """An echo server driven only by nonblocking calls after poll() says so."""
    conns: list[q.Connection] = []
    streams: list[_ServedStream] = []
    finished = 0
    while finished < expect_streams and not stop.is_set():
        items: list[q.PollItem] = [(listener, IC)]
        items += [(c, ISB | ISU | EC) for c in conns]
        for st in streams:
            events = ER | EW
            if st.reply is None:
                events |= R
            elif st.sent < len(st.reply):
                events |= W
            items.append((st.stream, events))
        revents = q.poll(items, timeout=5.0)
        stats["polls"] += 1
        assert any(revents), "the server's poll() timed out with work pending"
        if revents[0] & IC:
            conn = listener.accept_connection(q.ACCEPT_CONNECTION_NO_BLOCK)
            assert conn is not None, "IC reported but no connection queued"
            conn.set_blocking_mode(False)
            conn.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_ACCEPT)
            conns.append(conn)
        for conn, rev in zip(conns, revents[1 : 1 + len(conns)], strict=False):
            assert not rev & EC, f"connection failed: {conn.get_conn_close_info()}"
            if rev & ISB:
                stream = conn.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
                assert stream is not None, "ISB reported but no stream queued"
                streams.append(_ServedStream(stream))
        base = 1 + len(conns)
        for st, rev in zip(streams, revents[base:], strict=False):
            assert not rev & (ER | EW | F), f"stream failure {rev:#x}"
            if rev & R:
                try:
                    while True:
                        st.received += st.stream.read(65536)
                except q.WantReadError:
                    pass
                except q.ZeroReturnError:
                    st.reply = memoryview(bytes(st.received))
            if rev & W and st.reply is not None:
                try:
                    st.sent += st.stream.write_ex2(
                        st.reply[st.sent :], q.WRITE_FLAG_CONCLUDE
                    )
                except q.WantWriteError:
                    stats["want_write"] += 1
                if st.sent == len(st.reply):
                    finished += 1
        stats["streams_done"] = finished
    # Keep the connections going until the clients have read everything.
    while not stop.is_set():
        q.poll([(c, EC) for c in conns] + [(listener, 0)], timeout=0.05)
    for st in streams:
        st.stream.free()
    for conn in conns:
        conn.free()


def test_fifty_connections_with_four_streams_each_served_by_poll_alone(
    pki: CertFiles,
) -> None:
    n_conns, n_streams, size = 50, 4, 16_000
    ctx = server_context(pki, ContextConfig())
    listener = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    listener.set_blocking_mode(False)
    listener.listen()
    stop = threading.Event()
    stats = {"polls": 0, "want_write": 0, "streams_done": 0}
    errors: list[BaseException] = []

    def server() -> None:
        try:
            _serve_with_poll(listener, n_conns * n_streams, stop, stats)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=server, name="poll-server")
    thread.start()
    socks: list[socket.socket] = []
    clients: list[q.Connection] = []
    try:
        cctx = client_context(pki, ContextConfig())
        for _ in range(n_conns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            conn = q.Connection(cctx)
            conn.set_fd(sock)
            conn.set1_initial_peer_addr(listener.local_address())
            conn.set1_host("127.0.0.1")
            conn.set_blocking_mode(False)
            conn.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
            socks.append(sock)
            clients.append(conn)
        _drive_clients(clients, n_streams, size)
    finally:
        stop.set()
        thread.join(30)
        for conn in clients:
            conn.free()
        for sock in socks:
            sock.close()
        listener.free()
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    assert stats["streams_done"] == n_conns * n_streams


def _drive_clients(clients: list[q.Connection], n_streams: int, size: int) -> None:
    """All clients from this one thread, also with poll() over 50 sockets."""
    connected = [False] * len(clients)
    streams: dict[tuple[int, int], q.Stream] = {}
    replies: dict[tuple[int, int], bytearray] = {}
    written: dict[tuple[int, int], int] = {}
    done: set[tuple[int, int]] = set()
    deadline = time.monotonic() + 60
    while len(done) < len(clients) * n_streams:
        assert time.monotonic() < deadline, f"only {len(done)} streams done"
        for i, conn in enumerate(clients):
            if connected[i]:
                continue
            try:
                conn.connect()
            except q.WantReadError:
                continue
            connected[i] = True
            for j in range(n_streams):
                streams[i, j] = conn.new_stream(q.STREAM_FLAG_NO_BLOCK)
                replies[i, j] = bytearray()
                written[i, j] = 0
        items: list[q.PollItem] = [(c, EC) for c in clients]
        keys = list(streams)
        for key in keys:
            events = R | ER | EW
            if written[key] < size:
                events |= W
            items.append((streams[key], events))
        revents = q.poll(items, timeout=5.0)
        for conn, rev in zip(clients, revents, strict=False):
            assert not rev & EC, (
                f"client connection failed: {conn.get_conn_close_info()}"
            )
        for key, rev in zip(keys, revents[len(clients) :], strict=True):
            assert not rev & (ER | EW), f"stream {key} failed: {rev:#x}"
            stream = streams[key]
            if rev & W and written[key] < size:
                data = payload(key[0], key[1], size)
                with contextlib.suppress(q.WantWriteError):
                    written[key] += stream.write_ex2(
                        data[written[key] :], q.WRITE_FLAG_CONCLUDE
                    )
            if rev & R:
                try:
                    while True:
                        replies[key] += stream.read(65536)
                except q.WantReadError:
                    pass
                except q.ZeroReturnError:
                    assert bytes(replies[key]) == payload(key[0], key[1], size), (
                        f"stream {key}: echo differs"
                    )
                    done.add(key)
                    stream.free()
                    del streams[key]


# ----------------------------------------------------------------------
# no busy waiting
# ----------------------------------------------------------------------


def test_idle_blocking_poll_sleeps_without_spinning(pair: Pair) -> None:
    stream = pair.client.new_stream()
    stream.write(b"x")
    items: list[q.PollItem] = [(pair.client, EC | ISB | ISU), (stream, R | ER)]
    q.poll(items, timeout=0.2)  # let the handshake's stragglers settle
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    start = time.monotonic()
    revents = q.poll(items, timeout=2.0)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    assert revents == [0, 0], "nothing should be ready: the timeout must expire"
    assert 1.95 <= elapsed < 3.0
    assert cpu < 0.05, f"an idle 2 s poll used {cpu * 1000:.1f} ms of CPU"


def test_idle_poll_over_two_sockets_sleeps_without_spinning(
    listener: q.Listener, pki: CertFiles
) -> None:
    one = _handshake(listener, pki, ContextConfig())
    two = _handshake(listener, pki, ContextConfig())
    try:
        items: list[q.PollItem] = [(one.client, EC), (two.client, EC), (listener, IC)]
        q.poll(items, timeout=0.2)
        usage = resource.getrusage(resource.RUSAGE_THREAD)
        revents = q.poll(items, timeout=2.0)
        after = resource.getrusage(resource.RUSAGE_THREAD)
        cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        assert revents == [0, 0, 0]
        assert cpu < 0.05, f"{cpu * 1000:.1f} ms of CPU"
    finally:
        for p in (one, two):
            p.client.free()
            p.server.free()
            p.sock.close()


# ----------------------------------------------------------------------
# event semantics
# ----------------------------------------------------------------------


def test_nonblocking_poll_with_nothing_ready_returns_zeros(pair: Pair) -> None:
    stream = pair.client.new_stream()
    assert q.poll([(stream, R | ER), (pair.client, ISB | ISU | EC)], timeout=0) == [
        0,
        0,
    ]
    assert q.poll([], timeout=0) == []
    assert q.poll([(None, R)], timeout=0) == [0]


def test_readable_is_level_triggered_until_data_is_consumed(pair: Pair) -> None:
    out = pair.client.new_stream()
    out.write(b"0123456789")
    srv_items: list[q.PollItem] = [(pair.server, ISB)]
    wait_for(srv_items, ISB)
    got = pair.server.accept_stream()
    assert got is not None
    items: list[q.PollItem] = [(got, R), (pair.client, 0)]
    assert wait_for(items, R) & R
    assert q.poll(items, timeout=0)[0] & R, "still readable: nothing was read"
    assert got.read(4) == b"0123"
    assert q.poll(items, timeout=0)[0] & R, "still readable: 6 bytes left"
    assert got.read() == b"456789"
    assert not q.poll(items, timeout=0)[0] & R
    out.stream_conclude()
    assert wait_for(items, R) & R, "a FIN to report makes the stream readable"
    with pytest.raises(q.ZeroReturnError):
        got.read()
    assert q.poll(items, timeout=0)[0] & R, "R stays: a read returns at once"


def test_only_requested_events_are_reported_except_failure(pair: Pair) -> None:
    stream = pair.client.new_stream()
    assert q.poll([(stream, W)], timeout=0) == [W]
    assert q.poll([(stream, R)], timeout=0) == [0]
    assert q.poll([(pair.client, OSB)], timeout=0) == [OSB]
    stream.free()
    assert q.poll([(stream, R)], timeout=0) == [F], "F is not maskable"


def test_freed_objects_report_failure_and_do_not_block(
    listener: q.Listener, pki: CertFiles
) -> None:
    p = _handshake(listener, pki, ContextConfig())
    stream = p.client.new_stream()
    p.client.free()
    p.sock.close()
    start = time.monotonic()
    assert q.poll([(stream, R), (p.client, EC), (None, R)], timeout=None) == [F, F, 0]
    assert time.monotonic() - start < 0.5
    p.server.free()


def test_freed_listener_reports_failure(pki: CertFiles) -> None:
    ctx = server_context(pki, ContextConfig())
    lis = ctx.new_listener(("127.0.0.1", 0))
    lis.free()
    assert q.poll([(lis, IC)], timeout=None) == [F]


def test_incoming_stream_events_by_kind(pair: Pair) -> None:
    items: list[q.PollItem] = [(pair.server, ISB | ISU)]
    uni = pair.client.new_stream(q.STREAM_FLAG_UNI)
    uni.write(b"u")
    assert wait_for(items, ISU) == ISU
    bidi = pair.client.new_stream()
    bidi.write(b"b")
    assert wait_for(items, ISB) == ISB | ISU
    assert pair.server.accept_stream(q.ACCEPT_STREAM_UNI) is not None
    assert q.poll(items, timeout=0) == [ISB]
    assert pair.server.accept_stream() is not None
    assert q.poll(items, timeout=0) == [0]


def test_outgoing_stream_events_follow_max_streams(pair: Pair) -> None:
    # The listener's context allows 2 bidi streams and 1 uni stream.
    items: list[q.PollItem] = [(pair.client, OSB | OSU)]
    assert q.poll(items, timeout=0) == [OSB | OSU]
    first = pair.client.new_stream()
    second = pair.client.new_stream()
    uni = pair.client.new_stream(q.STREAM_FLAG_UNI)
    assert q.poll(items, timeout=0) == [0]
    with pytest.raises(q.StreamCountLimitedError):
        pair.client.new_stream()
    for stream in (first, second):
        stream.write_ex2(b"done", q.WRITE_FLAG_CONCLUDE)
    srv_items: list[q.PollItem] = [(pair.server, ISB)]
    for _ in range(2):
        wait_for(srv_items, ISB)
        got = pair.server.accept_stream(q.ACCEPT_STREAM_BIDI)
        assert got is not None
        wait_for([(got, R)], R)
        assert got.read() == b"done"
        got.write_ex2(b"", q.WRITE_FLAG_CONCLUDE)
        got.free()
    assert wait_for([(pair.client, OSB | OSU), (pair.server, 0)], OSB) == OSB
    uni.free()


def test_writable_and_write_exception_events(pair: Pair) -> None:
    stream = pair.client.new_stream()
    assert q.poll([(stream, W | EW)], timeout=0) == [W]
    stream.write(b"hello")
    wait_for([(pair.server, ISB)], ISB)
    got = pair.server.accept_stream()
    assert got is not None
    got.free()  # STOP_SENDING
    assert wait_for([(stream, W | EW), (pair.server, 0)], EW) == EW
    assert q.poll([(stream, W | EW)], timeout=0) == [EW], "level-triggered"
    with pytest.raises(q.StreamResetError):
        stream.stream_reset(1)  # the stack already reset it (RFC 9000 3.5)
    other = pair.client.new_stream()
    other.stream_reset(1)
    assert q.poll([(other, W | EW)], timeout=0) == [0], "neither W nor EW after reset"


def test_write_event_clears_when_the_peer_window_is_used(
    listener: q.Listener, pki: CertFiles
) -> None:
    p = _handshake(listener, pki, ContextConfig())
    try:
        stream = p.client.new_stream()
        stream.set_mode(q.MODE_ENABLE_PARTIAL_WRITE)
        # The peer grants 1 MiB per stream; fill it without the peer reading.
        sent = 0
        while q.poll([(stream, W)], timeout=0) == [W]:
            sent += stream.write(b"\0" * 65536)
        assert sent == 1024 * 1024
        with pytest.raises(q.WantWriteError):
            stream.write(b"more")
        wait_for([(p.server, ISB), (p.client, 0)], ISB)
        got = p.server.accept_stream()
        assert got is not None
        total = 0
        while total < 600_000:
            wait_for([(got, R), (p.client, 0)], R)
            total += len(got.read())
        assert wait_for([(stream, W), (p.server, 0)], W) == W, "credit came back"
    finally:
        p.client.free()
        p.server.free()
        p.sock.close()


def test_reset_raises_read_exception_not_readable(pair: Pair) -> None:
    stream = pair.client.new_stream()
    stream.write(b"will be reset")
    wait_for([(pair.server, ISB)], ISB)
    got = pair.server.accept_stream()
    assert got is not None
    stream.stream_reset(9)
    assert wait_for([(got, R | ER), (pair.client, 0)], ER) == ER


def test_connection_close_raises_ec_then_ecd(pair: Pair) -> None:
    stream = pair.client.new_stream()
    stream.write(b"x")
    wait_for([(pair.server, ISB)], ISB)
    got = pair.server.accept_stream()
    assert got is not None
    pair.client.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK | q.SHUTDOWN_FLAG_NO_STREAM_FLUSH)
    items: list[q.PollItem] = [(pair.server, EC | ECD), (got, R | ER | W | EW)]
    assert wait_for(items, EC) & EC
    revents = q.poll(items, timeout=0)
    assert revents[1] & R, "the unread byte is still readable"
    assert revents[1] & EW, "the send part failed with the connection"
    assert got.read() == b"x"
    assert q.poll(items, timeout=0)[1] & ER, "nothing left: the read side failed too"
    assert wait_for(items, ECD) & ECD, "the draining period ends"


def test_listener_reports_incoming_connections(
    listener: q.Listener, pki: CertFiles
) -> None:
    assert q.poll([(listener, IC)], timeout=0) == [0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = q.Connection(client_context(pki, ContextConfig()))
    client.set_fd(sock)
    client.set1_initial_peer_addr(listener.local_address())
    client.set1_host("127.0.0.1")
    client.set_blocking_mode(False)
    try:
        with pytest.raises(q.WantReadError):
            client.connect()
        assert wait_for([(listener, IC), (client, 0)], IC) == IC
        conn = listener.accept_connection(q.ACCEPT_CONNECTION_NO_BLOCK)
        assert conn is not None
        assert q.poll([(listener, IC)], timeout=0) == [0]
        conn.free()
    finally:
        client.free()
        sock.close()


def test_unstarted_connection_reports_only_writable(pki: CertFiles) -> None:
    conn = q.Connection(client_context(pki, ContextConfig()))
    assert q.poll([(conn, W | R | EC | OSB)], timeout=0) == [W]


def test_no_handle_events_reports_only_what_is_known(pair: Pair) -> None:
    stream = pair.client.new_stream()
    stream.write(b"ping")
    wait_for([(pair.server, ISB)], ISB)
    got = pair.server.accept_stream()
    assert got is not None
    wait_for([(got, R)], R)
    got.read()
    got.write(b"pong")
    time.sleep(0.05)  # the datagram is in the client's socket, unprocessed
    flags = q.POLL_FLAG_NO_HANDLE_EVENTS
    assert q.poll([(stream, R)], timeout=0, flags=flags) == [0]
    assert q.poll([(stream, R)], timeout=0) == [R]
    assert stream.read() == b"pong"


def test_blocking_poll_with_no_handle_events_still_handles_them_when_waiting(
    pair: Pair,
) -> None:
    stream = pair.client.new_stream()
    stream.write(b"ping")
    wait_for([(pair.server, ISB)], ISB)
    got = pair.server.accept_stream()
    assert got is not None
    wait_for([(got, R)], R)
    got.read()
    got.write(b"pong")
    revents = q.poll([(stream, R)], timeout=2.0, flags=q.POLL_FLAG_NO_HANDLE_EVENTS)
    assert revents == [R]


def test_blocking_poll_across_sockets_wakes_for_the_second(
    listener: q.Listener, pki: CertFiles
) -> None:
    one = _handshake(listener, pki, ContextConfig())
    two = _handshake(listener, pki, ContextConfig())
    try:
        a = one.client.new_stream()
        b = two.client.new_stream()
        a.write(b"1")
        b.write(b"2")
        for p in (one, two):
            wait_for([(p.server, ISB)], ISB)
        got_b = two.server.accept_stream()
        assert got_b is not None

        def reply_later() -> None:
            time.sleep(0.2)
            got_b.read()
            got_b.write(b"from two")

        replier = threading.Thread(target=reply_later)
        replier.start()
        start = time.monotonic()
        revents = q.poll([(a, R), (b, R)], timeout=5.0)
        replier.join()
        assert revents == [0, R]
        assert 0.15 < time.monotonic() - start < 2.0
        assert b.read() == b"from two"
    finally:
        for p in (one, two):
            p.client.free()
            p.server.free()
            p.sock.close()


# ----------------------------------------------------------------------
# timers: a FakeClock decides
# ----------------------------------------------------------------------


def test_blocking_poll_on_a_fake_clock_jumps_to_the_idle_timeout(
    pki: CertFiles,
) -> None:
    clock = q.FakeClock()
    pair = DatagramPair(clock)
    cfg = ContextConfig(idle_timeout=10.0)
    lis = server_context(pki, cfg).new_listener(
        pair.server, q.LISTENER_FLAG_NO_VALIDATE
    )
    lis.listen()
    client = q.Connection(client_context(pki, cfg))
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("127.0.0.1")
    client.set_blocking_mode(False)
    try:
        while True:
            try:
                client.connect()
                break
            except q.WantReadError:
                q.poll([(client, 0), (lis, 0)], timeout=0.001)
                clock.advance(0.001)
        stream = client.new_stream()
        pair.to_client.blackhole = pair.to_server.blackhole = True
        start = clock.now()
        revents = q.poll([(client, EC), (stream, R | ER | EW)], timeout=None)
        assert revents[0] & EC
        assert revents[1] & (ER | EW)
        assert 9.0 < clock.now() - start < 31.0, "woke at the idle timeout"
        info = client.get_conn_close_info()
        assert info is not None
        assert info.error_code == q.QUIC_LOCAL_ERR_IDLE_TIMEOUT
    finally:
        client.free()
        lis.free()


def test_poll_timeout_on_a_fake_clock_is_fake_time(pki: CertFiles) -> None:
    clock = q.FakeClock()
    pair = DatagramPair(clock)
    client = q.Connection(client_context(pki, ContextConfig()))
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("127.0.0.1")
    client.set_blocking_mode(False)
    with pytest.raises(q.WantReadError):
        client.connect()  # nobody answers: the Initial is retransmitted on timers
    start = clock.now()
    wall = time.monotonic()
    assert q.poll([(client, EC)], timeout=3.0) == [0]
    assert clock.now() - start == pytest.approx(3.0, abs=0.01)
    assert time.monotonic() - wall < 1.0
    client.free()


# ----------------------------------------------------------------------
# misuse
# ----------------------------------------------------------------------


def test_poll_rejects_what_it_cannot_poll(pair: Pair) -> None:
    with pytest.raises(TypeError, match="Connection, Stream and Listener"):
        q.poll([(pair.sock, R)], timeout=0)
    with pytest.raises(TypeError, match="pairs"):
        q.poll([pair.client], timeout=0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="flags"):
        q.poll([(pair.client, R)], timeout=0, flags=0x80)
    with pytest.raises(ValueError, match="timeout"):
        q.poll([(pair.client, R)], timeout=-1)
    with pytest.raises(ValueError, match="unknown poll event"):
        q.poll([(pair.client, 1 << 20)], timeout=0)
