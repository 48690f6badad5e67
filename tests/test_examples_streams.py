"""The stream examples, run as programs: the poll-driven server and the
multi-stream client (ports of OpenSSL's quic-server-ssl-poll-http.c and
quic-multi-stream.c)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import quicconn as q
from tests.conftest import ROOT, peer_process
from tests.support.certs import CertFiles

EXAMPLES = ROOT / "examples"
ENV = {"PYTHONPATH": str(ROOT)}


def body(index: int) -> bytes:
    size = 100 + (index * 4099) % 40_000
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{index}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docroot")
    (root / "request1.html").write_bytes(b"<p>first response</p>\n")
    (root / "request2.html").write_bytes(b"<p>second response</p>\n")
    for i in range(20):
        (root / f"f{i}.bin").write_bytes(body(i))
    (root.parent / "secret.txt").write_bytes(b"outside the document root")
    return root


def _server(pki: CertFiles, *extra: str) -> Iterator[int]:
    args = [
        sys.executable,
        str(EXAMPLES / "quic-server-ssl-poll-http.py"),
        *extra,
        "0",
        str(pki.cert),
        str(pki.key),
    ]
    with peer_process(args, ready_prefix="listening on", env=ENV) as (_, line):
        yield int(line.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def poll_server(pki: CertFiles, docroot: Path) -> Iterator[int]:
    yield from _server(pki, "--docroot", str(docroot))


def hq_client(pki: CertFiles, port: int) -> tuple[q.Connection, socket.socket]:
    ctx = q.Context(q.CLIENT)
    ctx.load_verify_locations(str(pki.ca))
    ctx.set_alpn_protos(["hq-interop"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = q.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("127.0.0.1")
    conn.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    conn.connect()
    return conn, sock


def get(conn: q.Connection, path: str) -> bytes:
    stream = conn.new_stream()
    try:
        stream.write_ex2(f"GET {path}\r\n".encode(), q.WRITE_FLAG_CONCLUDE)
        data = bytearray()
        while True:
            try:
                data += stream.read(65536)
            except q.ZeroReturnError:
                return bytes(data)
    finally:
        stream.free()


def test_multi_stream_demo_reads_both_responses(
    pki: CertFiles, poll_server: int
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "quic-multi-stream.py"),
            "--cafile",
            str(pki.ca),
            "127.0.0.1",
            str(poll_server),
        ],
        capture_output=True,
        timeout=30,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.decode()
    first, _, second = out.partition("Stream 3 data:")
    assert first.startswith("Stream 1 data:\nHTTP/1.0 200 OK")
    assert "<p>first response</p>" in first
    assert "HTTP/1.0 200 OK" in second and "<p>second response</p>" in second


def test_poll_server_serves_parallel_gets_on_several_connections(
    pki: CertFiles, poll_server: int
) -> None:
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            conn, sock = hq_client(pki, poll_server)
            try:
                results: dict[int, bytes] = {}

                def fetch(i: int) -> None:
                    results[i] = get(conn, f"/f{i}.bin")

                threads = [threading.Thread(target=fetch, args=(i,)) for i in range(20)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                for i in range(20):
                    assert results.get(i) == body(i), f"client {n}: /f{i}.bin differs"
                assert conn.shutdown(q.SHUTDOWN_FLAG_RAPID) is False  # closing
                assert conn.get_conn_close_info() is not None
            finally:
                conn.free()
                sock.close()
        except BaseException as exc:
            errors.append(exc)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    assert not any(t.is_alive() for t in clients)
    if errors:
        raise errors[0]


def test_poll_server_answers_a_uni_request_on_a_server_uni_stream(
    pki: CertFiles, poll_server: int
) -> None:
    conn, sock = hq_client(pki, poll_server)
    try:
        request = conn.new_stream(q.STREAM_FLAG_UNI)
        request.write_ex2(b"GET /f3.bin\r\n", q.WRITE_FLAG_CONCLUDE)
        reply = conn.accept_stream()
        assert reply is not None
        assert reply.get_stream_type() == q.STREAM_TYPE_READ
        data = bytearray()
        while True:
            try:
                data += reply.read()
            except q.ZeroReturnError:
                break
        assert bytes(data) == body(3)
    finally:
        conn.free()
        sock.close()


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/nonexistent",
        "/f1.bin/../../secret.txt",
    ],
)
def test_poll_server_never_serves_outside_its_docroot(
    pki: CertFiles, poll_server: int, path: str
) -> None:
    conn, sock = hq_client(pki, poll_server)
    try:
        with pytest.raises(q.StreamResetError) as caught:
            get(conn, path)
        assert caught.value.error_code == 1  # NOT_FOUND in the example
        assert get(conn, "/f0.bin") == body(0), "the connection still works"
    finally:
        conn.free()
        sock.close()


def test_poll_server_resets_a_request_it_cannot_parse(
    pki: CertFiles, poll_server: int
) -> None:
    conn, sock = hq_client(pki, poll_server)
    try:
        with pytest.raises(q.StreamResetError) as caught:
            get(conn, "nonsense")
        assert caught.value.error_code == 2
    finally:
        conn.free()
        sock.close()


def test_poll_server_without_docroot_makes_up_bodies_like_the_c_demo(
    pki: CertFiles,
) -> None:
    for port in _server(pki):
        conn, sock = hq_client(pki, port)
        try:
            data = get(conn, "/abc5000.txt")
            assert len(data) == 5000
            assert data.startswith(b"abc5000.txtabc5000.txt")
        finally:
            conn.free()
            sock.close()
