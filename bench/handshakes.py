"""bench/handshakes: QUIC handshakes per second and server CPU per handshake.

The servers: quicconn's many-client nonblocking loop
(examples/quic_server_multi.py) on each of its cores (``--core``), and the
servers a user would pick instead (``--peers``): qh3's and aioquic's own
asyncio servers (bench/peers/asyncio_peer.py) and ngtcp2's gtlsserver.
Each runs as its own process for the whole invocation.  The same client
program, tests/peers/aioquic_clients.py (asyncio clients in another
process), drives every server, so only the server differs; ``--clients``
picks whose asyncio clients: aioquic's (one Initial) and/or qh3's (key
shares for X25519MLKEM768 and X25519, in two Initials; a server without
ML-KEM takes X25519).  qh3's own server
needs qh3's clients: an aioquic client pads its first Initial with zeros
after the packet, qh3 credits its anti-amplification budget with the
packet's length only, and its send path fails ("packet builder capacity
exhausted") until the client retransmits, so that pair is skipped unless
``--broken`` is given.  Each round runs, for each client
and server in turn (each round starting one server later), a sequential
phase (one handshake in flight at a time) and a concurrent phase
(--concurrency in flight).  Prints handshakes per second,
the server's CPU milliseconds per handshake and the load for every run,
then the medians, every quicconn/peer ratio, and the issue's goal.

    python bench/handshakes.py [--sequential 150] [--concurrent 400]
        [--concurrency 50] [--rounds 3] [--retry] [--no-tickets]
        [--core qh3,aioquic]
        [--peers qh3,aioquic,ngtcp2] [--clients aioquic,qh3] [--json PATH]
        [--svg PATH] [--broken]

No server uses Retry unless --retry is given (then all do).  Every server
sends a session ticket after each handshake, as OpenSSL's and quicconn's
servers do by default and aioquic's and qh3's example HTTP/3 servers are
set up to (their asyncio servers send none without a ticket store: the
peers get one); ``--no-tickets`` turns tickets off for quicconn and the
asyncio servers (gtlsserver runs as it comes either way).  gtlsserver
speaks only HTTP/3, so its clients offer ALPN h3 (they close right after
the handshake; it sends its SETTINGS).  The machine has 2 cores: the client
and the server each get one; the client is CPU-bound too, so the server-CPU
figures are the cleaner comparison.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import env_note, make_certs, median
from _stacks import (
    BROKEN_PAIRS,
    CLIENT_STACKS,
    CORES,
    PEER_STACKS,
    Server,
    handshake_clients,
    handshake_server,
    load_note,
    load_range,
    parse_list,
    stacks,
    stop_cleanly_on_sigterm,
)
from _svg import bar_chart

#: The issue's goal: quicconn-qh3's server CPU per handshake at most qh3's.
GOAL = ("quicconn-qh3", "qh3")


def ratio(ours: float, other: float) -> float | None:
    """ours / other, or None when other is zero (a run too short for the
    CPU clock's 10 ms ticks)."""
    return ours / other if other else None


def shown(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}x"


@dataclass
class Run:
    handshakes: int
    per_second: float
    server_cpu_ms: float  # per handshake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=150)
    parser.add_argument("--concurrent", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retry", action="store_true")
    parser.add_argument("--no-tickets", action="store_true")
    parser.add_argument("--core", help=f"quicconn's cores (default {','.join(CORES)})")
    parser.add_argument(
        "--peers", help=f"servers to compare with (default {','.join(PEER_STACKS)})"
    )
    parser.add_argument(
        "--clients",
        help=f"whose clients drive the servers (default {','.join(CLIENT_STACKS)})",
    )
    parser.add_argument(
        "--broken",
        action="store_true",
        help="measure the server/client pairs known not to work too",
    )
    parser.add_argument("--json", help="write every run and the summary here")
    parser.add_argument("--svg", help="plot the server CPU per handshake here")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw --svg from --json"
    )
    args = parser.parse_args()
    if args.replot:
        record = json.loads(Path(args.json).read_text())
        Path(args.svg).write_text(plot(record))
        return
    stop_cleanly_on_sigterm()
    cores = parse_list(args.core, CORES, "core")
    peers = parse_list(args.peers, PEER_STACKS, "peer")
    clients = parse_list(args.clients, CLIENT_STACKS, "client")
    started = datetime.datetime.now(datetime.UTC)
    phases = {
        "sequential": (args.sequential, 1),
        "concurrent": (args.concurrent, args.concurrency),
    }
    print(
        f"bench/handshakes: {args.sequential} sequential and {args.concurrent} "
        f"concurrent ({args.concurrency} in flight) handshakes, {args.rounds} rounds "
        f"alternating, Retry {'on' if args.retry else 'off'}, session tickets "
        f"{'off' if args.no_tickets else 'on'}; {env_note()}, "
        f"{load_note()} at start"
    )
    chosen = stacks(cores, peers)
    skipped = {} if args.broken else BROKEN_PAIRS
    for (server, client), why in skipped.items():
        if server in chosen and client in clients:
            print(f"  (skipping {server} server with {client} clients: {why})")
    certs = make_certs()
    #: (client stack, phase): what one measurement is.
    settings = [(c, phase) for c in clients for phase in phases]
    results: dict[tuple[str, str, str], list[Run]] = {
        (s, c, phase): [] for s in chosen for c, phase in settings
    }
    runs: list[dict[str, object]] = []
    with ExitStack() as servers_up:
        servers: dict[str, Server] = {
            s: servers_up.enter_context(
                handshake_server(s, certs, args.retry, tickets=not args.no_tickets)
            )
            for s in chosen
        }
        # One unmeasured warm-up each: imports, first-connection caches.
        for stack, server in servers.items():
            for client in clients:
                if (stack, client) not in skipped:
                    handshake_clients(server, certs, 10, 1, client)
        for i in range(args.rounds):
            order = chosen[i % len(chosen) :] + chosen[: i % len(chosen)]
            for stack in order:
                for client, phase in settings:
                    if (stack, client) in skipped:
                        continue
                    count, concurrency = phases[phase]
                    report = handshake_clients(
                        servers[stack], certs, count, concurrency, client
                    )
                    run = Run(
                        count,
                        float(str(report["handshakes_per_s"])),
                        float(str(report["server_cpu"])) * 1000 / count,
                    )
                    results[(stack, client, phase)].append(run)
                    load = load_note()
                    runs.append(
                        {
                            "round": i + 1,
                            "stack": stack,
                            "client": client,
                            "phase": phase,
                            "handshakes_per_s": run.per_second,
                            "server_cpu_ms": run.server_cpu_ms,
                            "load": load,
                        }
                    )
                    print(
                        f"  round {i + 1} {stack:17s} {client:7s} clients "
                        f"{phase:10s} {run.per_second:7.1f} handshakes/s  "
                        f"server CPU {run.server_cpu_ms:6.2f} ms/handshake  {load}",
                        flush=True,
                    )
    summary: dict[str, dict[str, dict[str, float]]] = {}
    found: dict[str, dict[str, float | None]] = {}
    for client, phase in settings:
        title = f"{client} clients, {phase}"
        measured = [s for s in chosen if results[(s, client, phase)]]
        picked = {s: results[(s, client, phase)] for s in measured}
        rate = {s: median([r.per_second for r in picked[s]]) for s in measured}
        cpu = {s: median([r.server_cpu_ms for r in picked[s]]) for s in measured}
        summary[title] = {
            s: {"handshakes_per_s": rate[s], "server_cpu_ms": cpu[s]} for s in measured
        }
        print(f"{title} (medians):")
        for s in measured:
            print(f"  {s:17s} {rate[s]:7.1f}/s  server CPU {cpu[s]:6.2f} ms/handshake")
        for ours in (s for s in measured if s.startswith("quicconn-")):
            for other in (s for s in measured if s != ours):
                key = f"{ours}/{other}"
                pair = {
                    "rate": ratio(rate[ours], rate[other]),
                    "server_cpu": ratio(cpu[ours], cpu[other]),
                }
                found[f"{title}: {key}"] = pair
                print(
                    f"  {key:34s} rate {shown(pair['rate'])}, "
                    f"server CPU per handshake {shown(pair['server_cpu'])}"
                )
        ours, peer = GOAL
        if ours in cpu and peer in cpu:
            verdict = "met" if cpu[ours] <= cpu[peer] else "NOT met"
            print(
                f"goal ({title}): {ours} server CPU per handshake <= {peer}'s: "
                f"{cpu[ours]:.2f} ms vs {cpu[peer]:.2f} ms, {verdict}"
            )
    end_load = load_note()
    print(f"{end_load} at end")
    record = {
        "bench": "handshakes",
        "started": started.isoformat(timespec="seconds"),
        "environment": env_note(),
        "phases": {p: {"count": c, "in_flight": f} for p, (c, f) in phases.items()},
        "clients": clients,
        "skipped": {f"{s} server, {c} clients": w for (s, c), w in skipped.items()},
        "rounds": args.rounds,
        "retry": args.retry,
        "tickets": not args.no_tickets,
        "load_at_end": end_load,
        "runs": runs,
        "medians": summary,
        "ratios": found,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if args.svg:
        Path(args.svg).write_text(plot(record))
    sys.stdout.flush()


def plot(record: dict[str, Any]) -> str:
    """Server CPU per handshake of every run, from a record as --json writes it."""
    runs = record["runs"]
    servers = list(dict.fromkeys(r["stack"] for r in runs))
    sections = []
    for client in record["clients"]:
        for phase, shape in record["phases"].items():
            rows = [
                (
                    server,
                    [
                        r["server_cpu_ms"]
                        for r in runs
                        if (r["stack"], r["client"], r["phase"])
                        == (server, client, phase)
                    ],
                )
                for server in servers
            ]
            sections.append(
                (
                    f"{client} clients, {phase}: {shape['count']} handshakes, "
                    f"{shape['in_flight']} in flight",
                    [row for row in rows if row[1]],
                )
            )
    return bar_chart(
        "bench/handshakes: server CPU per handshake (lower is better)",
        "server CPU, ms per handshake (bar: median; whisker and dots: every run)",
        sections,
        note=f"{record['started'][:10]}, loopback, {record['environment']}, "
        f"{load_range(runs)}",
    )


if __name__ == "__main__":
    main()
