"""quicconn.trio: QUIC streams through trio's own stream conformance
checks, tasks sharing a connection, cancellation, a nursery-run server.

Real UDP on loopback; both ends in one trio run.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import trio.testing

import quicconn
import quicconn.trio as qt
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]


def pattern(n: int, seed: int) -> bytes:
    block = bytes((seed + i) % 251 for i in range(251))
    reps, rest = divmod(n, 251)
    return block * reps + block[:rest]


async def listener_and_client(
    pki: CertFiles, **options: Any
) -> tuple[qt.Listener, qt.Connection, qt.Connection]:
    listener = await qt.open_quic_listener(
        "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN, **options
    )
    port = listener.local_address()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[qt.Connection] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await qt.connect("localhost", port, alpn=ALPN, cafile=pki.ca)
    return listener, client, accepted[0]


def test_a_quic_stream_passes_trios_half_closeable_stream_checks(
    pki: CertFiles,
) -> None:
    async def main() -> None:
        listener, client, server = await listener_and_client(pki)

        async def stream_maker() -> tuple[qt.Stream, qt.Stream]:
            mine = await client.open_stream()
            await mine.send_all(b"!")  # the peer learns of a stream by its data
            theirs = await server.accept_stream()
            assert await theirs.receive_some(1) == b"!"
            return mine, theirs

        await trio.testing.check_half_closeable_stream(stream_maker, None)
        await client.aclose()
        await server.aclose()
        await listener.aclose()

    trio.run(main)


def test_three_streams_written_and_read_by_separate_tasks(pki: CertFiles) -> None:
    size = 1_000_000

    async def echo(stream: qt.Stream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def main() -> tuple[float, float]:
        listener, client, server = await listener_and_client(pki)
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                for _ in range(3):
                    nursery.start_soon(echo, await server.accept_stream())

            nursery.start_soon(serve)
            streams = [await client.open_stream() for _ in range(3)]
            received = [bytearray() for _ in range(3)]

            async def writer(i: int) -> None:
                data = memoryview(pattern(size, i))
                for start in range(0, size, 50_000):
                    await streams[i].send_all(data[start : start + 50_000])
                await streams[i].send_eof()

            async def reader(i: int) -> None:
                while data := await streams[i].receive_some():
                    received[i] += data

            wall0, cpu0 = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as inner:
                for i in range(3):
                    inner.start_soon(writer, i)
                    inner.start_soon(reader, i)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        for i in range(3):
            assert received[i] == pattern(size, i), f"stream {i} differs"
        await client.aclose()
        await server.aclose()
        await listener.aclose()
        return wall, cpu

    wall, cpu = trio.run(main)
    assert wall < 4 * cpu + 1.0, f"{wall:.2f} s wall for {cpu:.2f} s of CPU"


def test_cancelling_a_pending_receive_loses_no_data(pki: CertFiles) -> None:
    total = 200_000

    async def main() -> None:
        listener, client, server = await listener_and_client(pki)
        mine = await client.open_stream()
        await mine.send_all(b"!")
        theirs = await server.accept_stream()
        assert await theirs.receive_some(1) == b"!"
        # A receive that waits, then is cancelled before anything came.
        with trio.move_on_after(0.05) as scope:
            await mine.receive_some()
        assert scope.cancelled_caught
        data = pattern(total, 3)
        got = bytearray()
        cancelled = 0
        async with trio.open_nursery() as nursery:

            async def slow_sender() -> None:
                for start in range(0, total, 1000):
                    await theirs.send_all(data[start : start + 1000])
                    await trio.sleep(0.002)
                await theirs.send_eof()

            nursery.start_soon(slow_sender)
            rng = __import__("random").Random(5)
            while True:
                with trio.move_on_after(rng.uniform(0, 0.003)) as scope:
                    chunk = await mine.receive_some()
                if scope.cancelled_caught:
                    cancelled += 1
                    continue
                if not chunk:
                    break
                got += chunk
        assert got == data
        assert cancelled > 10
        await client.aclose()
        await server.aclose()
        await listener.aclose()

    trio.run(main)


def test_serve_quic_runs_handlers_in_a_nursery(pki: CertFiles) -> None:
    served: list[bytes] = []

    async def handler(conn: qt.Connection) -> None:
        stream = await conn.accept_stream()
        request = await stream.receive_some()
        served.append(request)
        await stream.send_all(request.upper())
        await stream.send_eof()
        with pytest.raises(quicconn.ConnectionTerminatedError):
            await conn.accept_stream()  # until the client closes

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                lambda task_status: qt.serve_quic(
                    handler,
                    "127.0.0.1",
                    0,
                    certfile=pki.cert,
                    keyfile=pki.key,
                    alpn=ALPN,
                    task_status=task_status,
                )
            )
            port = listener.local_address()[1]

            async def one(i: int) -> None:
                async with await qt.connect(
                    "localhost", port, alpn=ALPN, cafile=pki.ca
                ) as conn:
                    stream = await conn.open_stream()
                    await stream.send_all(b"hello %d" % i)
                    await stream.send_eof()
                    reply = bytearray()
                    while data := await stream.receive_some():
                        reply += data
                    assert reply == b"HELLO %d" % i

            async with trio.open_nursery() as clients:
                for i in range(20):
                    clients.start_soon(one, i)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert sorted(served) == sorted(b"hello %d" % i for i in range(20))


def test_a_peer_reset_is_a_broken_resource(pki: CertFiles) -> None:
    async def main() -> None:
        listener, client, server = await listener_and_client(pki)
        mine = await client.open_stream()
        await mine.send_all(b"!")
        theirs = await server.accept_stream()
        await theirs.receive_some()
        theirs.reset(7)
        with pytest.raises(trio.BrokenResourceError) as info:
            await mine.receive_some()
        assert isinstance(info.value.__cause__, quicconn.StreamResetError)
        assert info.value.__cause__.error_code == 7
        await client.aclose()
        await server.aclose()
        await listener.aclose()

    trio.run(main)


def test_closing_the_listener_ends_a_waiting_accept(pki: CertFiles) -> None:
    async def main() -> None:
        listener = await qt.open_quic_listener(
            "127.0.0.1", 0, certfile=pki.cert, keyfile=pki.key, alpn=ALPN
        )
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await listener.accept()

            nursery.start_soon(accept)
            await trio.testing.wait_all_tasks_blocked()
            await listener.aclose()

    trio.run(main)


def test_200_concurrent_connections_in_one_run_against_one_listener(
    pki: CertFiles,
) -> None:
    """200 client connections (200 sockets, a driver task each) and the
    listener's in one trio run, all open at once, each echoing 4 kB of its
    own through a handler the server runs in a nursery."""
    count = 200
    size = 4096

    async def echo(conn: qt.Connection) -> None:
        stream = await conn.accept_stream()
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()
        with pytest.raises(quicconn.ConnectionTerminatedError):
            await conn.accept_stream()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                lambda task_status: qt.serve_quic(
                    echo,
                    "127.0.0.1",
                    0,
                    certfile=pki.cert,
                    keyfile=pki.key,
                    alpn=ALPN,
                    max_pending_connections=count,
                    task_status=task_status,
                )
            )
            port = listener.local_address()[1]
            handshakes = trio.Semaphore(50)
            all_open = trio.Event()
            opened = 0

            async def client(i: int) -> None:
                nonlocal opened
                async with handshakes:
                    conn = await qt.connect("localhost", port, alpn=ALPN, cafile=pki.ca)
                opened += 1
                if opened == count:
                    all_open.set()
                await all_open.wait()
                async with conn:
                    stream = await conn.open_stream()
                    payload = pattern(size, i)
                    await stream.send_all(payload)
                    await stream.send_eof()
                    echoed = bytearray()
                    while data := await stream.receive_some():
                        echoed += data
                    assert echoed == payload, f"client {i}: the echo differs"

            async with trio.open_nursery() as clients:
                for i in range(count):
                    clients.start_soon(client, i)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_closing_the_connection_breaks_a_waiting_receive(pki: CertFiles) -> None:
    async def main() -> None:
        listener, client, server = await listener_and_client(pki)
        mine = await client.open_stream()
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await mine.receive_some()

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            client.abort()
        await server.aclose()
        await listener.aclose()

    trio.run(main)
