"""Concurrent streams against an independent peer: aioquic's example server.

``http3_server.py`` from the aioquic sdist speaks hq-interop (HTTP/0.9 over
QUIC: ``GET /path\\r\\n`` and FIN in, the file and FIN out).  One quicconn
connection sends 100 GETs on 100 parallel streams and checks every byte.

Where the server comes from (see docs/streams.md, "Testing against aioquic"):

* ``$QUICCONN_AIOQUIC_EXAMPLES``: the sdist's ``examples`` directory, or
* ``.peers/aioquic-examples/`` in the repository (``python -m interop.peers
  install`` puts it there).

Its Python dependencies (dnslib, httpx, jinja2, starlette, wsproto) must be
importable: installed in this environment, or in a directory named by
``$QUICCONN_AIOQUIC_EXAMPLES_DEPS`` (default: ``deps/`` beside the
examples), which is put on the server's ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quicconn as q
from tests.conftest import ROOT, free_udp_port
from tests.support.certs import CertFiles

pytestmark = pytest.mark.peer

R, ER, EC = q.POLL_EVENT_R, q.POLL_EVENT_ER, q.POLL_EVENT_EC


def aioquic_examples() -> Path:
    env = os.environ.get("QUICCONN_AIOQUIC_EXAMPLES")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT / ".peers" / "aioquic-examples")
    for path in candidates:
        if (path / "http3_server.py").is_file():
            return path
    pytest.fail(
        "aioquic's example server (http3_server.py) was not found in "
        + " or ".join(str(p) for p in candidates)
        + ". Install it with `python -m interop.peers install`, or unpack the "
        "aioquic sdist (`pip download --no-binary :all: --no-deps "
        "aioquic==1.7.2`) and set QUICCONN_AIOQUIC_EXAMPLES to its examples/ "
        "directory (its dependencies dnslib, httpx, jinja2, starlette and "
        "wsproto must be importable, e.g. from QUICCONN_AIOQUIC_EXAMPLES_DEPS)."
    )


def _udp_port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def content(index: int) -> bytes:
    size = 1 + (index * 7919) % 60_000
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"file {index} {counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture
def aioquic_http_server(pki: CertFiles, tmp_path: Path) -> Iterator[int]:
    """aioquic's http3_server.py serving 100 files; yields its port."""
    examples = aioquic_examples()
    root = tmp_path / "htdocs"
    root.mkdir()
    for i in range(100):
        (root / f"file{i}.bin").write_bytes(content(i))
    port = free_udp_port()
    env = {**os.environ, "STATIC_ROOT": str(root)}
    deps = os.environ.get("QUICCONN_AIOQUIC_EXAMPLES_DEPS") or str(examples / "deps")
    paths = [str(examples)] + ([deps] if os.path.isdir(deps) else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(examples / "http3_server.py"),
            "--certificate",
            str(pki.cert),
            "--private-key",
            str(pki.key),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=examples,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not _udp_port_in_use(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                output = (tmp_path / "server.log").read_text()[-2000:]
                pytest.fail(f"aioquic's http3_server.py did not start:\n{output}")
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_hundred_parallel_gets_on_one_connection(
    aioquic_http_server: int, pki: CertFiles
) -> None:
    ctx = q.Context(q.CLIENT)
    ctx.load_verify_locations(str(pki.ca))
    ctx.set_alpn_protos(["hq-interop"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = q.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", aioquic_http_server))
    conn.set1_host("localhost")
    conn.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    try:
        conn.connect()  # blocking handshake
        assert conn.get0_alpn_selected() == "hq-interop"
        conn.set_blocking_mode(False)
        streams = []
        for i in range(100):
            stream = conn.new_stream(q.STREAM_FLAG_NO_BLOCK)
            # All-or-nothing nonblocking write: a short request always fits.
            stream.write_ex2(b"GET /file%d.bin\r\n" % i, q.WRITE_FLAG_CONCLUDE)
            streams.append(stream)
        bodies = [bytearray() for _ in streams]
        open_streams = set(range(100))
        deadline = time.monotonic() + 60
        while open_streams:
            assert time.monotonic() < deadline, f"{len(open_streams)} GETs unanswered"
            order = sorted(open_streams)
            items: list[q.PollItem] = [(conn, EC)]
            items += [(streams[i], R | ER) for i in order]
            revents = q.poll(items, timeout=10.0)
            assert not revents[0] & EC, f"closed: {conn.get_conn_close_info()}"
            for i, rev in zip(order, revents[1:], strict=True):
                assert not rev & ER, f"GET {i} was reset"
                if not rev & R:
                    continue
                try:
                    while True:
                        bodies[i] += streams[i].read(65536)
                except q.WantReadError:
                    pass
                except q.ZeroReturnError:
                    open_streams.discard(i)
                    streams[i].free()
        for i, body in enumerate(bodies):
            assert bytes(body) == content(i), f"file{i}.bin differs"
        conn.set_blocking_mode(True)
        # RAPID: skip the terminating period (3 PTO, long after this burst);
        # False (OpenSSL's 0): closing, not yet terminated.
        assert conn.shutdown(q.SHUTDOWN_FLAG_RAPID) is False
        assert conn.get_conn_close_info() is not None
    finally:
        conn.free()
        sock.close()
