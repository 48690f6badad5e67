"""The server examples (ports of OpenSSL's guide demos, and a many-client
loop) run as programs and serve real clients over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import quicconn
from tests.conftest import free_udp_port, peer_process
from tests.support.certs import CertFiles

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLIENTS = Path(__file__).resolve().parent / "peers" / "aioquic_clients.py"


def echo_once(pki: CertFiles, port: int, payload: bytes) -> bytes:
    with quicconn.connect(
        "127.0.0.1", port, alpn=["hq-interop"], cafile=str(pki.ca)
    ) as conn:
        conn.write_ex2(payload, quicconn.WRITE_FLAG_CONCLUDE)
        got = bytearray()
        while True:
            try:
                got += conn.read()
            except quicconn.ZeroReturnError:
                return bytes(got)


@pytest.mark.parametrize(
    "example", ["quic_server_block.py", "quic_server_non_block.py"]
)
def test_openssl_demo_ports_echo_one_client_after_another(
    pki: CertFiles, example: str
) -> None:
    port = free_udp_port()
    args = [
        sys.executable,
        str(EXAMPLES / example),
        str(port),
        str(pki.cert),
        str(pki.key),
    ]
    with peer_process(args, ready_prefix="Waiting for connection") as (proc, _):
        first = b"GET /first\r\n" * 100
        second = bytes(range(256)) * 20  # 5 KiB: fits the non-block demo's buffer
        assert echo_once(pki, port, first) == first
        assert echo_once(pki, port, second) == second
        assert proc.poll() is None  # still serving


def run_many_client_example(
    pki: CertFiles, clients: int, size: int, timeout: float
) -> tuple[dict[str, object], str, str]:
    """examples/quic_server_multi.py serving ``clients`` aioquic clients that
    each echo ``size`` bytes: the clients' JSON summary, the server's output
    after it was stopped, the clients' stderr."""
    port = free_udp_port()
    args = [
        sys.executable,
        str(EXAMPLES / "quic_server_multi.py"),
        str(port),
        str(pki.cert),
        str(pki.key),
    ]
    with peer_process(args, ready_prefix="Listening on") as (proc, _):
        run = subprocess.run(
            [
                sys.executable,
                str(CLIENTS),
                "--port",
                str(port),
                "--ca",
                str(pki.ca),
                "--clients",
                str(clients),
                "--size",
                str(size),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = json.loads(run.stdout.strip().splitlines()[-1])
        proc.terminate()
        assert proc.stdout is not None
        tail = proc.stdout.read()
        proc.wait(10)
    return result, tail, run.stderr


def test_many_client_example_serves_clients_concurrently(pki: CertFiles) -> None:
    result, tail, stderr = run_many_client_example(pki, 30, 20000, timeout=60)
    assert result["ok"] == 30, (result, stderr[-2000:])
    assert "served 30 clients" in tail


def test_many_client_example_echoes_under_back_pressure(pki: CertFiles) -> None:
    """Clients sending 3 MB each get their echo back byte-exact: the server's
    writes outpace what the clients read, so they are partial (issue 16,
    item 4: the example used to retry an all-or-nothing write with a longer
    buffer, got "bad write retry" and dropped the client)."""
    result, tail, _ = run_many_client_example(pki, 3, 3_000_000, timeout=180)
    assert result["ok"] == 3, (result, tail[-2000:])
    assert "bad write retry" not in tail and "served 3 clients" in tail
