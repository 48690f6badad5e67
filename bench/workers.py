"""bench/workers: handshakes per second with 1 and with 2 worker processes.

Two quicconn worker groups (quicconn.scale.WorkerGroup) serve on loopback
at once, one with a single worker and one with two, on the core the
environment chooses; each worker accepts every connection and frees it a
second later (the client has closed it by then).  The load
comes from separate processes started together, each running --per-proc
handshakes: by default --client-procs copies of
tests/peers/openssl_clients.py (OpenSSL 3.5's QUIC client in C, one
handshake after another: the cheapest load this machine can make, so that
the cores go to the workers), or with --load aioquic copies of
tests/peers/aioquic_clients.py (aioquic's asyncio clients, --concurrency
in flight each).  Rounds alternate between the groups, so both
see the same machine load.  Every run prints handshakes per second (all
client processes together, first start to last handshake), the workers'
CPU milliseconds per handshake, each worker's share of the handshakes and
how busy it was (CPU seconds per wall second), and the load generators'
CPU per handshake; then the medians and the 2-worker/1-worker ratios.

    python bench/workers.py [--rounds 3] [--per-proc 300] [--client-procs 6]
        [--load openssl|aioquic] [--concurrency 32] [--retry]

Retry is off unless --retry.  On a machine with as many cores as workers
the load generators compete with the workers for the same cores: the
server CPU per handshake is the clean figure; handshakes per second tells
how much of the machine the workers got (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass

from _common import ROOT, env_note, make_certs, median

import quicconn
from interop.peers import openssl35_command
from quicconn.scale import Worker, WorkerGroup
from tests.support.certs import CertFiles

ALPN = "quicconn-test"
CLIENTS = {
    "aioquic": ROOT / "tests/peers/aioquic_clients.py",
    "openssl": ROOT / "tests/peers/openssl_clients.py",
}
TICKS = os.sysconf("SC_CLK_TCK")
NO_BLOCK = quicconn.ACCEPT_CONNECTION_NO_BLOCK
#: Seconds a worker holds an accepted connection before freeing it.
HOLD = 1.0


def serve(worker: Worker, cert: str, key: str, flags: int) -> dict[str, int]:
    """A worker: accept every connection (its handshake is complete then),
    hold it a second (its client closes it meanwhile), free it.  Nothing
    per connection per loop turn: the CPU measured is the handshakes'."""
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protos([ALPN])
    listener = worker.new_listener(ctx, flags)
    listener.set_blocking_mode(False)
    listener.listen()
    selector = selectors.DefaultSelector()
    selector.register(listener.fileno(), selectors.EVENT_READ)
    held: deque[tuple[float, quicconn.Connection]] = deque()
    accepted = 0
    while not worker.stopping:
        timeout = listener.get_event_timeout()
        selector.select(0.05 if timeout is None else min(timeout, 0.05))
        listener.handle_events()
        now = time.monotonic()
        while (conn := listener.accept_connection(NO_BLOCK)) is not None:
            held.append((now, conn))
            accepted += 1
        while held and now - held[0][0] > HOLD:
            held.popleft()[1].free()
    return {"accepted": accepted}


