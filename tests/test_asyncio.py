"""quicconn.asyncio: one driver per socket, tasks sharing connections,
cancellation, servers, asyncio's stream pair, uvloop.

Everything runs over real UDP on loopback.  A quicconn.asyncio server and
its clients usually share one loop (the loop then serves both ends); the
200-client test uses aioquic's asyncio clients in a separate process, an
independent implementation.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import uvloop

import quicconn
import quicconn.asyncio as qa
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]
CLIENTS = Path(__file__).resolve().parent / "peers" / "aioquic_clients.py"

LOOPS = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(main: Awaitable[Any], loop: str = "asyncio") -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(main)  # type: ignore[arg-type]


def pattern(n: int, seed: int) -> bytes:
    block = bytes((seed + i) % 251 for i in range(251))
    reps, rest = divmod(n, 251)
    return block * reps + block[:rest]


async def echo_stream(stream: qa.Stream) -> None:
    """Echo a stream to its FIN, then conclude."""
    while data := await stream.read():
        await stream.write(data)
    await stream.write_eof()


async def echo_handler(conn: qa.Connection) -> None:
    """Echo every stream the peer opens, each in a task of its own."""
    tasks = []
    try:
        while True:
            stream = await conn.accept_stream()
            tasks.append(asyncio.get_running_loop().create_task(echo_stream(stream)))
    except quicconn.ConnectionTerminatedError:
        pass
    for task in tasks:
        task.cancel()


async def echo_server(pki: CertFiles, **options: Any) -> qa.Server:
    return await qa.start_server(
        echo_handler,
        "127.0.0.1",
        0,
        certfile=pki.cert,
        keyfile=pki.key,
        alpn=ALPN,
        **options,
    )


async def client_of(server: qa.Server, pki: CertFiles) -> qa.Connection:
    port = server.local_address()[1]
    return await qa.connect("localhost", port, alpn=ALPN, cafile=pki.ca)


# -- many tasks on one connection ---------------------------------------------


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_three_streams_written_and_read_by_separate_tasks(
    pki: CertFiles, loop: str
) -> None:
    """Six tasks share one connection: a writer and a reader per stream.

    With one add_reader per wait (the old example) this stalled for 30 s;
    with one driver per socket the loop never waits for anything but the
    network: the process is busy for most of the wall-clock time.
    """
    size = 1_000_000

    async def main() -> tuple[float, float]:
        async with await echo_server(pki) as server:
            conn = await client_of(server, pki)
            streams = [await conn.open_stream() for _ in range(3)]
            payloads = [pattern(size, i) for i in range(3)]
            received: list[bytearray] = [bytearray() for _ in range(3)]

            async def writer(i: int) -> None:
                view = memoryview(payloads[i])
                for start in range(0, size, 50_000):
                    await streams[i].write(view[start : start + 50_000])
                await streams[i].write_eof()

            async def reader(i: int) -> None:
                while data := await streams[i].read():
                    received[i] += data

            wall0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.gather(
                *(writer(i) for i in range(3)), *(reader(i) for i in range(3))
            )
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            for i in range(3):
                assert received[i] == payloads[i], f"stream {i} differs"
            await conn.aclose()
            return wall, cpu

    wall, cpu = run(main(), loop)
    # Both ends run in this process, so it is never waiting for a peer: a
    # stall shows as wall-clock time without CPU time.
    assert wall < 4 * cpu + 1.0, f"{wall:.2f} s wall for {cpu:.2f} s of CPU"


def test_the_descriptor_is_registered_once_per_socket(pki: CertFiles) -> None:
    calls: list[tuple[str, int]] = []

    class Spy(asyncio.SelectorEventLoop):
        def add_reader(self, fd: Any, *args: Any) -> None:
            calls.append(("add_reader", fd))
            super().add_reader(fd, *args)

        def remove_reader(self, fd: Any) -> bool:
            calls.append(("remove_reader", fd))
            return super().remove_reader(fd)

    async def main() -> tuple[int, int]:
        async with await echo_server(pki) as server:
            listener_fd = server.listener.fileno()
            conn = await client_of(server, pki)
            client_fd = conn.quic.fileno()
            streams = [await conn.open_stream() for _ in range(4)]

            async def exchange(stream: qa.Stream, i: int) -> None:
                for _ in range(20):
                    await stream.write(b"x" * 1000)
                    assert len(await stream.readexactly(1000)) == 1000
                await stream.write_eof()
                assert await stream.read() == b""

            await asyncio.gather(*(exchange(s, i) for i, s in enumerate(streams)))
            await conn.aclose()
        return listener_fd, client_fd

    with asyncio.Runner(loop_factory=Spy) as runner:
        listener_fd, client_fd = runner.run(main())
    for fd in (listener_fd, client_fd):
        assert calls.count(("add_reader", fd)) == 1, calls
        assert calls.count(("remove_reader", fd)) == 1, calls


# -- many connections ------------------------------------------------------------


def test_500_concurrent_connections_on_one_loop_against_one_listener(
    pki: CertFiles,
) -> None:
    """500 client connections (500 sockets, one driver each) and the
    listener's driver on one loop; all 500 are open at once, then each
    echoes 4 kB of its own, every byte checked."""
    count = 500
    size = 4096

    async def main() -> None:
        async with await echo_server(pki, max_pending_connections=count) as server:
            port = server.local_address()[1]
            handshakes = asyncio.Semaphore(100)  # handshakes in flight
            all_open = asyncio.Event()
            opened = 0

            async def client(i: int) -> None:
                nonlocal opened
                async with handshakes:
                    conn = await qa.connect("localhost", port, alpn=ALPN, cafile=pki.ca)
                opened += 1
                if opened == count:
                    all_open.set()
                await all_open.wait()
                stream = await conn.open_stream()
                payload = pattern(size, i)
                await stream.write(payload, end=True)
                echoed = bytearray()
                while data := await stream.read():
                    echoed += data
                assert echoed == payload, f"client {i}: the echo differs"
                await conn.aclose(flags=quicconn.SHUTDOWN_FLAG_RAPID)

            results = await asyncio.gather(
                *(client(i) for i in range(count)), return_exceptions=True
            )
            failures = [r for r in results if r is not None]
            assert not failures, failures[:3]
            assert server.listener.stats.connections_accepted >= count

    run(main())


def test_an_asyncio_server_handles_200_aioquic_clients(pki: CertFiles) -> None:
    async def main() -> dict[str, Any]:
        async with await echo_server(pki, max_pending_connections=256) as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CLIENTS),
                "--port",
                str(server.local_address()[1]),
                "--ca",
                str(pki.ca),
                "--clients",
                "200",
                "--concurrency",
                "100",
                "--size",
                "20000",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            return dict(json.loads(out.decode().splitlines()[-1]))

    result = run(main())
    assert result["ok"] == 200, result


# -- cancellation ----------------------------------------------------------------


async def slow_sender(conn: qa.Connection) -> None:
    """Per stream: on "go N\\n", send N bytes in small pieces, then FIN."""
    stream = await conn.accept_stream()
    line = await stream.readexactly(len(b"go 000000\n"))
    total = int(line.split()[1])
    data = pattern(total, 7)
    for start in range(0, total, 1000):
        await stream.write(data[start : start + 1000])
        await asyncio.sleep(0.002)
    await stream.write_eof()
    await conn.accept_stream()  # until the client closes


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_cancelling_a_pending_read_loses_no_data(pki: CertFiles, loop: str) -> None:
    async def main() -> None:
        async with await qa.start_server(
            slow_sender, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
        ) as server:
            conn = await client_of(server, pki)
            stream = await conn.open_stream()
            # A read that waits, then is cancelled before anything came.
            pending = asyncio.get_running_loop().create_task(stream.read())
            await asyncio.sleep(0.05)
            assert not pending.done()
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            total = 200_000
            await stream.write(b"go %06d\n" % total)
            # Reads cancelled at random moments while data keeps arriving,
            # some of them just as they were woken: nothing may be lost.
            rng = random.Random(1)
            got = bytearray()
            cancelled = 0
            while True:
                try:
                    data = await asyncio.wait_for(stream.read(), rng.uniform(0, 0.003))
                except TimeoutError:
                    cancelled += 1
                    continue
                if not data:
                    break
                got += data
            assert got == pattern(total, 7)
            assert cancelled > 10, "the test cancelled too few reads to mean much"
            await conn.aclose()

    run(main(), loop)


def test_a_cancelled_accept_stream_leaves_the_stream_queued(pki: CertFiles) -> None:
    async def opener(conn: qa.Connection) -> None:
        await asyncio.sleep(0.1)
        stream = await conn.open_stream()
        await stream.write(b"hello", end=True)
        await conn.accept_stream()

    async def main() -> None:
        async with await qa.start_server(
            opener, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
        ) as server:
            conn = await client_of(server, pki)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.accept_stream(), 0.02)
            stream = await conn.accept_stream()
            assert await stream.read() == b"hello"
            await conn.aclose()

    run(main())


# -- streams as asyncio's reader/writer --------------------------------------------


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_stream_as_an_asyncio_stream_reader_and_writer(
    pki: CertFiles, loop: str
) -> None:
    async def lines(conn: qa.Connection) -> None:
        reader, writer = (await conn.accept_stream()).as_streams()
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.write_eof()
        await conn.accept_stream()

    async def main() -> None:
        async with (
            await qa.start_server(
                lines, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
            ) as server,
            await client_of(server, pki) as conn,
        ):
            reader, writer = await conn.create_stream()
            assert isinstance(reader, asyncio.StreamReader)
            assert isinstance(writer, asyncio.StreamWriter)
            assert writer.get_extra_info("stream_id") == 0
            writer.write(b"hello\n")
            assert await reader.readline() == b"HELLO\n"
            # Far more than the buffers hold: drain() must wait for credit.
            body = b"".join(b"line %07d\n" % i for i in range(50_000))
            writer.write(body)
            result = asyncio.get_running_loop().create_task(reader.read())
            await writer.drain()
            writer.write_eof()
            assert await result == body.upper()
            writer.close()
            await writer.wait_closed()

    run(main(), loop)


def test_a_peer_reset_reaches_the_reader_as_an_exception(pki: CertFiles) -> None:
    async def resetter(conn: qa.Connection) -> None:
        stream = await conn.accept_stream()
        await stream.read()
        stream.reset(42)
        await conn.accept_stream()

    async def main() -> None:
        async with (
            await qa.start_server(
                resetter, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
            ) as server,
            await client_of(server, pki) as conn,
        ):
            stream = await conn.open_stream()
            await stream.write(b"reset me")
            with pytest.raises(quicconn.StreamResetError) as info:
                await stream.read()
            assert info.value.error_code == 42

    run(main())


# -- closing ------------------------------------------------------------------------


def test_async_with_closes_gracefully_and_the_peer_sees_it(pki: CertFiles) -> None:
    seen: list[quicconn.ConnCloseInfo | None] = []

    async def watcher(conn: qa.Connection) -> None:
        with pytest.raises(quicconn.ConnectionTerminatedError):
            while True:
                await conn.accept_stream()
        seen.append(conn.quic.get_conn_close_info())

    async def main() -> None:
        async with await qa.start_server(
            watcher, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
        ) as server:
            async with await client_of(server, pki) as conn:
                stream = await conn.open_stream()
                await stream.write(b"bye", end=True)
            assert conn.closed
            with pytest.raises(ValueError, match="freed"):
                await conn.open_stream()
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert seen and seen[0] is not None and not seen[0].is_local


def test_a_server_runs_its_handlers_and_stops_on_close(pki: CertFiles) -> None:
    served: list[int] = []

    async def handler(conn: qa.Connection) -> None:
        stream = await conn.accept_stream()
        served.append(len(await stream.readexactly(3)))
        await stream.write(b"ok", end=True)

    async def main() -> None:
        server = await qa.start_server(
            handler, "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
        )
        assert server.is_serving()
        for _ in range(3):
            async with await client_of(server, pki) as conn:
                stream = await conn.open_stream()
                await stream.write(b"abc", end=True)
                assert await stream.read() == b"ok"
        server.close()
        await server.wait_closed()
        assert not server.is_serving()

    run(main())
    assert served == [3, 3, 3]


def test_connect_reports_a_verification_failure(
    pki: CertFiles, other_pki: CertFiles
) -> None:
    async def main() -> None:
        async with await echo_server(pki) as server:
            port = server.local_address()[1]
            with pytest.raises(quicconn.VerificationError):
                await qa.connect("localhost", port, alpn=ALPN, cafile=other_pki.ca)

    run(main())


def test_misuse_is_refused_with_a_clear_message(pki: CertFiles) -> None:
    with pytest.raises(TypeError, match=r"quicconn\.Connection"):
        qa.Connection("not a connection")  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(TypeError, match="unknown option 'colour'"):
            await qa.connect("localhost", 1, colour="blue")
        with pytest.raises(TypeError, match="certfile"):
            await qa.start_server(echo_handler, "127.0.0.1", 0)

    run(main())


def test_write_interest_only_while_datagrams_wait_behind_eagain(
    pki: CertFiles,
) -> None:
    """The driver watches for writability only while net_write_desired():
    here an in-memory endpoint answers EAGAIN (``congested``) for a while."""
    from quicconn.testing import DatagramPair

    calls: list[str] = []

    class Spy(asyncio.SelectorEventLoop):
        def add_writer(self, fd: Any, *args: Any) -> None:
            calls.append("add_writer")
            super().add_writer(fd, *args)

        def remove_writer(self, fd: Any) -> bool:
            calls.append("remove_writer")
            return super().remove_writer(fd)

    async def main() -> None:
        pair = DatagramPair()
        sctx = quicconn.Context(quicconn.SERVER)
        sctx.load_cert_chain(pki.cert, pki.key)
        sctx.set_alpn_protos(ALPN)
        server = qa.Server(
            sctx.new_listener(pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE),
            echo_handler,
        )
        cctx = quicconn.Context(quicconn.CLIENT)
        cctx.load_verify_locations(pki.ca)
        cctx.set_alpn_protos(ALPN)
        quic = quicconn.Connection(cctx)
        quic.set_transport(pair.client)
        quic.set1_initial_peer_addr(pair.SERVER_ADDRESS)
        quic.set1_host("localhost")
        conn = qa.Connection(quic)
        await conn.do_handshake()
        stream = await conn.open_stream()
        await stream.write(b"before")
        assert await stream.readexactly(6) == b"before"
        assert calls == [], "no write interest without EAGAIN"
        pair.client.congested = True
        await stream.write(b"held back by EAGAIN")
        await asyncio.sleep(0.02)
        assert quic.net_write_desired()
        assert calls == ["add_writer"]
        pair.client.congested = False
        assert await stream.readexactly(19) == b"held back by EAGAIN"
        assert not quic.net_write_desired()
        assert calls == ["add_writer", "remove_writer"]
        await conn.aclose(flags=quicconn.SHUTDOWN_FLAG_RAPID)
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=Spy) as runner:
        runner.run(main())


def test_a_thread_assisted_connection_is_refused(
    pki: CertFiles, aioquic_server: int
) -> None:
    async def main() -> None:
        ctx = quicconn.Context(quicconn.CLIENT_THREAD)
        ctx.load_verify_locations(pki.ca)
        ctx.set_alpn_protos(ALPN)
        with pytest.raises(ValueError, match="thread-assisted"):
            await qa.connect("localhost", aioquic_server, context=ctx)

    run(main())


def test_closing_the_connection_ends_a_waiting_stream_reader(
    pki: CertFiles,
) -> None:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: errors.append(context)
        )
        async with await echo_server(pki) as server:
            conn = await client_of(server, pki)
            reader, writer = await conn.create_stream()
            pending = asyncio.get_running_loop().create_task(reader.read(10))
            await asyncio.sleep(0.02)
            closing = asyncio.get_running_loop().create_task(
                conn.aclose(flags=quicconn.SHUTDOWN_FLAG_RAPID)
            )
            # The close begins at once: the reader learns it then.
            with pytest.raises(quicconn.ConnectionTerminatedError):
                await asyncio.wait_for(pending, 5)
            assert writer.is_closing()
            await closing
            # A pair whose connection is freed under it: ConnectionAbortedError.
            conn = await client_of(server, pki)
            reader, writer = await conn.create_stream()
            pending = asyncio.get_running_loop().create_task(reader.read(10))
            await asyncio.sleep(0.02)
            conn.abort()
            with pytest.raises(ConnectionAbortedError):
                await asyncio.wait_for(pending, 5)

    run(main())
    assert not errors, errors


def test_closing_the_connection_ends_a_waiting_read_with_connection_aborted(
    pki: CertFiles,
) -> None:
    async def main() -> None:
        async with await echo_server(pki) as server:
            conn = await client_of(server, pki)
            stream = await conn.open_stream()
            pending = asyncio.get_running_loop().create_task(stream.read())
            await asyncio.sleep(0.02)
            conn.abort()
            with pytest.raises(ConnectionAbortedError):
                await asyncio.wait_for(pending, 5)
            with pytest.raises(ValueError, match="freed"):
                await stream.read()  # a call after the close: misuse

    run(main())


def test_an_idle_connection_costs_the_loop_almost_nothing(pki: CertFiles) -> None:
    """No busy waiting: with a connection and its server idle on the loop,
    one idle second costs under 50 ms of CPU."""

    async def main() -> float:
        async with await echo_server(pki) as server:
            conn = await client_of(server, pki)
            stream = await conn.open_stream()
            await stream.write(b"settle")
            assert await stream.readexactly(6) == b"settle"
            await asyncio.sleep(0.2)  # the last ACKs and timers settle
            cpu0 = time.process_time()
            await asyncio.sleep(1.0)
            cpu = time.process_time() - cpu0
            await conn.aclose(flags=quicconn.SHUTDOWN_FLAG_RAPID)
            return cpu

    cpu = run(main())
    assert cpu < 0.05, f"an idle second cost {cpu * 1000:.1f} ms of CPU"
