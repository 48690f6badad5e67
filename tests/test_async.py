"""MODE_ASYNC: handshakes that pause while an offload engine signs.

Behaviour pinned (OpenSSL's TLS semantics, applied to quicconn's QUIC):

* a server handshake pauses at CertificateVerify; the connection's calls
  raise WantAsyncError; waiting_for_async() is True; the wait fd is listed,
  reported once as added, and polls readable only after the engine's
  completion; the async callback runs once per completion, with its
  argument, in the engine's thread; retrying the call resumes the job;
* the engine asking for a retry (EAGAIN) and failing (ERR), both at
  submission and at completion; a job limit (WantAsyncJobError);
* while a signature is held, the listener keeps serving other connections,
  holds the paused one's datagrams (bounded) and never re-enters its core
  for timers;
* blocking servers with real engines against quicconn and aioquic clients;
  a client's CertificateVerify under client authentication.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

import quicconn
from quicconn import ConnState
from quicconn._asyncjob.engine import scheme_for, sign_with_scheme
from quicconn._asyncjob.job import POOL, current_job
from quicconn._core.aioquic.keys import offloadable_key, plain_key
from quicconn._objects.connection import channel_of
from quicconn.testing import DatagramPair, FakeClock
from tests.conftest import PEERS, peer_process
from tests.support.async_engines import AUTO, EAGAIN, HOLD, REFUSE, ControlledEngine
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]
ROOT = Path(__file__).resolve().parent.parent
CRYPTO_INTERNAL_ERROR = 0x100 + 80  # CRYPTO_ERROR + TLS internal_error alert


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_job_limit() -> Iterator[None]:
    yield
    quicconn.async_cleanup_thread()


@pytest.fixture
def engine() -> Iterator[ControlledEngine]:
    eng = ControlledEngine()
    yield eng
    for request in list(eng.held):
        request.fail("the test ended")


class Callbacks:
    """Records async callback invocations: (conn, arg, thread name)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, str]] = []
        self._cond = threading.Condition()

    def __call__(self, conn: Any, arg: Any) -> None:
        with self._cond:
            self.calls.append((conn, arg, threading.current_thread().name))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, timeout)


def server_context(
    pki: CertFiles, engine: quicconn.AsyncEngine | None
) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    ctx.set_mode(quicconn.MODE_ASYNC)
    if engine is not None:
        ctx.set_async_engine(engine)
    return ctx


def client_context(pki: CertFiles) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    return ctx


@contextmanager
def listening(ctx: quicconn.Context, *, blocking: bool = False) -> Iterator[Any]:
    listener = ctx.new_listener(("127.0.0.1", 0))
    listener.listen()
    listener.set_blocking_mode(blocking)
    try:
        yield listener
    finally:
        listener.free()


@pytest.fixture
def new_client(pki: CertFiles) -> Iterator[Callable[..., quicconn.Connection]]:
    made: list[tuple[quicconn.Connection, socket.socket]] = []

    def make(
        port: int, ctx: quicconn.Context | None = None, blocking: bool = False
    ) -> quicconn.Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", port))
        conn = quicconn.Connection(ctx or client_context(pki))
        conn.set_fd(sock)
        conn.set1_host("localhost")
        conn.set_blocking_mode(blocking)
        made.append((conn, sock))
        return conn

    yield make
    for conn, sock in made:
        conn.free()
        sock.close()


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def drive(until: Callable[[], bool], *objs: Any, timeout: float = 10.0) -> None:
    """Tick ``objs`` (nonblocking) until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        for obj in objs:
            obj.handle_events()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("timed out driving the connections")
        select.select([o.get_rpoll_descriptor() for o in objs], [], [], 0.005)


def idle_for(seconds: float, *objs: Any) -> None:
    """Keep ticking ``objs`` for ``seconds`` (nothing is expected to finish)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for obj in objs:
            obj.handle_events()
        select.select([o.get_rpoll_descriptor() for o in objs], [], [], 0.005)


def completes(call: Callable[[], object]) -> bool:
    """Run a nonblocking call: True when it finished, False if it must wait
    (for the network, or for an engine that signs on its own)."""
    try:
        call()
    except (quicconn.WantReadError, quicconn.WantAsyncError):
        return False
    return True


