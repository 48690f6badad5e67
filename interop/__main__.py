"""``python -m interop``: run the interop matrix locally and write the results.

Examples::

    python -m interop                                   # the full matrix
    python -m interop -s aioquic -c quicconn-qh3 -t handshake,transfer
    python -m interop --markdown docs/interop.md --json docs/interop-result.json
    python -m interop -s ngtcp2 -c quicconn-aioquic -t v2 --merge \
        --markdown docs/interop.md --json docs/interop-result.json

Every run is also appended to ``<log-dir>/outcomes.jsonl``; ``--merge``
writes reports over those earlier outcomes too (the newest per cell), so a
single cell can be run again without rerunning the matrix.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import report, testcases
from .implementations import Implementation, implementations
from .peers import locate
from .runner import Outcome, pairs, run
from .testcases import Result
from .trace import TsharkError, tshark_path


def _names(text: str | None, known: Sequence[str], what: str) -> list[str]:
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


OUTCOMES_FILE = "outcomes.jsonl"


def _record(log_dir: Path, outcome: Outcome) -> None:
    """Append one outcome (with when it finished) to the log directory's record."""
    log_dir.mkdir(parents=True, exist_ok=True)
    line = {**dataclasses.asdict(outcome), "result": outcome.result.value}
    line["finished"] = time.time()
    with (log_dir / OUTCOMES_FILE).open("a") as out:
        out.write(json.dumps(line) + "\n")


def _recorded(log_dir: Path) -> tuple[list[Outcome], float | None]:
    """The newest recorded outcome per cell, and when the earliest started."""
    path = log_dir / OUTCOMES_FILE
    if not path.exists():
        return [], None
    newest: dict[tuple[str, str, str], Outcome] = {}
    first: float | None = None
    for text in path.read_text().splitlines():
        line = json.loads(text)
        finished = line.pop("finished")
        line["result"] = Result(line["result"])
        outcome = Outcome(**line)
        newest[(outcome.server, outcome.client, outcome.testcase)] = outcome
        began = finished - outcome.seconds
        first = began if first is None else min(first, began)
    return list(newest.values()), first


def _merged(
    impls: dict[str, Implementation],
    outcomes: list[Outcome],
    servers: list[Implementation],
    clients: list[Implementation],
    chosen: list[testcases.Testcase],
) -> tuple[list[Implementation], list[Implementation], list[testcases.Testcase]]:
    """Every server, client and testcase any of ``outcomes`` names, in order."""
    names = {o.server for o in outcomes} | {s.name for s in servers}
    names |= {o.client for o in outcomes} | {c.name for c in clients}
    tests = {o.testcase for o in outcomes} | {t.name for t in chosen}
    return (
        [i for n, i in impls.items() if n in names and "server" in i.roles],
        [i for n, i in impls.items() if n in names and "client" in i.roles],
        [t for n, t in testcases.BY_NAME.items() if n in tests],
    )


def _in_order(
    outcomes: list[Outcome],
    servers: list[Implementation],
    clients: list[Implementation],
    chosen: list[testcases.Testcase],
) -> list[Outcome]:
    """Pairs in the order the matrix runs them, testcases in theirs."""
    pair_rank = {
        (s.name, c.name): i for i, (s, c) in enumerate(pairs(servers, clients))
    }
    test_rank = {t.name: i for i, t in enumerate(chosen)}
    return sorted(
        outcomes,
        key=lambda o: (
            pair_rank.get((o.server, o.client), len(pair_rank)),
            test_rank.get(o.testcase, len(test_rank)),
        ),
    )


def _write_reports(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    servers: list[Implementation],
    clients: list[Implementation],
    chosen: list[testcases.Testcase],
    start: float,
) -> None:
    """Rewrite the reports (after every run, so a long matrix keeps its results)."""
    log_dir = Path(args.log_dir)
    end = time.time()
    if args.json:
        report.write(
            Path(args.json),
            report.result_json(
                outcomes,
                servers,
                clients,
                chosen,
                start=start,
                end=end,
                log_dir=log_dir,
            ),
        )
    if args.markdown:
        load = os.getloadavg()
        environment = (
            f"Machine: {os.cpu_count()} cores, load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}."
        )
        Path(args.markdown).write_text(
            report.markdown(
                outcomes,
                servers,
                clients,
                chosen,
                start=start,
                end=end,
                environment=environment,
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interop",
        description="Run the QUIC interop runner's testcases locally, over a "
        "userspace network simulator.",
    )
    parser.add_argument("-s", "--servers", help="comma-separated (default: all)")
    parser.add_argument("-c", "--clients", help="comma-separated (default: all)")
    parser.add_argument(
        "-t", "--tests", help="comma-separated testcases (default: all)"
    )
    parser.add_argument("--log-dir", default="logs/interop", help="keep every run here")
    parser.add_argument("--json", help="write the runner's result.json here")
    parser.add_argument("--markdown", help="write the results grid (docs/interop.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="report earlier outcomes recorded in --log-dir too (newest per cell)",
    )
    args = parser.parse_args(argv)

    try:
        tshark_path()
    except TsharkError as exc:
        print(f"interop: {exc}", file=sys.stderr)
        return 2
    impls = implementations(locate())
    server_names = [n for n, i in impls.items() if "server" in i.roles]
    client_names = [n for n, i in impls.items() if "client" in i.roles]
    servers = [impls[n] for n in _names(args.servers, server_names, "server")]
    clients = [impls[n] for n in _names(args.clients, client_names, "client")]
    chosen = [
        testcases.get(n)
        for n in _names(args.tests, list(testcases.BY_NAME), "testcase")
    ]
    log_dir = Path(args.log_dir)
    start = time.time()
    earlier: list[Outcome] = []
    if args.merge:
        earlier, first = _recorded(log_dir)
        start = min(start, first or start)
    outcomes: list[Outcome] = []
    for server, client in pairs(servers, clients):
        for testcase in chosen:
            outcome = run(testcase, server, client, log_dir, seed=args.seed)
            outcomes.append(outcome)
            _record(log_dir, outcome)
            if args.merge:
                cell = (outcome.server, outcome.client, outcome.testcase)
                earlier = [
                    o for o in earlier if (o.server, o.client, o.testcase) != cell
                ]
            reported = [*earlier, *outcomes]
            shown = _merged(impls, reported, servers, clients, chosen)
            _write_reports(args, _in_order(reported, *shown), *shown, start)
            value = f" {outcome.value:.0f} {testcase.unit}" if outcome.value else ""
            print(
                f"{server.name:>9} <- {client.name:<9} {testcase.name:<20} "
                f"{outcome.result.value:<11} {outcome.seconds:6.1f} s{value}"
                f"{'  ' + outcome.reason if outcome.reason else ''}",
                flush=True,
            )
    failed = [o for o in outcomes if o.result.value == "failed"]
    print(
        f"{len(outcomes)} runs: {len(outcomes) - len(failed)} passed or unsupported, "
        f"{len(failed)} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
