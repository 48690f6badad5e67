"""Blocking calls on different streams of one connection, from many threads.

One lock per reactor; a thread that waits releases it (the reactor's
leader/follower waiting).  These tests hammer that: many threads blocked at
once on one socket, each woken for its own stream; hand-over of the
polling role; poll() woken by another thread's tick; and every blocked
thread released when the connection dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import quicconn as q
from tests.support.certs import CertFiles
from tests.support.echo_server import EchoServer
from tests.support.stream_scripts import ContextConfig, client_context, server_context


def data_for(tag: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{tag}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def run_threads(target: Callable[[int], None], count: int, limit: float = 60) -> None:
    """Run ``target(i)`` in ``count`` threads; re-raise the first failure."""
    errors: list[BaseException] = []

    def wrapper(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=wrapper, args=(i,), name=f"worker-{i}")
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still blocked after {limit} s: {alive}"
    if errors:
        raise errors[0]


@pytest.fixture
def echo(pki: CertFiles) -> Iterator[EchoServer]:
    with EchoServer(pki) as server:
        yield server


def test_concurrent_blocking_echo_on_sixteen_streams(echo: EchoServer) -> None:
    conn, sock = echo.client()
    try:

        def worker(i: int) -> None:
            for round_ in range(10):
                stream = conn.new_stream()
                body = data_for(f"{i}/{round_}", 5_000 + 997 * i)
                stream.write_ex2(body, q.WRITE_FLAG_CONCLUDE)
                got = bytearray()
                while True:
                    try:
                        got += stream.read(65536)
                    except q.ZeroReturnError:
                        break
                assert bytes(got) == body, f"worker {i} round {round_}: echo differs"
                stream.free()

        run_threads(worker, 16)
        assert echo.streams_served == 160
    finally:
        conn.free()
        sock.close()


def test_each_blocked_reader_wakes_for_its_own_stream(pki: CertFiles) -> None:
    """Four threads block in read(); the server answers them one by one.

    Whichever thread is polling the socket, every reader must return as
    soon as its own answer arrives, and not before.
    """
    ctx = server_context(pki, ContextConfig())
    listener = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    listener.listen()
    sent_at: dict[int, float] = {}
    got_at: dict[int, float] = {}
    answered = threading.Event()

    def server() -> None:
        conn = listener.accept_connection()
        assert conn is not None
        conn.accept()
        conn.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_ACCEPT)
        streams = {}
        while len(streams) < 4:
            stream = conn.accept_stream()
            assert stream is not None
            stream.read(1)
            streams[stream.get_stream_id()] = stream
        for stream_id in sorted(streams, reverse=True):
            time.sleep(0.1)
            sent_at[stream_id] = time.monotonic()
            streams[stream_id].write(b"answer %d" % stream_id)
        answered.wait(10)
        conn.free()

    srv = threading.Thread(target=server)
    srv.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = q.Connection(client_context(pki, ContextConfig()))
    client.set_fd(sock)
    client.set1_initial_peer_addr(listener.local_address())
    client.set1_host("127.0.0.1")
    client.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    client.connect()
    try:
        streams = [client.new_stream() for _ in range(4)]
        for stream in streams:
            stream.write(b"?")

        def reader(i: int) -> None:
            stream = streams[i]
            got = stream.read()
            got_at[stream.get_stream_id()] = time.monotonic()
            assert got == b"answer %d" % stream.get_stream_id()

        run_threads(reader, 4, limit=20)
        answered.set()
        for stream_id, when in got_at.items():
            delay = when - sent_at[stream_id]
            assert 0 <= delay < 1.0, f"stream {stream_id} woke {delay:.3f} s late"
    finally:
        answered.set()
        srv.join(10)
        client.free()
        sock.close()
        listener.free()


def test_a_blocked_accept_and_stream_io_share_the_connection(pki: CertFiles) -> None:
    ctx = server_context(pki, ContextConfig())
    listener = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    listener.listen()
    done = threading.Event()

    def server() -> None:
        conn = listener.accept_connection()
        assert conn is not None
        conn.accept()
        conn.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_ACCEPT)
        for _ in range(20):
            stream = conn.accept_stream()
            assert stream is not None
            data = b""
            while True:
                try:
                    data += stream.read()
                except q.ZeroReturnError:
                    break
            stream.write_ex2(data.upper(), q.WRITE_FLAG_CONCLUDE)
            stream.free()
        pushed = conn.new_stream(q.STREAM_FLAG_UNI)
        pushed.write_ex2(b"server push", q.WRITE_FLAG_CONCLUDE)
        done.wait(10)
        pushed.free()
        conn.free()

    srv = threading.Thread(target=server)
    srv.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = q.Connection(client_context(pki, ContextConfig()))
    client.set_fd(sock)
    client.set1_initial_peer_addr(listener.local_address())
    client.set1_host("127.0.0.1")
    client.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    client.connect()
    try:
        pushed: list[bytes] = []

        def roles(i: int) -> None:
            if i == 0:  # blocks in accept_stream() while thread 1 does I/O
                stream = client.accept_stream()
                assert stream is not None
                body = b""
                while True:
                    try:
                        body += stream.read()
                    except q.ZeroReturnError:
                        break
                pushed.append(body)
            else:
                for n in range(20):
                    stream = client.new_stream()
                    stream.write_ex2(b"request %d" % n, q.WRITE_FLAG_CONCLUDE)
                    reply = b""
                    while True:
                        try:
                            reply += stream.read()
                        except q.ZeroReturnError:
                            break
                    assert reply == b"REQUEST %d" % n
                    stream.free()

        run_threads(roles, 2, limit=30)
        assert pushed == [b"server push"]
    finally:
        done.set()
        srv.join(10)
        client.free()
        sock.close()
        listener.free()


def test_blocking_new_stream_waits_while_other_threads_work(pki: CertFiles) -> None:
    with EchoServer(pki, ContextConfig(max_streams_bidi=2)) as echo:
        conn, sock = echo.client()
        try:

            def worker(i: int) -> None:
                for n in range(6):
                    # At most two streams may be open: new_stream() blocks
                    # until one of the others is finished on both sides.
                    stream = conn.new_stream()
                    body = data_for(f"{i}-{n}", 2000)
                    stream.write_ex2(body, q.WRITE_FLAG_CONCLUDE)
                    got = b""
                    while True:
                        try:
                            got += stream.read()
                        except q.ZeroReturnError:
                            break
                    assert got == body
                    stream.free()

            run_threads(worker, 4, limit=60)
            assert echo.streams_served == 24
        finally:
            conn.free()
            sock.close()


def test_blocking_write_waiting_for_credit_does_not_stall_other_streams(
    pki: CertFiles,
) -> None:
    config = ContextConfig(max_stream_data=16_384)
    with EchoServer(pki, config) as echo:
        conn, sock = echo.client()
        try:
            big = data_for("big", 400_000)

            def roles(i: int) -> None:
                stream = conn.new_stream()
                if i == 0:
                    # The echo server writes back as it reads: credit for
                    # this big write returns only as the echo is read, here
                    # by a helper thread on the same stream.
                    reader_got = bytearray()

                    def read_back() -> None:
                        while True:
                            try:
                                reader_got.extend(stream.read(65536))
                            except q.ZeroReturnError:
                                return

                    back = threading.Thread(target=read_back)
                    back.start()
                    stream.write_ex2(big, q.WRITE_FLAG_CONCLUDE)
                    back.join(30)
                    assert bytes(reader_got) == big
                else:
                    for n in range(30):
                        small = b"small %d" % n
                        stream2 = conn.new_stream()
                        stream2.write_ex2(small, q.WRITE_FLAG_CONCLUDE)
                        assert stream2.read() == small
                        stream2.free()
                stream.free()

            run_threads(roles, 2, limit=60)
        finally:
            conn.free()
            sock.close()


def test_poll_is_woken_by_a_tick_in_another_thread(echo: EchoServer) -> None:
    """A thread in poll() must not sleep through data another thread received.

    Thread B's blocking reads on stream Y drain the shared socket, often
    picking up thread A's data for stream X on the way: A is then woken by
    B's tick, not by the socket.  Every answer must reach A promptly.
    """
    conn, sock = echo.client()
    try:
        x = conn.new_stream()
        y = conn.new_stream()
        stop = threading.Event()
        latencies: list[float] = []

        def role(i: int) -> None:
            if i == 0:
                for n in range(100):
                    x.write(b"%05d" % n)
                    start = time.monotonic()
                    revents = q.poll([(x, q.POLL_EVENT_R)], timeout=5.0)
                    assert revents == [q.POLL_EVENT_R], f"round {n}: poll timed out"
                    latencies.append(time.monotonic() - start)
                    got = b""
                    while len(got) < 5:
                        got += x.read(5 - len(got))
                    assert got == b"%05d" % n
                stop.set()
            else:
                n = 0
                while not stop.is_set():
                    y.write(b"y" * 100)
                    got = b""
                    while len(got) < 100:
                        got += y.read(100 - len(got))
                    n += 1

        run_threads(role, 2, limit=60)
        latencies.sort()
        assert latencies[-1] < 1.0, f"slowest wake-up {latencies[-1]:.3f} s"
    finally:
        conn.free()
        sock.close()


def test_connection_close_releases_every_blocked_thread(pki: CertFiles) -> None:
    ctx = server_context(pki, ContextConfig())
    listener = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    listener.listen()
    ready = threading.Event()

    def server() -> None:
        conn = listener.accept_connection()
        assert conn is not None
        conn.accept()
        conn.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_ACCEPT)
        for _ in range(6):
            stream = conn.accept_stream()
            assert stream is not None
            stream.read(1)
        ready.wait(10)
        time.sleep(0.2)  # let every client thread block
        conn.shutdown(q.SHUTDOWN_FLAG_RAPID, 0x42, "closing on you")
        conn.free()

    srv = threading.Thread(target=server)
    srv.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    client = q.Connection(client_context(pki, ContextConfig(max_stream_data=8192)))
    client.set_fd(sock)
    client.set1_initial_peer_addr(listener.local_address())
    client.set1_host("127.0.0.1")
    client.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    client.connect()
    try:
        streams = [client.new_stream() for _ in range(6)]
        for stream in streams:
            stream.write(b"!")
        outcomes: list[str] = []

        def blocked(i: int) -> None:
            ready.set()
            try:
                if i < 3:
                    streams[i].read()  # the server never answers
                elif i < 5:
                    streams[i].write(b"z" * 2_000_000)  # beyond any credit
                else:
                    client.accept_stream()  # no stream will come
            except q.ConnectionTerminatedError as exc:
                assert exc.close_info is not None
                assert exc.close_info.error_code == 0x42
                outcomes.append("terminated")

        run_threads(blocked, 6, limit=20)
        assert outcomes == ["terminated"] * 6
    finally:
        srv.join(10)
        client.free()
        sock.close()
        listener.free()


def test_freeing_a_listener_releases_every_thread_blocked_in_accept(
    pki: CertFiles,
) -> None:
    """Three threads wait (one polls, two on the condition); free() ends all.

    The socket and the wake-up descriptor are closed once, by the polling
    thread when it wakes, and none is left open.
    """
    before = len(os.listdir("/proc/self/fd"))
    ctx = server_context(pki, ContextConfig())
    listener = ctx.new_listener(("127.0.0.1", 0), q.LISTENER_FLAG_NO_VALIDATE)
    listener.listen()
    outcomes: list[object] = []

    def accept(_i: int) -> None:
        try:
            outcomes.append(listener.accept_connection())
        except q.SyscallError as exc:  # the listener's socket went away
            outcomes.append(type(exc))

    def free_soon() -> None:
        time.sleep(0.3)  # every thread asleep
        listener.free()

    freer = threading.Thread(target=free_soon)
    freer.start()
    run_threads(accept, 3, limit=10)
    freer.join(10)
    assert len(outcomes) == 3 and set(outcomes) <= {None, q.SyscallError}
    assert len(os.listdir("/proc/self/fd")) == before


def test_stress_thirty_two_threads_share_one_connection(echo: EchoServer) -> None:
    conn, sock = echo.client()
    try:

        def worker(i: int) -> None:
            for round_ in range(20):
                stream = conn.new_stream()
                body = data_for(
                    f"s{i}/{round_}", 1 + (i * 7919 + round_ * 104729) % 9000
                )
                half = len(body) // 2
                stream.write(body[:half])
                stream.write_ex2(body[half:], q.WRITE_FLAG_CONCLUDE)
                got = bytearray()
                buf = bytearray(4096)
                while True:
                    try:
                        n = stream.readinto(buf)
                    except q.ZeroReturnError:
                        break
                    got += buf[:n]
                assert bytes(got) == body, f"thread {i} round {round_}"
                assert stream.get_stream_read_state() == q.STREAM_STATE_FINISHED
                stream.free()

        run_threads(worker, 32, limit=90)
        assert echo.streams_served == 640
    finally:
        conn.free()
        sock.close()


def test_threads_waiting_on_one_socket_do_not_wake_each_other(
    echo: EchoServer,
) -> None:
    """A blocked read and a blocked poll() on one connection stay asleep.

    Each tick wakes the other waiters; an idle tick must not, or the two
    would take turns ticking and waking each other, spinning the CPU.
    """
    conn, sock = echo.client()
    try:
        a = conn.new_stream()
        b = conn.new_stream()
        a.write(b"a")
        b.write(b"b")
        assert a.read() == b"a" and b.read() == b"b"
        done = threading.Event()

        def role(i: int) -> None:
            if i == 0:
                with contextlib.suppress(q.ConnectionTerminatedError):
                    a.read()  # nothing more will come until the end
            else:
                while not done.is_set():
                    q.poll([(b, q.POLL_EVENT_R)], timeout=0.5)

        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=lambda i=i: _catch(role, i, errors))
            for i in range(2)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(1.5)
        after = resource.getrusage(resource.RUSAGE_SELF)
        done.set()
        conn.shutdown(q.SHUTDOWN_FLAG_RAPID | q.SHUTDOWN_FLAG_NO_STREAM_FLUSH)
        for t in threads:
            t.join(10)
        assert not errors, errors
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 0.15, f"{cpu * 1000:.0f} ms of CPU in 1.5 s of waiting"
    finally:
        conn.free()
        sock.close()


def _catch(fn: Callable[[int], None], i: int, errors: list[BaseException]) -> None:
    try:
        fn(i)
    except BaseException as exc:
        errors.append(exc)
