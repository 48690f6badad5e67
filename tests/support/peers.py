"""Find the independent peers installed by ``python -m interop.peers install``.

A missing peer fails the test that needs it: CI installs every peer, so a
silent skip would hide a broken installation.  Developers without them can
set ``QUICCONN_ALLOW_MISSING_PEERS=1`` to turn those failures into skips.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from interop.peers import locate

ALLOW_MISSING_ENV = "QUICCONN_ALLOW_MISSING_PEERS"

_HOW_TO_INSTALL = "install it with `python -m interop.peers install` (.ci/run does)"


def require_peer(name: str) -> str:
    """The path of peer ``name`` (a key of ``python -m interop.peers paths``).

    Fails the test when the peer is missing, or skips it with the reason if
    ``QUICCONN_ALLOW_MISSING_PEERS=1``.
    """
    paths = locate().as_dict()
    if name not in paths:
        raise ValueError(f"unknown peer {name!r}; known: {sorted(paths)}")
    path = paths[name]
    if path is not None:
        return path
    message = f"peer {name!r} is not installed: {_HOW_TO_INSTALL}"
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        pytest.skip(message)
    pytest.fail(f"{message} (or set {ALLOW_MISSING_ENV}=1 to skip)")


def _bound_udp_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def wait_udp_bound(
    port: int,
    timeout: float = 10.0,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Wait until some process has bound UDP ``port`` (read from /proc/net).

    For peers that print nothing when they are ready.  Reading the kernel's
    socket table, rather than probing with a bind, cannot steal the port.
    ``proc``, if given, is the peer: its early exit ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while port not in _bound_udp_ports():
        if proc is not None and proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout is not None else ""
            raise RuntimeError(
                f"peer exited with {proc.returncode} before binding port {port}:\n"
                f"{output[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing bound UDP port {port} within {timeout} s")
        time.sleep(0.02)