@dataclass
class Run:
    workers: int
    handshakes: int
    per_second: float
    server_cpu_ms: float  # per handshake, all workers together
    client_cpu_ms: float  # per handshake, all load generators together
    busy: list[float]  # each worker's CPU seconds per wall second


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(group: WorkerGroup, certs: CertFiles, args: argparse.Namespace) -> Run:
    pids = [pid for pid in group.pids if pid is not None]
    cpu0 = [cpu_seconds(pid) for pid in pids]
    clients0 = children_cpu()
    wall0 = time.monotonic()
    command = [
        sys.executable, str(CLIENTS[args.load]),
        "--port", str(group.address[1]),
        "--ca", str(certs.ca),
        "--clients", str(args.per_proc),
        "--alpn", ALPN,
    ]  # fmt: skip
    env = dict(os.environ)
    if args.load == "aioquic":
        command += ["--concurrency", str(args.concurrency), "--size", "0"]
    else:
        command, extra = openssl35_command(command)
        env.update(extra)
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(args.client_procs)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.monotonic() - wall0
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu0, strict=True)]
    failed = sum(r["failed"] for r in results)
    if failed:
        raise RuntimeError(f"{failed} handshakes failed: {results[0]['errors']}")
    count = args.per_proc * args.client_procs
    span = max(r["last_handshake_at"] for r in results) - min(
        r["started_at"] for r in results
    )
    return Run(
        workers=group.workers,
        handshakes=count,
        per_second=count / span,
        server_cpu_ms=sum(cpu) * 1000 / count,
        client_cpu_ms=(children_cpu() - clients0) * 1000 / count,
        busy=[c / wall for c in cpu],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-proc", type=int, default=300)
    parser.add_argument("--client-procs", type=int, default=6)
    parser.add_argument("--load", choices=sorted(CLIENTS), default="openssl")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--retry", action="store_true")
    args = parser.parse_args()
    certs = make_certs()
    flags = 0 if args.retry else quicconn.LISTENER_FLAG_NO_VALIDATE
    core = quicconn.Context(quicconn.SERVER).core
    in_flight = args.concurrency if args.load == "aioquic" else 1
    print(
        f"bench/workers: {args.client_procs} {args.load} load processes x "
        f"{args.per_proc} handshakes ({in_flight} in flight each), "
        f"{args.rounds} rounds "
        f"alternating 1 and 2 workers, core {core}, Retry "
        f"{'on' if args.retry else 'off'}; {env_note()}, load average "
        f"{os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    groups = {
        n: WorkerGroup(
            serve,
            ("127.0.0.1", 0),
            workers=n,
            args=(str(certs.cert), str(certs.key), flags),
        )
        for n in (1, 2)
    }
    runs: dict[int, list[Run]] = {1: [], 2: []}
    try:
        for group in groups.values():
            group.start()
        warm = argparse.Namespace(**{**vars(args), "per_proc": 20})
        for group in groups.values():
            load(group, certs, warm)  # imports, first-connection caches
        for i in range(args.rounds):
            for n, group in groups.items():
                run = load(group, certs, args)
                runs[n].append(run)
                busy = ", ".join(f"{b:.2f}" for b in run.busy)
                print(
                    f"  round {i + 1} {n} worker{'s' if n > 1 else ' '} "
                    f"{run.per_second:7.1f} handshakes/s  server CPU "
                    f"{run.server_cpu_ms:5.2f} ms/handshake  clients "
                    f"{run.client_cpu_ms:5.2f} ms/handshake  worker busy {busy}",
                    flush=True,
                )
    finally:
        reports = {n: group.stop() for n, group in groups.items()}
    one, two = runs[1], runs[2]
    rate1 = median([r.per_second for r in one])
    rate2 = median([r.per_second for r in two])
    cpu1 = median([r.server_cpu_ms for r in one])
    cpu2 = median([r.server_cpu_ms for r in two])
    busy2 = [median([r.busy[i] for r in two]) for i in range(2)]
    shares = [
        report.stats.get("connections_accepted", 0)
        for report in sorted(reports[2], key=lambda r: r.index)
    ]
    tossed = sum(report.tossed_out for report in reports[2])
    print(
        f"1 worker: {rate1:.1f} handshakes/s, server CPU {cpu1:.2f} ms/handshake "
        f"(at most {1000 / cpu1:.0f}/s per busy core)"
    )
    print(
        f"2 workers: {rate2:.1f} handshakes/s, server CPU {cpu2:.2f} ms/handshake; "
        f"per worker {rate2 / 2:.1f}/s, busy {busy2[0]:.2f} and {busy2[1]:.2f}; "
        f"handshakes accepted per worker {shares}; datagrams tossed to their "
        f"worker {tossed} ({tossed / max(1, sum(shares)):.2f} per handshake)"
    )
    print(
        f"ratio 2/1 workers: {rate2 / rate1:.2f}x handshakes/s, "
        f"{cpu2 / cpu1:.2f}x server CPU per handshake"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
