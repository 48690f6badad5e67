"""bench/bulk: a one-stream download on loopback, each stack against itself.

quicconn on each of its cores (``--core``), and the stacks a user would pick
instead (``--peers``): qh3's and aioquic's own asyncio client and server,
and ngtcp2's gtlsclient/gtlsserver (bench/_stacks.py says how each runs).
Every stack's server runs for the whole invocation; rounds alternate the
stacks (each round starting one stack later, so none is always first
after a pause).  For every run it prints goodput, the client's and the
server's CPU seconds (each process measured on its own) and the load
average; then the medians, every quicconn/peer ratio, and the issue's goals.

    python bench/bulk.py [--size 50000000] [--rounds 5] [--core qh3,aioquic]
        [--peers qh3,aioquic,ngtcp2] [--set NAME=VALUE ...]
        [--json bench/results/bulk.json] [--svg docs/performance-bulk.svg]

``--set`` passes a Context attribute to quicconn's client and server (for
example ``--set max_data=16777216``); the other stacks keep their defaults.
Goodput is bytes x 8 over the client's time from before its handshake to
the last byte (for gtlsclient, which cannot time itself, its process's
lifetime).  The machine's other work shows in the load column: compare
ratios from one invocation, and rerun when the load was high.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import env_note, make_certs, median
from _stacks import (
    CORES,
    PEER_STACKS,
    Server,
    Transfer,
    bulk_download,
    bulk_server,
    load_note,
    load_range,
    parse_list,
    stacks,
    stop_cleanly_on_sigterm,
)
from _svg import bar_chart

#: The issue's goals: (quicconn stack, peer, least goodput ratio).
GOALS = (("quicconn-qh3", "qh3", 2.0), ("quicconn-qh3", "ngtcp2", 1.0))


def ratios(goodput: dict[str, float]) -> dict[str, float]:
    """Every quicconn stack's median goodput over every other stack's."""
    out = {}
    for ours in goodput:
        if not ours.startswith("quicconn-"):
            continue
        for other in goodput:
            if other != ours and goodput[other]:
                out[f"{ours}/{other}"] = goodput[ours] / goodput[other]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--core", help=f"quicconn's cores (default {','.join(CORES)})")
    parser.add_argument(
        "--peers", help=f"stacks to compare with (default {','.join(PEER_STACKS)})"
    )
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", help="write every run and the summary here")
    parser.add_argument("--svg", help="plot the goodput here")
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
    started = datetime.datetime.now(datetime.UTC)
    print(
        f"bench/bulk: {args.size / 1e6:g} MB download on one stream, {args.rounds} "
        f"rounds alternating; {env_note()}, {load_note()} at start"
        + (f"; quicconn knobs {' '.join(args.set)}" if args.set else "")
    )
    chosen = stacks(cores, peers)
    certs = make_certs()
    runs: list[dict[str, object]] = []
    results: dict[str, list[Transfer]] = {s: [] for s in chosen}
    with ExitStack() as servers_up:
        servers: dict[str, Server] = {
            s: servers_up.enter_context(bulk_server(s, certs, args.size, args.set))
            for s in chosen
        }
        for i in range(args.rounds):
            order = chosen[i % len(chosen) :] + chosen[: i % len(chosen)]
            for stack in order:
                run = bulk_download(stack, servers[stack], certs, args.size, args.set)
                results[stack].append(run)
                load = load_note()
                runs.append(
                    {
                        "round": i + 1,
                        "stack": stack,
                        "mbit_per_s": run.mbit_per_s,
                        "seconds": run.seconds,
                        "client_cpu": run.client_cpu,
                        "server_cpu": run.server_cpu,
                        "load": load,
                    }
                )
                print(
                    f"  round {i + 1} {stack:17s} {run.mbit_per_s:7.1f} Mbit/s "
                    f"{run.seconds:6.2f} s  CPU client {run.client_cpu:5.2f} s "
                    f"server {run.server_cpu:5.2f} s  {load}",
                    flush=True,
                )
    megabytes = args.size / 1e6
    goodput = {s: median([r.mbit_per_s for r in results[s]]) for s in chosen}
    summary: dict[str, dict[str, float]] = {}
    print("medians (CPU per MB: each process on its own):")
    for stack in chosen:
        client = median([r.client_cpu for r in results[stack]]) * 1000 / megabytes
        server = median([r.server_cpu for r in results[stack]]) * 1000 / megabytes
        summary[stack] = {
            "mbit_per_s": goodput[stack],
            "client_cpu_ms_per_mb": client,
            "server_cpu_ms_per_mb": server,
        }
        print(
            f"  {stack:17s} {goodput[stack]:7.1f} Mbit/s  client {client:6.2f} "
            f"ms/MB  server {server:6.2f} ms/MB"
        )
    found = ratios(goodput)
    print("goodput ratios (medians):")
    for name, value in found.items():
        print(f"  {name:34s} {value:5.2f}x")
    for ours, peer, least in GOALS:
        if f"{ours}/{peer}" in found:
            value = found[f"{ours}/{peer}"]
            verdict = "met" if value >= least else "NOT met"
            print(f"goal {ours} >= {least:g}x {peer}: {value:.2f}x, {verdict}")
    end_load = load_note()
    print(f"{end_load} at end")
    record = {
        "bench": "bulk",
        "started": started.isoformat(timespec="seconds"),
        "environment": env_note(),
        "size": args.size,
        "rounds": args.rounds,
        "knobs": args.set,
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
    """The goodput of every run, from a record as --json writes it."""
    runs = record["runs"]
    rows = [
        (stack, [r["mbit_per_s"] for r in runs if r["stack"] == stack])
        for stack in record["medians"]
    ]
    return bar_chart(
        f"bench/bulk: {record['size'] / 1e6:g} MB on one stream, "
        "each stack against itself",
        "goodput, Mbit/s (bar: median; whisker and dots: every run)",
        [("", rows)],
        note=f"{record['started'][:10]}, loopback, {record['environment']}, "
        f"{load_range(runs)}",
    )


if __name__ == "__main__":
    main()
