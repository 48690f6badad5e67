"""Shared helpers for the benchmarks: certificates, peer processes, timing."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.certs import CertFiles, make_pki  # noqa: E402


def make_certs(key_kind: str = "ec") -> CertFiles:
    return make_pki(Path(tempfile.mkdtemp(prefix="quicconn-bench-")), key_kind=key_kind)


@contextmanager
def aioquic_server(certs: CertFiles, *extra: str) -> Iterator[int]:
    """Run tests/peers/aioquic_server.py; yield its UDP port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/peers/aioquic_server.py"),
            "--cert",
            str(certs.cert),
            "--key",
            str(certs.key),
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Sample:
    seconds: float
    cpu: float
    nbytes: int

    @property
    def mbit_per_s(self) -> float:
        return self.nbytes * 8 / self.seconds / 1e6


@contextmanager
def measure() -> Iterator[list[float]]:
    """Yield a list that receives (wall seconds, CPU seconds of this process)."""
    out: list[float] = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    yield out
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out += [t1 - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def env_note() -> str:
    return f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
