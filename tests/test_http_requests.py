"""quicconn.http's requests: any method, headers, bodies, trailers, streaming,
and the httpx transport, against quicconn's own servers (FileServer, the
``quicconn serve`` command) and aioquic's example server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import quicconn
from quicconn.http import (
    ClientOptions,
    FileServer,
    HttpClient,
    RequestError,
)
from quicconn.http._exchange import PAUSE_ABOVE
from tests.conftest import aioquic_example_server, free_udp_port
from tests.support.certs import CertFiles
from tests.support.cores import Capability, core_with
from tests.support.http_servers import EchoServer

ROOT = Path(__file__).resolve().parent.parent
BIG = 6_000_000


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_bytes(b"hello over quic\n")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    return root


@pytest.fixture(scope="module")
def file_server(pki: CertFiles, www: Path) -> Iterator[int]:
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3", "hq-interop"]
    )
    server = FileServer(listener, www)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    yield listener.local_address()[1]
    stop.set()
    thread.join(5)
    server.close()
    listener.free()


@pytest.fixture(scope="module")
def serve_command(pki: CertFiles, www: Path) -> Iterator[int]:
    """``quicconn serve`` as a user runs it."""
    port = free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quicconn",
            "serve",
            str(www),
            "--port",
            str(port),
            "--cert",
            str(pki.cert),
            "--key",
            str(pki.key),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stderr is not None
    assert "serving" in proc.stderr.readline()
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def echo_server(pki: CertFiles) -> Iterator[EchoServer]:
    server = EchoServer(pki)
    yield server
    server.close()


def client_for(pki: CertFiles, port: int, alpn: str = "h3") -> HttpClient:
    return HttpClient("localhost", port, ClientOptions(alpn=alpn, cafile=str(pki.ca)))


# -- HttpClient.request --------------------------------------------------------


class TestRequests:
    def test_get_gives_status_headers_and_body(self, pki, file_server):
        with client_for(pki, file_server) as client:
            response = client.request("GET", "/hello.txt", [(b"accept", b"text/plain")])
            assert response.status == 200
            assert (b"content-length", b"16") in response.headers
            assert response.content_length == 16
            assert response.http_version == "HTTP/3"
            assert response.read() == b"hello over quic\n"

    def test_a_404_and_then_a_file_on_one_connection(self, pki, file_server):
        # (No HEAD here: aioquic's HTTP/3 codec, which the aioquic core
        # provides, checks a HEAD response's content-length against its
        # empty body and closes the connection; see docs/http.md.)
        with client_for(pki, file_server) as client:
            missing = client.request("GET", "/nope")
            assert missing.status == 404 and missing.read() == b"not found\n"
            found = client.request("GET", "/big.bin")
            assert found.status == 200 and found.content_length == BIG
            assert len(found.read()) == BIG

    def test_post_to_a_file_server_is_405_with_allow(self, pki, file_server):
        with client_for(pki, file_server) as client:
            response = client.request("POST", "/hello.txt", body=b"x" * 100_000)
            assert response.status == 405
            assert dict(response.headers)[b"allow"] == b"GET, HEAD"
            response.read()
            # The connection is still good for the next request.
            assert client.request("GET", "/hello.txt").read() == b"hello over quic\n"

    def test_hq_interop_get_has_no_head(self, pki, file_server):
        with client_for(pki, file_server, "hq-interop") as client:
            response = client.request("GET", "/hello.txt")
            assert response.status is None and response.headers == []
            assert response.http_version == "HTTP/0.9"
            assert response.read() == b"hello over quic\n"
            with pytest.raises(ValueError, match="bare GET"):
                client.request("POST", "/x", body=b"no")

    def test_a_missing_file_over_hq_is_a_request_error(self, pki, file_server):
        with client_for(pki, file_server, "hq-interop") as client:
            response = client.request("GET", "/nope")
            with pytest.raises(RequestError, match="0x10b") as caught:
                response.read()
            assert caught.value.error_code == 0x10B

    def test_body_headers_and_trailers_both_ways(self, pki, echo_server):
        chunks = [os.urandom(100_000) for _ in range(10)]
        body = b"".join(chunks)
        with client_for(pki, echo_server.port) as client:
            response = client.request(
                "PUT",
                "/upload",
                [(b"content-type", b"application/octet-stream")],
                iter(chunks),
                trailers=[(b"x-parts", b"10")],
            )
            assert response.status == 200
            assert (b"x-request-x-parts", b"10") in response.headers
            assert response.trailers == []  # not yet: the body comes first
            assert response.read() == body
            digest = hashlib.sha256(body).hexdigest().encode()
            assert response.trailers == [(b"x-sha256", digest)]
        (request,) = echo_server.requests
        assert request.method == "PUT" and request.path == "/upload"
        assert (b"content-type", b"application/octet-stream") in request.headers

    def test_a_body_read_slowly_holds_the_server_back(self, pki, file_server, www):
        with client_for(pki, file_server) as client:
            response = client.request("GET", "/big.bin")
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # nobody reads the body
                client._pump()
                time.sleep(0.005)
            # Reading stopped past PAUSE_ABOVE; the read that crossed it took
            # at most one stream receive window, and the server, out of
            # credit, sent at most one more window into the stream's buffer.
            window = quicconn.Context(quicconn.CLIENT).max_stream_data
            assert response._exchange.paused
            assert response._exchange.buffered <= PAUSE_ABOVE + window
            assert response._exchange.received < BIG / 2
            assert response.read() == (www / "big.bin").read_bytes()

    def test_closing_an_unread_response_cancels_it_and_the_connection_goes_on(
        self, pki, file_server
    ):
        with client_for(pki, file_server) as client:
            response = client.request("GET", "/big.bin")
            next(response.iter_bytes())
            response.close()
            assert client.request("GET", "/hello.txt").read() == b"hello over quic\n"
            assert client.session is not None
            assert response.stream_id not in client.session.streams


# -- the httpx transport ------------------------------------------------------


def httpx_client(pki: CertFiles) -> httpx.Client:
    return httpx.Client(transport=quicconn.http.HTTP3Transport(verify=str(pki.ca)))


@pytest.mark.parametrize("server", ["FileServer", "quicconn serve"])
def test_httpx_get_and_post_through_the_transport(
    pki, www, file_server, serve_command, server
):
    port = file_server if server == "FileServer" else serve_command
    with httpx_client(pki) as client:
        response = client.get(f"https://localhost:{port}/hello.txt")
        assert response.status_code == 200
        assert response.http_version == "HTTP/3"
        assert response.text == "hello over quic\n"
        assert response.headers["content-length"] == "16"
        with client.stream("GET", f"https://localhost:{port}/big.bin") as streamed:
            data = b"".join(streamed.iter_bytes())
        assert data == (www / "big.bin").read_bytes()
        posted = client.post(f"https://localhost:{port}/hello.txt", content=b"hi")
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        assert client.get(f"https://localhost:{port}/nope").status_code == 404


def test_httpx_sees_trailers_and_streams_a_generator_body(pki, echo_server):
    def body() -> Iterator[bytes]:
        for i in range(5):
            yield f"part {i};".encode()

    with httpx_client(pki) as client:
        response = client.post(
            f"https://localhost:{echo_server.port}/echo?x=1", content=body()
        )
    assert response.status_code == 200
    assert response.content == b"part 0;part 1;part 2;part 3;part 4;"
    digest = hashlib.sha256(response.content).hexdigest().encode()
    assert response.extensions["trailers"] == [(b"x-sha256", digest)]
    (request,) = echo_server.requests
    assert request.path == "/echo?x=1"
    names = {name for name, _ in request.headers}
    assert b"transfer-encoding" not in names and b"host" not in names


def test_httpx_errors_are_httpx_exceptions(pki, other_pki, file_server):
    transport = quicconn.http.HTTP3Transport(verify=str(other_pki.ca))
    wrong = httpx.Client(transport=transport)
    with wrong, pytest.raises(httpx.ConnectError, match="certificate"):
        wrong.get(f"https://localhost:{file_server}/hello.txt")
    with httpx_client(pki) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            client.get(f"http://localhost:{file_server}/hello.txt")
        silent = free_udp_port()
        with pytest.raises(httpx.ConnectTimeout):
            client.get(f"https://localhost:{silent}/", timeout=0.5)


def test_httpx_timeouts_by_phase_and_resets(pki):
    # The same phases as AsyncHTTP3Transport (tests/test_http_async.py).  The
    # server leaves an upload unread while the connection goes on: see
    # tests/support/http_servers.py for why that needs CREDIT_ON_CONSUME.
    echo_server = EchoServer(pki, core=core_with(Capability.CREDIT_ON_CONSUME))
    try:
        _timeouts_by_phase_and_resets(pki, echo_server)
    finally:
        echo_server.close()


def _timeouts_by_phase_and_resets(pki: CertFiles, echo_server: EchoServer) -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            yield bytes(65536)

    base = f"https://localhost:{echo_server.port}"
    with httpx_client(pki) as client:
        with pytest.raises(httpx.WriteTimeout, match="took none of the request"):
            client.post(
                f"{base}/paused", content=endless(), timeout=httpx.Timeout(10, write=1)
            )
        assert produced <= 2 * 1024 * 1024 + 256 * 1024 + 2 * 65536
        with pytest.raises(httpx.ReadTimeout, match="no response"):
            client.get(f"{base}/silent", timeout=httpx.Timeout(10, read=0.5))
        with pytest.raises(httpx.RemoteProtocolError, match="H3_REQUEST_REJECTED"):
            client.get(f"{base}/reset")
        assert client.post(f"{base}/e", content=b"still here").text == "still here"
    assert echo_server.connections == 1
    paused = next((n, r.stream_id) for n, r in echo_server.request_connections)
    echo_server.wait_for(lambda: echo_server.resets.get(paused) == 0x10C)


@pytest.mark.peer
class TestAgainstAioquicExampleServer:
    @pytest.fixture(scope="class")
    def example(self, pki: CertFiles, www: Path) -> Iterator[int]:
        with aioquic_example_server(pki, www) as port:
            yield port

    def test_httpx_get(self, pki, www, example):
        with httpx_client(pki) as client:
            response = client.get(f"https://localhost:{example}/big.bin")
        assert response.status_code == 200 and response.http_version == "HTTP/3"
        assert response.content == (www / "big.bin").read_bytes()

    def test_httpx_post_is_echoed(self, pki, example):
        payload = os.urandom(300_000)
        with httpx_client(pki) as client:
            response = client.post(
                f"https://localhost:{example}/echo",
                content=payload,
                headers={"content-type": "application/octet-stream"},
            )
        assert response.status_code == 200
        assert response.content == payload
        assert response.headers["content-type"] == "application/octet-stream"

    def test_request_api_get_and_post(self, pki, example):
        with client_for(pki, example) as client:
            page = client.request("GET", "/")
            assert page.status == 200 and b"aioquic" in page.read()
            echoed = client.request(
                "POST",
                "/echo",
                [(b"content-type", b"text/plain")],
                [b"one ", b"two"],
            )
            assert echoed.status == 200 and echoed.read() == b"one two"
