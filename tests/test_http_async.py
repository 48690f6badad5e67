"""``httpx.AsyncClient(transport=quicconn.http.AsyncHTTP3Transport(...))``:
HTTP/3 for asynchronous httpx programs, on asyncio (and uvloop) and trio.

Against quicconn's own servers (FileServer, and the EchoServer of
tests/support/http_servers.py whose paths provoke resets, stalls, closes
and concurrency) and against aioquic's example server, on real loopback
sockets.  Run with the default core and with ``QUICCONN_CORE=aioquic``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import quicconn
import quicconn.http
from quicconn.http import FileServer
from quicconn.http._exchange import PAUSE_ABOVE, SEND_AHEAD
from quicconn.http.server import CHUNK_SIZE
from tests.conftest import aioquic_example_server, free_udp_port
from tests.support.certs import CertFiles
from tests.support.cores import Capability, capabilities, core_with
from tests.support.http_servers import EchoServer, random_bytes, serve_files

H3_REQUEST_CANCELLED = 0x10C
MiB = 1024 * 1024
BIG = 6_000_000

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_bytes(b"hello over quic\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "huge.bin").write_bytes(os.urandom(3 * BIG))
    return root


@pytest.fixture(scope="module")
def files(pki: CertFiles, www: Path) -> Iterator[tuple[int, FileServer]]:
    with serve_files(pki, www) as served:
        yield served


@pytest.fixture
def echo(pki: CertFiles) -> Iterator[EchoServer]:
    server = EchoServer(pki)
    yield server
    server.close()


@pytest.fixture
def holding_echo(pki: CertFiles) -> Iterator[EchoServer]:
    """An EchoServer that can leave an upload unread (``/paused``) while the
    connection goes on: see tests/support/http_servers.py."""
    server = EchoServer(pki, core=core_with(Capability.CREDIT_ON_CONSUME))
    yield server
    server.close()


def client(pki: CertFiles, **options: Any) -> httpx.AsyncClient:
    transport = quicconn.http.AsyncHTTP3Transport(verify=str(pki.ca))
    return httpx.AsyncClient(transport=transport, **options)


def url(port: int, path: str) -> str:
    return f"https://localhost:{port}{path}"


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 90)

    asyncio.run(bounded())


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait (without blocking the loop) until a server saw ``condition``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def counted_body(
    count: list[int], chunks: int | None = None, size: int = 64 * 1024
) -> AsyncIterator[bytes]:
    """A request body of ``chunks`` chunks (None: endless), counting what it
    produced in ``count[0]``."""
    sent = 0
    while chunks is None or sent < chunks:
        count[0] += size
        sent += 1
        yield bytes(size)


# -- requests -------------------------------------------------------------------


def test_get_post_404_405_and_a_streamed_download(pki, www, files) -> None:
    port, server = files
    connections = server.stats.connections

    async def main() -> None:
        async with client(pki) as http:
            response = await http.get(url(port, "/hello.txt"))
            assert response.status_code == 200
            assert response.http_version == "HTTP/3"
            assert response.text == "hello over quic\n"
            assert response.headers["content-length"] == "16"
            async with http.stream("GET", url(port, "/big.bin")) as streamed:
                data = b"".join([chunk async for chunk in streamed.aiter_bytes()])
            assert data == (www / "big.bin").read_bytes()
            posted = await http.post(url(port, "/hello.txt"), content=b"hi")
            assert posted.status_code == 405
            assert posted.headers["allow"] == "GET, HEAD"
            assert (await http.get(url(port, "/nope"))).status_code == 404

    run(main)
    assert server.stats.connections == connections + 1  # one, reused


def test_an_async_generator_body_and_trailers(pki, echo) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part {i};".encode()

    async def main() -> None:
        async with client(pki) as http:
            response = await http.post(url(echo.port, "/echo?x=1"), content=parts())
        assert response.status_code == 200
        assert response.content == b"part 0;part 1;part 2;part 3;part 4;"
        digest = hashlib.sha256(response.content).hexdigest().encode()
        assert response.extensions["trailers"] == [(b"x-sha256", digest)]

    run(main)
    (request,) = echo.requests
    assert request.method == "POST" and request.path == "/echo?x=1"
    names = {name for name, _ in request.headers}
    assert b"transfer-encoding" not in names and b"host" not in names


def test_a_large_upload_and_download_stream_both_ways(pki, echo) -> None:
    payload = os.urandom(4 * MiB)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    async def main() -> None:
        async with client(pki) as http:
            request = http.build_request("PUT", url(echo.port, "/up"), content=pieces())
            response = await http.send(request, stream=True)
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
            await response.aclose()
            assert bytes(received) == payload
            digest = hashlib.sha256(payload).hexdigest().encode()
            assert response.extensions["trailers"] == [(b"x-sha256", digest)]

    run(main)


# -- one connection, many streams --------------------------------------------------


def test_fifty_gathered_requests_run_at_once_on_one_connection(pki, echo) -> None:
    # The server answers only once all fifty are waiting at the same time.
    count = 50

    async def main() -> None:
        async with client(pki) as http:
            responses = await asyncio.gather(
                *[http.get(url(echo.port, f"/barrier?n={count}")) for _ in range(count)]
            )
        assert [r.content for r in responses] == [b"together"] * count

    run(main)
    assert {number for number, _ in echo.request_connections} == {1}
    streams = {request.stream_id for _, request in echo.request_connections}
    assert len(streams) == count


def test_more_requests_than_the_stream_limit_wait_for_streams(pki, www) -> None:
    # The server allows 8 concurrent requests; 60 share its one connection.
    with serve_files(pki, www, max_streams_bidi=8) as (port, server):

        async def main() -> None:
            async with client(pki) as http:
                responses = await asyncio.gather(
                    *[http.get(url(port, "/hello.txt")) for _ in range(60)]
                )
            assert {r.text for r in responses} == {"hello over quic\n"}

        run(main)
        assert server.stats.connections == 1 and server.stats.requests == 60


def test_an_unread_body_holds_the_server_back(pki, www, files) -> None:
    port, server = files
    huge = (www / "huge.bin").read_bytes()

    async def main() -> None:
        start = server.stats.bytes_sent
        async with (
            client(pki) as http,
            http.stream("GET", url(port, "/huge.bin")) as response,
        ):
            chunks = response.aiter_raw()
            first = await chunks.__anext__()
            await asyncio.sleep(1.0)  # nobody reads
            taken = server.stats.bytes_sent - start
            rest = b"".join([chunk async for chunk in chunks])
        assert first + rest == huge
        assert taken <= bound < len(huge)

    if Capability.CREDIT_ON_CONSUME in capabilities():
        # The client buffers at most PAUSE_ABOVE plus one read of its 1 MiB
        # stream window; beyond that only the window and the server's 1 MiB
        # send buffer hold data.
        bound = PAUSE_ABOVE + 3 * MiB + CHUNK_SIZE
    else:
        # qh3 (docs/cores.md, "Receive credit"): the connection window
        # bounds what the client holds, about 2 x max_data + 64 KiB, not the
        # stream's; the server's send buffer on top.
        max_data = quicconn.Context(quicconn.CLIENT).max_data
        bound = PAUSE_ABOVE + 2 * max_data + 64 * 1024 + MiB + CHUNK_SIZE

    run(main)


def test_an_upload_the_server_does_not_read_is_held_back(pki, holding_echo) -> None:
    echo = holding_echo
    produced = [0]

    async def main() -> None:
        async with client(pki) as http:
            with pytest.raises(httpx.WriteTimeout, match="took none of the request"):
                await http.post(
                    url(echo.port, "/paused"),
                    content=counted_body(produced),
                    timeout=httpx.Timeout(10, write=1.0),
                )
            # The timed-out upload was cancelled; the connection goes on.
            assert (await http.post(url(echo.port, "/e"), content=b"ok")).text == "ok"

    run(main)
    # The body was pulled no further than the server's 1 MiB receive window,
    # the client's 1 MiB send buffer and SEND_AHEAD allow.
    assert produced[0] <= 2 * MiB + SEND_AHEAD + 2 * 64 * 1024
    echo.wait_for(lambda: H3_REQUEST_CANCELLED in echo.resets.values())


# -- failures -------------------------------------------------------------------


def test_certificates_are_verified_by_default(pki, other_pki, files) -> None:
    port, _ = files

    async def main() -> None:
        default = httpx.AsyncClient(transport=quicconn.http.AsyncHTTP3Transport())
        async with default:  # the system's CAs do not know the test CA
            with pytest.raises(httpx.ConnectError, match="certificate"):
                await default.get(url(port, "/hello.txt"))
        wrong = quicconn.http.AsyncHTTP3Transport(verify=str(other_pki.ca))
        async with httpx.AsyncClient(transport=wrong) as http:
            with pytest.raises(httpx.ConnectError, match="did not verify"):
                await http.get(url(port, "/hello.txt"))
            # Requests sharing one handshake all fail with it.
            failures = await asyncio.gather(
                *[http.get(url(port, "/hello.txt")) for _ in range(5)],
                return_exceptions=True,
            )
            assert all(isinstance(f, httpx.ConnectError) for f in failures)
            assert all("did not verify" in str(f) for f in failures), failures

    run(main)


def test_failures_are_httpx_exceptions_and_the_client_goes_on(pki, echo) -> None:
    silent_port = free_udp_port()

    async def main() -> None:
        async with client(pki) as http:
            with pytest.raises(httpx.UnsupportedProtocol, match="https://"):
                await http.get(f"http://localhost:{echo.port}/")
            with pytest.raises(httpx.ConnectTimeout, match="no response"):
                await http.get(url(silent_port, "/"), timeout=0.5)
            with pytest.raises(httpx.RemoteProtocolError, match="H3_REQUEST_REJECTED"):
                await http.get(url(echo.port, "/reset"))
            quick = httpx.Timeout(10, read=0.5)
            with pytest.raises(httpx.ReadTimeout, match="no response"):
                await http.get(url(echo.port, "/silent"), timeout=quick)
            with pytest.raises(httpx.ReadTimeout):  # the head came, the body not
                await http.get(url(echo.port, "/stall"), timeout=quick)
            assert (await http.post(url(echo.port, "/a"), content=b"1")).text == "1"
            with pytest.raises(httpx.RemoteProtocolError, match="closed by the peer"):
                await http.get(url(echo.port, "/close"))
            # A new connection replaces the closed one.
            assert (await http.post(url(echo.port, "/b"), content=b"2")).text == "2"

    run(main)
    assert echo.connections == 2


def test_a_full_stream_limit_is_a_pool_timeout(pki) -> None:
    server = EchoServer(pki, max_streams_bidi=4)
    try:

        async def main() -> None:
            async with client(pki) as http:
                silent = [
                    asyncio.create_task(http.get(url(server.port, "/silent")))
                    for _ in range(4)
                ]
                await until(lambda: len(server.requests) == 4, "4 requests")
                with pytest.raises(httpx.PoolTimeout, match="no request stream free"):
                    await http.get(
                        url(server.port, "/x"), timeout=httpx.Timeout(10, pool=0.3)
                    )
                for task in silent:
                    task.cancel()
                await asyncio.gather(*silent, return_exceptions=True)

        run(main)
    finally:
        server.close()


# -- cancellation and closing ------------------------------------------------------


def test_a_cancelled_request_resets_its_stream_and_nothing_else(
    pki, holding_echo
) -> None:
    echo = holding_echo
    produced = [0]

    async def main() -> None:
        async with client(pki) as http:
            downloads = [
                asyncio.create_task(
                    http.get(url(echo.port, f"/bytes?n=1500000&seed={i}"))
                )
                for i in range(4)
            ]
            waiting = asyncio.create_task(http.get(url(echo.port, "/silent")))
            uploading = asyncio.create_task(
                http.post(url(echo.port, "/paused"), content=counted_body(produced))
            )
            await until(lambda: len(echo.requests) == 6, "six requests")
            waiting.cancel()
            uploading.cancel()
            for task in (waiting, uploading):
                with pytest.raises(asyncio.CancelledError):
                    await task
            for seed, task in enumerate(downloads):
                assert (await task).content == random_bytes(1_500_000, seed)
            assert (await http.post(url(echo.port, "/e"), content=b"on")).text == "on"

    run(main)
    assert echo.connections == 1
    by_path = {r.path: (n, r.stream_id) for n, r in echo.request_connections}
    # The upload's stream: RESET_STREAM and STOP_SENDING, H3_REQUEST_CANCELLED.
    upload = by_path["/paused"]
    echo.wait_for(lambda: echo.resets.get(upload) == H3_REQUEST_CANCELLED)
    echo.wait_for(lambda: echo.stops.get(upload) == H3_REQUEST_CANCELLED)
    # The GET had sent all it had: STOP_SENDING only.
    silent = by_path["/silent"]
    echo.wait_for(lambda: echo.stops.get(silent) == H3_REQUEST_CANCELLED)
    assert silent not in echo.resets
    # Nothing else was touched.
    cancelled = {upload, silent}
    assert set(echo.resets) | set(echo.stops) == cancelled


def test_a_task_cancelled_while_reading_a_body_resets_that_stream(pki, echo) -> None:
    async def main() -> None:
        async with client(pki) as http:
            reading = asyncio.Event()

            async def reader() -> None:
                target = url(echo.port, "/bytes?n=3000000&seed=8")
                async with http.stream("GET", target) as response:
                    async for _ in response.aiter_raw():
                        reading.set()
                        await asyncio.sleep(30)  # a slow consumer

            task = asyncio.create_task(reader())
            await reading.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # A body left unread when its response closes: cancelled too.
            async with http.stream(
                "GET", url(echo.port, "/bytes?n=3000000&seed=9")
            ) as r:
                await r.aiter_raw().__anext__()
            whole = await http.get(url(echo.port, "/bytes?n=3000000&seed=10"))
            assert whole.content == random_bytes(3_000_000, 10)

    run(main)
    assert echo.connections == 1
    streams = {r.path[-6:]: (n, r.stream_id) for n, r in echo.request_connections}
    for seed in ("seed=8", "seed=9"):
        echo.wait_for(lambda s=seed: echo.stops.get(streams[s]) == H3_REQUEST_CANCELLED)
    assert streams["eed=10"] not in echo.stops


def test_closing_the_client_closes_the_connection(pki, echo) -> None:
    async def main() -> None:
        transport = quicconn.http.AsyncHTTP3Transport(verify=str(pki.ca))
        async with httpx.AsyncClient(transport=transport) as http:
            assert (await http.post(url(echo.port, "/e"), content=b"x")).text == "x"
        with pytest.raises(RuntimeError, match="closed"):
            await httpx.AsyncClient(transport=transport).get(url(echo.port, "/"))

    run(main)
    echo.wait_for(lambda: len(echo.closes) == 1)
    (close,) = echo.closes
    assert not close.is_local and not close.is_transport and close.error_code == 0


def test_a_transport_serves_one_asyncio_run_after_another(pki, echo) -> None:
    transport = quicconn.http.AsyncHTTP3Transport(verify=str(pki.ca))
    http = httpx.AsyncClient(transport=transport)

    async def one(body: bytes) -> None:
        assert (await http.post(url(echo.port, "/e"), content=body)).content == body

    asyncio.run(one(b"first loop"))
    asyncio.run(one(b"second loop"))  # a new connection, for the new loop
    asyncio.run(http.aclose())
    assert echo.connections == 2


def test_uvloop(pki, files) -> None:
    uvloop = pytest.importorskip("uvloop")
    port, _ = files

    async def main() -> None:
        async with client(pki) as http:
            responses = await asyncio.gather(
                *[http.get(url(port, "/hello.txt")) for _ in range(10)]
            )
        assert {r.text for r in responses} == {"hello over quic\n"}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# -- trio ------------------------------------------------------------------------


class TestTrio:
    @pytest.fixture(autouse=True)
    def _trio(self) -> None:
        pytest.importorskip("trio")

    def test_get_post_gather_and_errors(self, pki, echo) -> None:
        import trio

        async def main() -> None:
            async with client(pki) as http:
                got = await http.post(url(echo.port, "/e"), content=b"trio")
                assert got.text == "trio" and got.http_version == "HTTP/3"
                results: list[bytes] = []

                async def one() -> None:
                    response = await http.get(url(echo.port, "/barrier?n=20"))
                    results.append(response.content)

                async with trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(one)
                assert results == [b"together"] * 20
                with pytest.raises(httpx.RemoteProtocolError, match="REJECTED"):
                    await http.get(url(echo.port, "/reset"))
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(
                        url(echo.port, "/silent"), timeout=httpx.Timeout(5, read=0.3)
                    )

        trio.run(main)
        assert echo.connections == 1

    def test_cancelling_a_request_resets_its_stream(self, pki, holding_echo) -> None:
        echo = holding_echo
        import trio

        produced = [0]

        async def main() -> None:
            async with client(pki) as http:
                with trio.move_on_after(0.5):
                    await http.post(
                        url(echo.port, "/paused"), content=counted_body(produced)
                    )
                body = random_bytes(500_000, 3)
                response = await http.get(url(echo.port, "/bytes?n=500000&seed=3"))
                assert response.content == body

        trio.run(main)
        (number, request) = echo.request_connections[0]
        key = (number, request.stream_id)
        echo.wait_for(lambda: echo.resets.get(key) == H3_REQUEST_CANCELLED)


# -- aioquic's example server --------------------------------------------------------


@pytest.mark.peer
class TestAgainstAioquicExampleServer:
    @pytest.fixture(scope="class")
    def example(self, pki: CertFiles, www: Path) -> Iterator[int]:
        with aioquic_example_server(pki, www) as port:
            yield port

    def test_get_post_and_fifty_at_once(self, pki, www, example) -> None:
        payload = os.urandom(300_000)

        async def main() -> None:
            async with client(pki) as http:
                big = await http.get(url(example, "/big.bin"))
                assert big.status_code == 200 and big.http_version == "HTTP/3"
                assert big.content == (www / "big.bin").read_bytes()

                async def pieces() -> AsyncIterator[bytes]:
                    for start in range(0, len(payload), 30_000):
                        yield payload[start : start + 30_000]

                echoed = await http.post(
                    url(example, "/echo"),
                    content=pieces(),
                    headers={"content-type": "application/octet-stream"},
                )
                assert echoed.content == payload
                assert echoed.headers["content-type"] == "application/octet-stream"
                sizes = [1000 + 7 * i for i in range(50)]
                padded = await asyncio.gather(
                    *[http.get(url(example, f"/{size}")) for size in sizes]
                )
                assert [r.content for r in padded] == [b"Z" * s for s in sizes]
                assert len(transport_clients(http)) == 1

        run(main)

    def test_cancelling_a_download_midway(self, pki, www, example) -> None:
        async def main() -> None:
            async with client(pki) as http:
                async with http.stream("GET", url(example, "/huge.bin")) as response:
                    await response.aiter_raw().__anext__()
                # The cancelled stream is gone; the connection carries on.
                small = await http.get(url(example, "/hello.txt"))
                assert small.text == "hello over quic\n"

        run(main)


def transport_clients(http: httpx.AsyncClient) -> dict[Any, Any]:
    transport = http._transport  # the test peeks at the connections kept
    assert isinstance(transport, quicconn.http.AsyncHTTP3Transport)
    return transport._clients
