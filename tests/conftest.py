"""Shared fixtures: certificates (made once per session), free ports, peers.

Peer processes are started through :func:`peer_process`, which guarantees
they are killed when the test (or session) that started them ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quicconn._core.registry import ENVIRONMENT_VARIABLE  # noqa: E402
from tests.support.certs import CertFiles, make_pki  # noqa: E402
from tests.support.cores import pinned_cores  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A CA and a leaf for localhost/127.0.0.1/::1 (EC P-256)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A second, unrelated CA and leaf: a 'wrong CA' for negative tests."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), prefix="other-")


@pytest.fixture(params=pinned_cores())
def each_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per core (tests/support/cores.py, ``pinned_cores``):
    contexts the test makes without ``core=`` run on it.  For tests that pin
    one core's behaviour; the test ID names the core."""
    core: str = request.param
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, core)
    return core


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def peer_process(
    args: list[str],
    *,
    ready_prefix: str | None = None,
    env: dict[str, str] | None = None,
    stdin: bool = False,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start a peer; wait for a line starting with ``ready_prefix``; always kill it.

    ``stdin=True`` gives the peer a pipe to write to (``proc.stdin``).
    """
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = ""
    try:
        if ready_prefix is not None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(ready_prefix):
                    break
            else:
                raise RuntimeError(f"peer {args[0]} exited before it was ready")
        yield proc, line.strip()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdin is not None:
            proc.stdin.close()


@contextmanager
def aioquic_example_server(pki: CertFiles, root: Path) -> Iterator[int]:
    """aioquic's examples/http3_server.py serving ``root``; yields its port.

    It speaks h3 and hq-interop; its HTTP/3 SETTINGS carry
    SETTINGS_H3_DATAGRAM=1 with the max_datagram_frame_size transport
    parameter, which a client must cross-check (RFC 9297).
    """
    from tests.support.peers import require_peer, wait_udp_bound

    port = free_udp_port()
    args = [
        sys.executable,
        require_peer("http3_server"),
        "-c",
        str(pki.cert),
        "-k",
        str(pki.key),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with peer_process(args, env={"STATIC_ROOT": str(root)}) as (proc, _):
        wait_udp_bound(port, proc=proc)
        yield port


@pytest.fixture(scope="session")
def aioquic_server(pki: CertFiles) -> Iterator[int]:
    """tests/peers/aioquic_server.py (aioquic's asyncio stack); yields its port."""
    args = [
        sys.executable,
        str(PEERS / "aioquic_server.py"),
        "--cert",
        str(pki.cert),
        "--key",
        str(pki.key),
        "--port",
        "0",
    ]
    with peer_process(args, ready_prefix="READY") as (_, line):
        yield int(line.split()[1])


@pytest.fixture(scope="session")
def openssl35() -> str:
    """The OpenSSL 3.5 ``openssl`` program (its ``s_client -quic``).

    Found through ``$QUICCONN_OPENSSL35`` or ``.peers/bin/openssl35`` (which
    ``python -m interop.peers install`` creates); see shared PEERS.md.
    """
    candidates = [os.environ.get("QUICCONN_OPENSSL35"), ROOT / ".peers/bin/openssl35"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(
        "OpenSSL 3.5 is not installed: run `python -m interop.peers install` "
        "(it creates .peers/bin/openssl35) or point QUICCONN_OPENSSL35 at an "
        "OpenSSL 3.5 `openssl` executable"
    )
