"""bench/handshakes: QUIC handshakes per second, quicconn server vs aioquic's.

Two servers run as separate processes on loopback: quicconn's many-client
nonblocking loop (examples/quic_server_multi.py) and aioquic's asyncio
server (tests/peers/aioquic_server.py).  The same client program,
tests/peers/aioquic_clients.py (aioquic asyncio clients in a third process),
drives both, so only the server differs.  Each round runs, for each server
in turn, a sequential phase (one handshake in flight at a time) and a
concurrent phase (--concurrency handshakes in flight).  Prints handshakes
per second and the server's CPU milliseconds per handshake for every run,
then the medians and the quicconn/aioquic ratios (goal: >= 1.0).

    python bench/handshakes.py [--sequential 150] [--concurrent 400]
        [--concurrency 50] [--rounds 3] [--retry]

Both servers skip Retry address validation unless --retry is given (then
both use it).  The machine has 2 cores: the client and the server each get
one; the client is CPU-bound too, so the server-CPU figures are the cleaner
comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from _common import ROOT, aioquic_server, env_note, make_certs, median

from tests.support.certs import CertFiles

ALPN = "quicconn-test"
CLIENTS = ROOT / "tests/peers/aioquic_clients.py"
QUICCONN_SERVER = ROOT / "examples/quic_server_multi.py"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    handshakes: int
    per_second: float
    server_cpu_ms: float  # per handshake


@contextmanager
def quicconn_server(certs: CertFiles, retry: bool) -> Iterator[tuple[int, int]]:
    """Run examples/quic_server_multi.py; yield (port, pid)."""
    args = [
        sys.executable,
        str(QUICCONN_SERVER),
        "0",
        str(certs.cert),
        str(certs.key),
        "--alpn",
        ALPN,
    ]
    if not retry:
        args.append("--no-validate")
    # The example takes a fixed port; find a free one and pass it on.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args[2] = str(port)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("Listening"):
            raise RuntimeError(f"quicconn server did not start: {line!r}")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def aioquic_server_pid(certs: CertFiles, retry: bool) -> Iterator[tuple[int, int]]:
    """Run tests/peers/aioquic_server.py; yield (port, pid)."""
    before = set(_children())
    with aioquic_server(certs, *(["--retry"] if retry else [])) as port:
        (pid,) = set(_children()) - before
        yield port, pid


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fp:
                    fields = fp.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def handshakes(port: int, pid: int, ca: str, count: int, concurrency: int) -> Run:
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        [
            sys.executable,
            str(CLIENTS),
            "--port",
            str(port),
            "--ca",
            ca,
            "--clients",
            str(count),
            "--concurrency",
            str(concurrency),
            "--size",
            "0",
            "--alpn",
            ALPN,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    cpu1 = cpu_seconds(pid)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise RuntimeError(f"{result['failed']} handshakes failed: {result['errors']}")
    return Run(count, result["handshakes_per_s"], (cpu1 - cpu0) * 1000 / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=150)
    parser.add_argument("--concurrent", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retry", action="store_true")
    args = parser.parse_args()
    certs = make_certs()
    ca = str(certs.ca)
    phases = {
        "sequential": (args.sequential, 1),
        "concurrent": (args.concurrent, args.concurrency),
    }
    results: dict[tuple[str, str], list[Run]] = {
        (server, phase): [] for server in ("quicconn", "aioquic") for phase in phases
    }
    load = os.getloadavg()[0]
    print(
        f"bench/handshakes: {args.sequential} sequential and {args.concurrent} "
        f"concurrent ({args.concurrency} in flight) handshakes, {args.rounds} rounds "
        f"alternating, Retry {'on' if args.retry else 'off'}; {env_note()}, "
        f"load average {load:.2f} at start"
    )
    with (
        quicconn_server(certs, args.retry) as (q_port, q_pid),
        aioquic_server_pid(certs, args.retry) as (a_port, a_pid),
    ):
        servers = {"quicconn": (q_port, q_pid), "aioquic": (a_port, a_pid)}
        # One unmeasured warm-up each: imports, first-connection caches.
        for port, pid in servers.values():
            handshakes(port, pid, ca, 10, 1)
        for i in range(args.rounds):
            for name, (port, pid) in servers.items():
                for phase, (count, concurrency) in phases.items():
                    run = handshakes(port, pid, ca, count, concurrency)
                    results[(name, phase)].append(run)
                    print(
                        f"  round {i + 1} {name:9s} {phase:10s} "
                        f"{run.per_second:7.1f} handshakes/s  "
                        f"server CPU {run.server_cpu_ms:6.2f} ms/handshake",
                        flush=True,
                    )
    for phase in phases:
        q = median([r.per_second for r in results[("quicconn", phase)]])
        a = median([r.per_second for r in results[("aioquic", phase)]])
        qc = median([r.server_cpu_ms for r in results[("quicconn", phase)]])
        ac = median([r.server_cpu_ms for r in results[("aioquic", phase)]])
        print(
            f"{phase}: quicconn {q:.1f}/s, aioquic asyncio {a:.1f}/s, "
            f"ratio {q / a:.2f}x; server CPU quicconn {qc:.2f} ms, "
            f"aioquic {ac:.2f} ms per handshake, ratio (aioquic/quicconn) "
            f"{ac / qc:.2f}x"
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
