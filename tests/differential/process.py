"""Start the differential run in a process linked against OpenSSL 3.5.

The system's libssl is OpenSSL 3.0 (no QUIC), and a process cannot load
two libssl.so.3: the scenarios run in a child started with trixie's
loader and the OpenSSL 3.5 tree's library path (``interop.peers.
openssl35_command``), exactly as the ``openssl35`` s_client peer is run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from interop.peers import PeerInstallError, openssl35_command

ROOT = Path(__file__).resolve().parents[2]


def run_scenarios(
    certdir: Path, names: list[str], timeout: float = 300
) -> dict[str, Any]:
    """Run ``names`` (all if empty); the decoded JSON of ``run.py``."""
    command, extra = openssl35_command(
        [
            os.path.realpath(sys.executable),
            "-m",
            "tests.differential.run",
            str(certdir),
            *names,
        ]
    )
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"the differential run exited with {proc.returncode}:\n"
            f"{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


__all__ = ["PeerInstallError", "run_scenarios"]