def finish_handshake(server: Any, client: Any, listener: Any) -> None:
    done = {"server": False, "client": False}

    def both() -> bool:
        if not done["server"]:
            done["server"] = completes(server.accept)
        if not done["client"]:
            done["client"] = completes(client.connect)
        return done["server"] and done["client"]

    drive(both, listener, client)


def read_exactly(conn: Any, size: int, *objs: Any) -> bytes:
    got = bytearray()

    def enough() -> bool:
        with suppress(quicconn.WantReadError):
            got.extend(conn.read(size - len(got)))
        return len(got) >= size

    drive(enough, *objs)
    return bytes(got)


def wait_paused(engine: ControlledEngine, listener: Any, client: Any) -> Any:
    """Start ``client``'s handshake; return the server connection once paused."""
    assert not completes(client.connect)
    drive(lambda: bool(engine.held), listener, client)
    conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
    assert conn is not None
    return conn


# ---------------------------------------------------------------------------
# pausing and resuming
# ---------------------------------------------------------------------------


def test_server_handshake_pauses_until_the_engine_signs_then_completes(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    callbacks = Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(callbacks)
    ctx.set_async_callback_arg("the argument")
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        conn = wait_paused(engine, listener, client)

        with pytest.raises(quicconn.WantAsyncError):
            conn.accept()
        assert conn.get_error() == quicconn.ERROR_WANT_ASYNC
        assert conn.waiting_for_async()
        fds = conn.get_all_async_fds()
        assert len(fds) == 1
        assert conn.get_changed_async_fds() == (fds, [])
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_OK
        assert not readable(fds[0])

        # Nothing moves while the engine holds the signature.
        idle_for(0.2, listener, client)
        assert not completes(client.connect)
        with pytest.raises(quicconn.WantAsyncError):
            conn.do_handshake()
        assert not readable(fds[0])
        assert callbacks.calls == []

        engine.complete()
        assert readable(fds[0], timeout=5)
        callbacks.wait(1)
        assert callbacks.calls == [(conn, "the argument", "test-engine")]

        finish_handshake(conn, client, listener)
        assert not conn.waiting_for_async()
        assert not readable(fds[0])  # cleared when the job resumed
        assert conn.get_all_async_fds() == fds  # stable for the connection
        assert len(callbacks.calls) == 1
        assert conn.is_init_finished() and client.is_init_finished()

        client.write(b"after async")
        assert read_exactly(conn, 11, listener, client) == b"after async"


def test_engine_busy_eagain_is_retried_and_changed_fds_are_reported_once(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    callbacks = Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(callbacks)
    ctx.set_async_callback_arg(7)
    engine.script.append(EAGAIN)
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        drive(lambda: listener.get_accept_connection_queue_len() > 0, listener, client)
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)

        # First pause: the engine was busy; the application is told to retry.
        assert engine.submissions == [EAGAIN]
        assert conn.waiting_for_async()
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_EAGAIN
        fds = conn.get_all_async_fds()
        assert conn.get_changed_async_fds() == (fds, [])
        assert readable(fds[0])
        assert [(c, a) for c, a, _ in callbacks.calls] == [(conn, 7)]

        # The retry submits again; now the engine holds it.
        with pytest.raises(quicconn.WantAsyncError):
            conn.accept()
        assert engine.submissions == [EAGAIN, HOLD]
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_OK
        assert conn.get_changed_async_fds() == ([], [])
        assert conn.get_all_async_fds() == fds
        assert not readable(fds[0])

        engine.complete()
        callbacks.wait(2)
        assert callbacks.calls[1][2] == "test-engine"
        finish_handshake(conn, client, listener)
        assert len(callbacks.calls) == 2


def test_engine_failure_fails_the_handshake_and_closes_cleanly(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    callbacks = Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(callbacks)
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        conn = wait_paused(engine, listener, client)
        engine.fail("HSM slot 3 unreachable")
        callbacks.wait(1)
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_ERR

        with pytest.raises(quicconn.ConnectionTerminatedError) as server_error:
            conn.accept()
        message = str(server_error.value)
        assert "async engine" in message and "HSM slot 3 unreachable" in message
        info = conn.get_conn_close_info()
        assert info is not None and info.is_local and info.is_transport
        assert info.error_code == CRYPTO_INTERNAL_ERROR
        assert not conn.waiting_for_async()
        assert conn.state in (ConnState.CLOSING, ConnState.TERMINATED)

        failure: list[BaseException] = []

        def client_failed() -> bool:
            try:
                return completes(client.connect) and False
            except quicconn.Error as exc:
                failure.append(exc)
                return True

        drive(client_failed, listener, client)
        peer_info = client.get_conn_close_info()
        assert peer_info is not None and not peer_info.is_local
        assert peer_info.error_code == CRYPTO_INTERNAL_ERROR
        assert "HSM" not in peer_info.reason  # the engine's reason stays local
        assert len(callbacks.calls) == 1


def test_engine_refusing_at_submission_fails_without_pausing(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    callbacks = Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(callbacks)
    engine.script.append(REFUSE)
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        drive(lambda: listener.get_accept_connection_queue_len() > 0, listener, client)
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        assert not conn.waiting_for_async()
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_ERR
        with pytest.raises(quicconn.ConnectionTerminatedError, match="async engine"):
            conn.accept()
        assert callbacks.calls == []
        assert conn.get_conn_close_info().error_code == CRYPTO_INTERNAL_ERROR


def test_exhausted_job_pool_raises_want_async_job_until_a_job_finishes(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    quicconn.async_init_thread(max_size=1)
    with listening(server_context(pki, engine)) as listener:
        port = listener.local_address()[1]
        first_client, second_client = new_client(port), new_client(port)
        first = wait_paused(engine, listener, first_client)

        assert not completes(second_client.connect)
        drive(
            lambda: listener.get_accept_connection_queue_len() > 0,
            listener,
            first_client,
            second_client,
        )
        second = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        with pytest.raises(quicconn.WantAsyncJobError):
            second.accept()
        assert second.get_error() == quicconn.ERROR_WANT_ASYNC_JOB
        assert not second.waiting_for_async()
        assert len(engine.held) == 1  # the second never reached the engine

        engine.complete()
        finish_handshake(first, first_client, listener)
        # The first job ended: the second connection gets it and pauses.
        drive(lambda: bool(engine.held), listener, second_client)
        with pytest.raises(quicconn.WantAsyncError):
            second.accept()
        engine.complete()
        finish_handshake(second, second_client, listener)
        assert POOL.in_use == 0


def test_connection_callback_overrides_the_context_callback(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    from_ctx, from_conn = Callbacks(), Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(from_ctx)
    ctx.set_async_callback_arg("ctx arg")
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        conn = wait_paused(engine, listener, client)
        conn.set_async_callback(from_conn)
        conn.set_async_callback_arg("conn arg")
        engine.complete()
        from_conn.wait(1)
        assert from_ctx.calls == []
        assert [(c, a) for c, a, _ in from_conn.calls] == [(conn, "conn arg")]
        finish_handshake(conn, client, listener)


# ---------------------------------------------------------------------------
# the listener while a job is paused
# ---------------------------------------------------------------------------


def test_established_connection_echoes_100_times_while_another_signature_is_held(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    engine.default = AUTO
    with listening(server_context(pki, engine)) as listener:
        port = listener.local_address()[1]
        client_a = new_client(port)
        assert not completes(client_a.connect)
        drive(
            lambda: listener.get_accept_connection_queue_len() > 0, listener, client_a
        )
        server_a = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        finish_handshake(server_a, client_a, listener)

        engine.default = HOLD
        client_b = new_client(port)
        server_b = wait_paused(engine, listener, client_b)

        everyone = (listener, client_a, client_b)
        for i in range(100):
            message = b"round %03d" % i
            client_a.write(message)
            received = read_exactly(server_a, len(message), *everyone)
            server_a.write(received)
            assert read_exactly(client_a, len(message), *everyone) == message

        assert server_b.waiting_for_async() and len(engine.held) == 1
        assert not completes(client_b.connect)
        engine.complete()
        finish_handshake(server_b, client_b, listener)


class _EntrySpy:
    """Forwards to ``target``; records which driving methods were entered
    outside an async job."""

    _WATCHED = frozenset(
        {"handle_timer", "datagrams_to_send", "poll_transmit", "receive_datagram"}
    )

    def __init__(self, target: Any, entered: list[str]) -> None:
        self._target = target
        self._entered = entered

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name not in self._WATCHED:
            return value

        def spy(*args: Any, **kw: Any) -> Any:
            if current_job() is None:
                self._entered.append(name)
            return value(*args, **kw)

        return spy


def test_paused_connection_queues_datagrams_boundedly_and_skips_its_timers(
    pki: CertFiles, engine: ControlledEngine
) -> None:
    clock = FakeClock()
    pair = DatagramPair(clock)
    from_client: list[bytes] = []
    pair.to_server.drop = lambda _index, data: bool(from_client.append(data))
    listener = server_context(pki, engine).new_listener(
        pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    listener.listen()
    listener.set_blocking_mode(False)
    client = quicconn.Connection(client_context(pki))
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    try:
        assert not completes(client.connect)
        listener.handle_events()
        assert len(engine.held) == 1
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        core = channel_of(conn).core
        host = channel_of(conn).async_host
        entered: list[str] = []
        # The QUIC library's connection inside the core (aioquic's
        # QuicConnection, or qh3's Rust core, whose methods cannot be
        # replaced): calls to it from outside a job are recorded.
        inner = "_quic" if hasattr(core, "_quic") else "_native"
        setattr(core, inner, _EntrySpy(getattr(core, inner), entered))
        sent_before = pair.to_client.sent

        # Timers come due and the client retransmits; the paused core is
        # neither entered nor heard from, and its datagrams wait.
        for _ in range(5):
            clock.advance(0.5)
            client.handle_events()
            listener.handle_events()
        assert listener.get_event_timeout() is None  # no timer for the paused core
        assert host.backlog >= 1
        for _ in range(3 * 64):
            pair.client.send_batch([(from_client[0], pair.SERVER_ADDRESS)])
        listener.handle_events()
        assert host.backlog == 64 and host.dropped > 0
        assert entered == [] and pair.to_client.sent == sent_before

        engine.complete()
        for _ in range(200):
            listener.handle_events()
            client.handle_events()
            if completes(client.connect) and completes(conn.accept):
                break
        else:
            raise AssertionError("the handshake did not finish after the release")
        assert host.backlog == 0
    finally:
        client.free()
        listener.free()
        pair.client.close()
        pair.server.close()


def test_freeing_a_paused_connection_abandons_its_job(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    callbacks = Callbacks()
    ctx = server_context(pki, engine)
    ctx.set_async_callback(callbacks)
    with listening(ctx) as listener:
        port = listener.local_address()[1]
        conn = wait_paused(engine, listener, new_client(port))
        fd = conn.get_all_async_fds()[0]
        assert POOL.in_use == 1
        conn.free()
        assert POOL.in_use == 0
        with pytest.raises(OSError):
            os.fstat(fd)
        engine.complete()  # a late completion is ignored
        assert callbacks.calls == []

        engine.default = AUTO
        client = new_client(port)
        assert not completes(client.connect)
        drive(lambda: listener.get_accept_connection_queue_len() > 0, listener, client)
        finish_handshake(
            listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK),
            client,
            listener,
        )


def test_nonblocking_shutdown_of_a_paused_connection_wants_async(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    with listening(server_context(pki, engine)) as listener:
        client = new_client(listener.local_address()[1])
        conn = wait_paused(engine, listener, client)
        with pytest.raises(quicconn.WantAsyncError):
            conn.shutdown()
        engine.complete()
        finish_handshake(conn, client, listener)
        conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)


def test_mode_async_without_an_engine_signs_synchronously(
    pki: CertFiles, new_client: Any
) -> None:
    with listening(server_context(pki, None)) as listener:
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        drive(lambda: listener.get_accept_connection_queue_len() > 0, listener, client)
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        finish_handshake(conn, client, listener)
        assert not conn.waiting_for_async()
        assert conn.get_all_async_fds() == []
        assert conn.get_changed_async_fds() == ([], [])
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_UNSUPPORTED


# ---------------------------------------------------------------------------
# blocking servers with real engines
# ---------------------------------------------------------------------------


class EchoServer:
    """A blocking MODE_ASYNC server: a thread per connection echoes one
    concluded message back, then waits for the client to close."""

    def __init__(self, listener: Any, connections: int) -> None:
        self.listener = listener
        self.errors: list[BaseException] = []
        self.statuses: list[int] = []
        self._workers: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, args=(connections,))
        self._acceptor.start()

    def _accept(self, connections: int) -> None:
        try:
            for _ in range(connections):
                conn = self.listener.accept_connection()
                worker = threading.Thread(target=self._serve, args=(conn,))
                self._workers.append(worker)
                worker.start()
        except BaseException as exc:
            self.errors.append(exc)

    def _serve(self, conn: quicconn.Connection) -> None:
        try:
            conn.accept()
            self.statuses.append(conn.get_async_status())
            data = bytearray()
            while True:
                try:
                    data += conn.read()
                except quicconn.ZeroReturnError:
                    break
            conn.write_ex2(bytes(data), quicconn.WRITE_FLAG_CONCLUDE)
            conn.shutdown(quicconn.SHUTDOWN_FLAG_WAIT_PEER)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.free()

    def join(self) -> None:
        self._acceptor.join(timeout=30)
        for worker in self._workers:
            worker.join(timeout=30)
        assert not self._acceptor.is_alive()
        assert self.errors == []


def quicconn_echo(port: int, ca: Path, message: bytes) -> bytes:
    conn = quicconn.connect("127.0.0.1", port, alpn=ALPN, cafile=str(ca))
    try:
        conn.write_ex2(message, quicconn.WRITE_FLAG_CONCLUDE)
        data = bytearray()
        while True:
            try:
                data += conn.read()
            except quicconn.ZeroReturnError:
                break
        conn.shutdown()
    finally:
        conn.free()
    return bytes(data)


def aioquic_echo(port: int, ca: Path, message: bytes) -> bytes:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    async def run() -> bytes:
        config = QuicConfiguration(is_client=True, alpn_protocols=ALPN)
        config.load_verify_locations(str(ca))
        config.server_name = "localhost"
        async with connect("127.0.0.1", port, configuration=config) as client:
            reader, writer = await client.create_stream()
            writer.write(message)
            writer.write_eof()
            data = await reader.read()
            client.close()
            return data

    return asyncio.run(asyncio.wait_for(run(), 20))


def test_blocking_server_with_thread_pool_engine_serves_quicconn_and_aioquic(
    pki: CertFiles,
) -> None:
    callbacks = Callbacks()
    with quicconn.ThreadPoolEngine(max_workers=2) as engine:
        ctx = server_context(pki, engine)
        ctx.set_async_callback(callbacks)
        with listening(ctx, blocking=True) as listener:
            port = listener.local_address()[1]
            server = EchoServer(listener, connections=4)
            results: dict[int, bytes] = {}

            def client(i: int) -> None:
                results[i] = quicconn_echo(port, pki.ca, b"quicconn %d" % i)

            threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            from_aioquic = aioquic_echo(port, pki.ca, b"hello from aioquic")
            for thread in threads:
                thread.join(timeout=30)
            server.join()
    assert results == {i: b"quicconn %d" % i for i in range(3)}
    assert from_aioquic == b"hello from aioquic"
    assert server.statuses == [quicconn.ASYNC_STATUS_OK] * 4
    assert len(callbacks.calls) == 4
    assert all(name.startswith("quicconn-sign") for _, _, name in callbacks.calls)


def test_blocking_server_with_process_pool_engine(pki: CertFiles) -> None:
    callbacks = Callbacks()
    with quicconn.ProcessPoolEngine(max_workers=1) as engine:
        ctx = server_context(pki, engine)
        ctx.set_async_callback(callbacks)
        with listening(ctx, blocking=True) as listener:
            port = listener.local_address()[1]
            server = EchoServer(listener, connections=2)
            assert quicconn_echo(port, pki.ca, b"one") == b"one"
            assert aioquic_echo(port, pki.ca, b"two") == b"two"
            server.join()
    assert [name for _, _, name in callbacks.calls] == ["quicconn-engine"] * 2


# ---------------------------------------------------------------------------
# the client side: CertificateVerify under client authentication
# ---------------------------------------------------------------------------


@pytest.fixture
def client_auth_server(pki: CertFiles) -> Iterator[int]:
    args = [
        sys.executable,
        str(PEERS / "aioquic_server.py"),
        "--cert",
        str(pki.cert),
        "--key",
        str(pki.key),
        "--port",
        "0",
        "--request-client-cert",
    ]
    with peer_process(args, ready_prefix="READY") as (_, line):
        yield int(line.split()[1])


def test_client_certificate_verify_pauses_under_client_authentication(
    pki: CertFiles,
    engine: ControlledEngine,
    new_client: Any,
    client_auth_server: int,
) -> None:
    ctx = client_context(pki)
    ctx.load_cert_chain(pki.cert, pki.key)
    client = new_client(client_auth_server, ctx)
    # Per connection this time (SSL_set_mode), before the handshake starts.
    assert client.set_mode(quicconn.MODE_ASYNC) & quicconn.MODE_ASYNC
    client.set_async_engine(engine)
    assert not completes(client.connect)
    drive(lambda: bool(engine.held), client)
    with pytest.raises(quicconn.WantAsyncError):
        client.connect()
    assert client.waiting_for_async()
    fd = client.get_all_async_fds()[0]
    engine.complete()
    assert readable(fd, timeout=5)
    drive(lambda: completes(client.connect), client)
    stream = client.new_stream()
    stream.write_ex2(b"whoami\n", quicconn.WRITE_FLAG_CONCLUDE)
    answer = bytearray()

    def answered() -> bool:
        try:
            answer.extend(stream.read())
        except quicconn.WantReadError:
            return False
        except quicconn.ZeroReturnError:
            return True
        return False

    drive(answered, client)
    assert bytes(answer) == b"localhost"  # the server checked our signature


# ---------------------------------------------------------------------------
# signing plumbing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate,
        ed448.Ed448PrivateKey.generate,
    ],
    ids=["rsa", "p256", "p384", "ed25519", "ed448"],
)
def test_offloaded_key_looks_like_its_key_and_signs_like_the_tls_stack_asks(
    make_key: Callable[[], Any],
) -> None:
    from aioquic.tls import Context as TlsContext
    from aioquic.tls import signature_algorithm_params

    key = make_key()
    wrapped = offloadable_key(key)
    assert wrapped is not key and plain_key(wrapped) is key
    assert offloadable_key(wrapped) is wrapped
    tls = TlsContext(is_client=False)
    tls.certificate_private_key = wrapped
    algorithms = tls._signature_algorithms_for_private_key()
    assert algorithms, "aioquic must recognise the wrapped key's kind"
    data = os.urandom(100)
    for algorithm in algorithms:
        params = signature_algorithm_params(algorithm)
        assert scheme_for(key, params) == algorithm
        signature = wrapped.sign(data, *params)  # outside a job: synchronous
        key.public_key().verify(signature, data, *params)
        assert sign_with_scheme(key, data, algorithm)


def test_engines_reject_bad_arguments(pki: CertFiles) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    with pytest.raises(TypeError, match="AsyncEngine"):
        ctx.set_async_engine(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_workers"):
        quicconn.ThreadPoolEngine(max_workers=0)
    with pytest.raises(ValueError, match="max_size"):
        quicconn.async_init_thread(-1)


# ---------------------------------------------------------------------------
# the example
# ---------------------------------------------------------------------------


def test_async_server_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "async_server.py"), "--self-test"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-test passed" in result.stdout


# ---------------------------------------------------------------------------
# which thread a job lives in
# ---------------------------------------------------------------------------


def test_event_loop_jobs_run_inline_and_are_resumed_by_their_thread(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    with listening(server_context(pki, engine)) as listener:
        stop = threading.Event()

        def event_loop() -> None:
            while not stop.is_set():
                listener.handle_events()
                select.select([listener.fileno()], [], [], 0.002)

        loop = threading.Thread(target=event_loop, name="event-loop")
        loop.start()
        try:
            client = new_client(listener.local_address()[1])
            assert not completes(client.connect)
            drive(lambda: bool(engine.held), client)  # the loop ticks the listener
            conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            job = channel_of(conn).async_host._job
            assert job is not None and job.home is loop  # inline: no hand-over

            # This thread ticks too now; it cannot switch to the loop's
            # greenlet, so the loop's next tick resumes the job.
            listener.handle_events()
            engine.complete()
            drive(lambda: completes(client.connect), client, listener)
            drive(lambda: completes(conn.accept), listener, client)
            assert job.finished
        finally:
            stop.set()
            loop.join(timeout=10)


def test_job_whose_thread_exited_fails_the_handshake_clearly(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    with listening(server_context(pki, engine)) as listener:
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        short_lived = threading.Thread(
            target=drive, args=(lambda: bool(engine.held), listener, client)
        )
        short_lived.start()
        short_lived.join(timeout=10)
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        engine.complete()
        errors: list[quicconn.Error] = []

        def failed() -> bool:
            try:
                completes(conn.accept)
            except quicconn.ConnectionTerminatedError as exc:
                errors.append(exc)
            return bool(errors)

        drive(failed, listener, client)
        assert "thread that started the paused async job has exited" in str(errors[0])
        assert POOL.in_use == 0
        # The client is told, not left to time out.
        drive(lambda: client.get_conn_close_info() is not None, client, listener)
        assert client.get_conn_close_info().error_code == 0x1  # INTERNAL_ERROR


def test_blocking_accept_waits_without_spinning_and_its_job_uses_the_job_thread(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    with listening(server_context(pki, engine), blocking=True) as listener:
        accepted: list[quicconn.Connection] = []
        cpu: list[float] = []

        def blocking_server() -> None:
            conn = listener.accept_connection()
            accepted.append(conn)
            before = time.thread_time()
            conn.accept()  # blocks while the engine holds the signature
            cpu.append(time.thread_time() - before)

        server = threading.Thread(target=blocking_server)
        server.start()
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        drive(lambda: bool(engine.held), client)
        drive(lambda: bool(accepted), client)
        job = channel_of(accepted[0]).async_host._job
        assert job is not None and job.home.name == "quicconn-async-jobs"
        time.sleep(0.5)  # the engine is slow; the server must sleep, not spin
        engine.complete()
        drive(lambda: completes(client.connect), client)
        server.join(timeout=10)
        assert not server.is_alive()
        assert cpu and cpu[0] < 0.15, f"blocking accept() used {cpu[0]:.3f} s of CPU"


def test_process_engine_fails_requests_when_its_worker_dies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    finished = threading.Event()
    with quicconn.ProcessPoolEngine(max_workers=1) as engine:
        request = quicconn.SignRequest(
            key, b"data", 0x0403, done=lambda _r: finished.set()
        )
        assert engine.submit(request) == quicconn.ASYNC_STATUS_OK
        assert finished.wait(10) and request.signature
        worker = engine._workers[0].process
        worker.kill()
        worker.join(timeout=10)
        finished.clear()
        doomed = quicconn.SignRequest(
            key, b"data", 0x0403, done=lambda _r: finished.set()
        )
        status = engine.submit(doomed)
        if status == quicconn.ASYNC_STATUS_OK:
            assert finished.wait(10)
            assert doomed.error and "process" in doomed.error
        else:
            assert status == quicconn.ASYNC_STATUS_ERR
        assert engine.submit(quicconn.SignRequest(key, b"x", 0x0403)) == (
            quicconn.ASYNC_STATUS_ERR
        )


def test_a_retry_after_eagain_surfaces_the_second_pause(
    pki: CertFiles, engine: ControlledEngine, new_client: Any
) -> None:
    """OpenSSL: after SSL_ERROR_WANT_ASYNC with status EAGAIN, the retried
    call resumes the job, which submits again and pauses again: the retry
    fails with WANT_ASYNC a second time, even when the engine is quick.
    quicconn's implicit tick must not absorb that pause."""
    engine.script.extend([EAGAIN, AUTO])
    ctx = server_context(pki, engine)
    with listening(ctx) as listener:
        client = new_client(listener.local_address()[1])
        assert not completes(client.connect)
        drive(lambda: listener.get_accept_connection_queue_len() > 0, listener, client)
        conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_EAGAIN
        with pytest.raises(quicconn.WantAsyncError):
            conn.accept()  # the first retry: the job submits again and pauses
        assert conn.get_error() == quicconn.ERROR_WANT_ASYNC
        assert engine.submissions == [EAGAIN, AUTO]
        assert conn.get_async_status() == quicconn.ASYNC_STATUS_OK
        finish_handshake(conn, client, listener)
