"""``python -m interop``: run the interop matrix locally and write the results.

Examples::

    python -m interop                                   # the full matrix
    python -m interop -s aioquic -c quicconn -t handshake,transfer
    python -m interop --markdown docs/interop.md --json docs/interop-result.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import report, testcases
from .implementations import Implementation, implementations
from .peers import locate
from .runner import Outcome, pairs, run
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
    outcomes: list[Outcome] = []
    for server, client in pairs(servers, clients):
        for testcase in chosen:
            outcome = run(testcase, server, client, log_dir, seed=args.seed)
            outcomes.append(outcome)
            _write_reports(args, outcomes, servers, clients, chosen, start)
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
