"""HTTP/3 and hq-interop on quicconn: the file server, the client and the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import quicconn
from quicconn.http import ClientOptions, FileServer, HttpClient, resolve_request_path
from tests.conftest import aioquic_example_server
from tests.support.certs import CertFiles

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    port: int
    root: Path
    secret: Path
    server: FileServer


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("http")
    root = base / "www"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello over quic\n")
    (root / "sub" / "nested.txt").write_bytes(b"nested\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "random.bin").write_bytes(os.urandom(1_500_000))
    for i in range(60):
        (root / f"f{i}.txt").write_bytes(f"file {i}\n".encode() * (i + 1))
    secret = base / "secret.txt"
    secret.write_bytes(b"outside the root\n")
    (root / "link-out").symlink_to(secret)
    (root / "link-in").symlink_to(root / "hello.txt")
    (root / "%2e%2e").write_bytes(b"a file literally named %2e%2e\n")
    return root, secret


@pytest.fixture(scope="module")
def served(pki: CertFiles, www: tuple[Path, Path]) -> Iterator[Served]:
    root, secret = www
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3", "hq-interop"]
    )
    server = FileServer(listener, root)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    yield Served(listener.local_address()[1], root, secret, server)
    stop.set()
    thread.join(5)
    server.close()
    listener.free()


def fetch(pki: CertFiles, port: int, paths: list[str], alpn: str = "h3"):
    options = ClientOptions(alpn=alpn, cafile=str(pki.ca), stall_timeout=10)
    with HttpClient("localhost", port, options) as client:
        return client.fetch(paths)


class TestPathConfinement:
    @pytest.mark.parametrize(
        "target",
        [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/sub%2f..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/link-out",
            "//etc/passwd",
            "/etc/passwd",
            "/hello.txt%00.png",
            "/sub",
            "/",
            "hello.txt",
            "/%ff%fe",
        ],
    )
    def test_escapes_and_non_files_are_refused(self, www, target):
        root, _ = www
        assert resolve_request_path(root, target) is None

    @pytest.mark.parametrize(
        ("target", "name"),
        [
            ("/hello.txt", "hello.txt"),
            ("/./sub/nested.txt", "nested.txt"),
            ("/sub//nested.txt", "nested.txt"),
            ("/hello.txt?x=1#frag", "hello.txt"),
            ("/link-in", "hello.txt"),
            ("/%252e%252e", "%2e%2e"),  # decoded once: a literal file name
        ],
    )
    def test_plain_paths_resolve_inside_the_root(self, www, target, name):
        root, _ = www
        resolved = resolve_request_path(root, target)
        assert resolved is not None and resolved.name == name
        assert resolved.is_relative_to(root.resolve())

    @pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
    def test_escapes_over_the_wire_get_404_and_no_bytes_of_the_secret(
        self, pki, served, alpn
    ):
        attacks = [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/link-out",
            "/sub/../../secret.txt",
        ]
        for download in fetch(pki, served.port, attacks, alpn):
            assert served.secret.read_bytes() not in bytes(download.body)
            assert not download.ok
            if alpn == "h3":
                assert download.status == 404
            else:  # HTTP/0.9 has no status: the stream is reset instead
                assert "stream reset by the server (H3_REQUEST_REJECTED, 0x10b)" in (
                    download.error or ""
                )


class TestTransfers:
    @pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
    def test_files_arrive_intact(self, pki, served, alpn):
        paths = ["/hello.txt", "/random.bin", "/sub/nested.txt", "/empty.txt"]
        downloads = fetch(pki, served.port, paths, alpn)
        for path, download in zip(paths, downloads, strict=True):
            assert download.ok, (path, download.error)
            assert bytes(download.body) == (served.root / path.lstrip("/")).read_bytes()
            if alpn == "h3":
                assert download.status == 200

    @pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
    def test_sixty_requests_multiplexed_on_one_connection(self, pki, served, alpn):
        paths = [f"/f{i}.txt" for i in range(60)]
        options = ClientOptions(alpn=alpn, cafile=str(pki.ca))
        with HttpClient("localhost", served.port, options) as client:
            downloads = client.fetch(paths)
            streams = {d.stream_id for d in downloads}
        assert len(streams) == 60
        for i, download in enumerate(downloads):
            assert bytes(download.body) == f"file {i}\n".encode() * (i + 1)

    @pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
    def test_many_small_answers_share_packets(self, pki, served, alpn):
        # Answers written in one tick go out in one send pass: far fewer
        # datagrams than responses (not one or two small packets each).
        transport = served.server.listener._reactor.transport
        before = transport.datagrams_sent
        paths = [f"/f{i}.txt" for i in range(60)]
        downloads = fetch(pki, served.port, paths, alpn)
        assert all(d.ok for d in downloads)
        assert transport.datagrams_sent - before < len(paths)

    def test_saving_to_files(self, pki, served, tmp_path):
        options = ClientOptions(cafile=str(pki.ca))
        with HttpClient("localhost", served.port, options) as client:
            client.fetch(["/random.bin", "/empty.txt"], output_dir=tmp_path)
        assert (tmp_path / "random.bin").read_bytes() == (
            served.root / "random.bin"
        ).read_bytes()
        assert (tmp_path / "empty.txt").read_bytes() == b""

    def test_saving_a_file_whose_name_is_250_characters(self, pki, served, tmp_path):
        # The interop runner's zerortt and amplificationlimit files have such
        # names: the download's temporary name must fit in 255 bytes too.
        name = "n" * 250
        (served.root / name).write_bytes(b"long name\n")
        options = ClientOptions(cafile=str(pki.ca))
        with HttpClient("localhost", served.port, options) as client:
            (download,) = client.fetch([f"/{name}"], output_dir=tmp_path)
        assert download.ok, download.error
        assert (tmp_path / name).read_bytes() == b"long name\n"
        assert [p.name for p in tmp_path.iterdir()] == [name]


def raw_h3_connection(pki: CertFiles, port: int) -> quicconn.Connection:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(["h3"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn._owns_socket = True
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("localhost")
    conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
    conn.connect()
    return conn


def wait_for_close(
    conn: quicconn.Connection, limit: float = 5.0
) -> quicconn.ConnCloseInfo:
    deadline = time.monotonic() + limit
    conn.set_blocking_mode(False)
    while conn.get_conn_close_info() is None and time.monotonic() < deadline:
        conn.handle_events()
        time.sleep(0.005)
    info = conn.get_conn_close_info()
    assert info is not None, "the server did not close the connection"
    return info


class TestMalformedInput:
    H3_FRAME_UNEXPECTED = 0x105
    H3_MISSING_SETTINGS = 0x10A
    QPACK_DECOMPRESSION_FAILED = 0x200

    @pytest.mark.parametrize(
        ("uni", "payload", "code"),
        [
            # DATA before HEADERS on a request stream
            (False, bytes([0x00, 0x03]) + b"abc", H3_FRAME_UNEXPECTED),
            # HEADERS whose field section is not valid QPACK
            (
                False,
                bytes([0x01, 0x04, 0xFF, 0xFF, 0xFF, 0xFF]),
                QPACK_DECOMPRESSION_FAILED,
            ),
            # a control stream (type 0x00) that starts with DATA, not SETTINGS
            (True, bytes([0x00, 0x00, 0x02]) + b"xy", H3_MISSING_SETTINGS),
        ],
        ids=["data-before-headers", "bad-qpack", "control-without-settings"],
    )
    def test_a_connection_error_with_the_right_code_and_the_server_lives_on(
        self, pki, served, uni, payload, code
    ):
        conn = raw_h3_connection(pki, served.port)
        stream = conn.new_stream(quicconn.STREAM_FLAG_UNI if uni else 0)
        stream.write_ex2(payload, 0 if uni else quicconn.WRITE_FLAG_CONCLUDE)
        info = wait_for_close(conn)
        assert not info.is_local and info.error_code == code
        conn.free()
        # the server is unharmed: a well-behaved client is served
        (download,) = fetch(pki, served.port, ["/hello.txt"])
        assert download.ok and bytes(download.body) == b"hello over quic\n"

    def test_garbage_hq_request_line_resets_only_that_stream(self, pki, served):
        ctx = quicconn.Context(quicconn.CLIENT)
        ctx.load_verify_locations(pki.ca)
        ctx.set_alpn_protos(["hq-interop"])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn = quicconn.Connection(ctx)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", served.port))
        conn.set1_host("localhost")
        conn.write_ex2(b"\x00\xffNOT HTTP\r\n", quicconn.WRITE_FLAG_CONCLUDE)
        with pytest.raises(quicconn.StreamResetError):
            conn.read()
        assert conn.get_conn_close_info() is None  # the connection itself is fine
        conn.shutdown()
        conn.free()
        sock.close()


@pytest.fixture(scope="module")
def example_server(pki: CertFiles, www: tuple[Path, Path]) -> Iterator[int]:
    with aioquic_example_server(pki, www[0]) as port:
        yield port


@pytest.mark.peer
class TestAgainstAioquicExampleServer:
    @pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
    def test_files_arrive_intact(self, pki, www, example_server, alpn):
        root, _ = www
        paths = ["/hello.txt", "/random.bin", "/sub/nested.txt"]
        downloads = fetch(pki, example_server, paths, alpn)
        for path, download in zip(paths, downloads, strict=True):
            assert download.ok, (path, download.error)
            assert bytes(download.body) == (root / path.lstrip("/")).read_bytes()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "quicconn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class TestCommand:
    def test_get_saves_files_and_summarises(self, pki, served, tmp_path):
        base = f"https://localhost:{served.port}"
        result = run_cli(
            "get",
            f"{base}/random.bin",
            f"{base}/sub/nested.txt",
            "-o",
            str(tmp_path),
            "--ca",
            str(pki.ca),
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "random.bin").read_bytes() == (
            served.root / "random.bin"
        ).read_bytes()
        assert (tmp_path / "sub" / "nested.txt").read_bytes() == b"nested\n"
        assert "2/2 files" in result.stderr and "handshake" in result.stderr

    def test_get_to_stdout(self, pki, served):
        result = run_cli(
            "get",
            f"https://localhost:{served.port}/hello.txt",
            "--ca",
            str(pki.ca),
            "--alpn",
            "hq-interop",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hello over quic\n"

    def test_resume_then_zero_rtt(self, pki, served, tmp_path):
        url = f"https://localhost:{served.port}/hello.txt"
        ticket = tmp_path / "session.json"
        first = run_cli("get", url, "--ca", str(pki.ca), "--resume", str(ticket))
        assert first.returncode == 0, first.stderr
        assert ticket.exists() and "session resumed" not in first.stderr
        second = run_cli(
            "get", url, "--ca", str(pki.ca), "--resume", str(ticket), "--0rtt"
        )
        assert second.returncode == 0, second.stderr
        assert "session resumed" in second.stderr and "0-RTT accepted" in second.stderr
        assert second.stdout == "hello over quic\n"

    def test_wrong_ca_is_a_clear_error(self, other_pki, served):
        result = run_cli(
            "get",
            f"https://localhost:{served.port}/hello.txt",
            "--ca",
            str(other_pki.ca),
        )
        assert result.returncode == 1
        assert "certificate verification failed" in result.stderr
        assert "Traceback" not in result.stderr

    def test_usage_errors(self, tmp_path):
        result = run_cli("get", "http://example.com/x")
        assert result.returncode == 2 and "https://" in result.stderr
        result = run_cli("get", "https://a/1", "https://a/2")
        assert result.returncode == 2 and "-o DIR" in result.stderr
        result = run_cli("get", "https://a/1", "--0rtt")
        assert result.returncode == 2 and "--resume" in result.stderr
        result = run_cli("serve", str(tmp_path / "missing"))
        assert result.returncode == 2 and "not a directory" in result.stderr

    def test_get_from_a_stalling_server_times_out_clearly(self, pki):
        """The server completes handshakes but never answers a request."""
        listener = quicconn.listen(
            ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3"]
        )
        listener.set_blocking_mode(False)
        stop = threading.Event()

        def stall() -> None:
            while not stop.is_set():
                listener.handle_events()
                listener.accept_connection()  # accept, then ignore
                stop.wait(0.01)

        thread = threading.Thread(target=stall, daemon=True)
        thread.start()
        try:
            started = time.monotonic()
            result = run_cli(
                "get",
                f"https://localhost:{listener.local_address()[1]}/x",
                "--ca",
                str(pki.ca),
                "--timeout",
                "1",
            )
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            thread.join(5)
            listener.free()
        assert result.returncode == 1
        assert "timed out" in result.stderr and "no response" in result.stderr
        assert "Traceback" not in result.stderr
        assert elapsed < 15

    def test_serve_command_serves_a_directory(self, pki, www):
        root, _ = www
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quicconn",
                "serve",
                str(root),
                "--port",
                str(port),
                "--cert",
                str(pki.cert),
                "--key",
                str(pki.key),
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert proc.stderr is not None
            assert "serving" in proc.stderr.readline()
            (download,) = fetch(pki, port, ["/hello.txt"])
            assert bytes(download.body) == b"hello over quic\n"
        finally:
            proc.terminate()
            proc.wait(10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
