"""Goodput against loss rate, quicconn versus aioquic, over the simulated link.

Each stack talks to itself (quicconn's endpoint client and server; aioquic's
example http3_client.py and http3_server.py) through ``interop.netsim`` with
the interop runner's link (10 Mbit/s, 15 ms each way, 25-packet queues,
1500-byte MTU) and random loss in both directions (at most 3 drops in a row,
as the runner's loss scenarios).  Each run downloads one file over
hq-interop and is judged by the local runner (every byte compared);
goodput is measured as the runner's goodput testcase does: file bits over
the time from the first to the last 1-RTT datagram the server sent, read by
tshark from the client-side capture.  The stacks alternate within each rate
so that load changes hit both alike.

    python bench/goodput_loss.py [--rates 0,1,2,5,10] [--size 5MB] [--runs 3]
        [--core qh3|aioquic]

Prints a table and the quicconn/aioquic ratio per rate, writes the raw
results as JSON and plots docs/goodput-vs-loss.png (needs matplotlib: the
``interop`` extra).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interop import testcases  # noqa: E402
from interop.implementations import (  # noqa: E402
    default_quicconn,
    implementations,
)
from interop.peers import locate  # noqa: E402
from interop.runner import run_testcase  # noqa: E402
from interop.testcases import Result  # noqa: E402

STACKS = ("quicconn", "aioquic")
#: The interop implementation "quicconn" stands for: quicconn on one core
#: (--core; the default core otherwise).
QUICCONN = {"name": ""}


def scenario(rate: float) -> str:
    if rate == 0:
        return testcases.SIMPLE
    return (
        "drop-rate --delay=15ms --bandwidth=10Mbps --queue=25 "
        f"--rate_to_server={rate:g} --rate_to_client={rate:g} "
        "--burst_to_server=3 --burst_to_client=3"
    )


def parse_size(text: str) -> int:
    units = {"KB": 1 << 10, "MB": 1 << 20}
    for suffix, factor in units.items():
        if text.upper().endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def measure(
    rate: float, stack: str, size: int, log_dir: Path, run: int
) -> tuple[float | None, str]:
    """One download; returns (goodput in Mbit/s or None, failure reason)."""
    impls = implementations(locate())
    testcase = dataclasses.replace(
        testcases.get("goodput"),
        name=f"goodput-{rate:g}",
        files=(size,),
        scenario=scenario(rate),
        timeout=300.0,
    )
    impl = (
        impls[QUICCONN["name"] or default_quicconn()]
        if stack == "quicconn"
        else impls[stack]
    )
    outcome = run_testcase(testcase, impl, impl, log_dir, seed=run, repetition=run)
    if outcome.result is not Result.SUCCEEDED:
        return None, f"{outcome.result.value}: {outcome.reason}"
    # run_testcase measures only testcases with a unit; goodput has one.
    value = outcome.values[0] if outcome.values else None
    return (None if value is None else value / 1000), ""


def plot(
    results: dict[str, dict[str, list[float]]],
    rates: list[float],
    path: Path,
    title: str,
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: pip install -e '.[interop]' (no plot written)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stack, marker in zip(STACKS, ("o", "s"), strict=True):
        xs: list[float] = []
        ys: list[float] = []
        lo: list[float] = []
        hi: list[float] = []
        for rate in rates:
            values = results[stack].get(f"{rate:g}", [])
            if not values:
                continue
            median = statistics.median(values)
            xs.append(rate)
            ys.append(median)
            lo.append(median - min(values))
            hi.append(max(values) - median)
        ax.errorbar(xs, ys, yerr=[lo, hi], marker=marker, capsize=4, label=stack)
    ax.set_xlabel("loss rate each way (%)")
    ax.set_ylabel("goodput (Mbit/s)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="0,1,2,5,10", help="loss %% list")
    parser.add_argument("--size", default="5MB", help="file size (e.g. 5MB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "bench/results/goodput_loss.json"))
    parser.add_argument("--png", default=str(ROOT / "docs/goodput-vs-loss.png"))
    parser.add_argument(
        "--replot", action="store_true", help="only redraw --png from --json"
    )
    parser.add_argument("--core", help="quicconn's core (default: the default core)")
    args = parser.parse_args()
    if args.core:
        QUICCONN["name"] = f"quicconn-{args.core}"
    if args.replot:
        return replot(Path(args.json), Path(args.png))
    rates = [float(r) for r in args.rates.split(",")]
    size = parse_size(args.size)
    log_dir = Path(tempfile.mkdtemp(prefix="quicconn-goodput-"))
    results: dict[str, dict[str, list[float]]] = {s: {} for s in STACKS}
    failures: dict[str, dict[str, list[str]]] = {s: {} for s in STACKS}
    load_before = os.getloadavg()
    for rate in rates:
        for run in range(1, args.runs + 1):
            order = STACKS if run % 2 else tuple(reversed(STACKS))
            for stack in order:
                value, why = measure(rate, stack, size, log_dir, run)
                key = f"{rate:g}"
                if value is None:
                    failures[stack].setdefault(key, []).append(why)
                    print(f"{rate:>5g}% {stack:<9} run {run}: FAILED {why}", flush=True)
                else:
                    results[stack].setdefault(key, []).append(value)
                    print(
                        f"{rate:>5g}% {stack:<9} run {run}: {value:6.2f} Mbit/s",
                        flush=True,
                    )
    load_after = os.getloadavg()
    print()
    print(f"{'loss':>5} | {'quicconn':>22} | {'aioquic':>22} | ratio")
    for rate in rates:
        key = f"{rate:g}"
        cells: list[str] = []
        medians: list[float | None] = []
        for stack in STACKS:
            values = results[stack].get(key, [])
            fails = len(failures[stack].get(key, []))
            if values:
                median = statistics.median(values)
                medians.append(median)
                cells.append(
                    f"{median:5.2f} ({min(values):.2f}-{max(values):.2f})"
                    + (f" {fails}F" if fails else "")
                )
            else:
                medians.append(None)
                cells.append(f"no result, {fails} failed")
        first, second = medians
        ratio = f"{first / second:.2f}" if first and second else "-"
        print(f"{key:>4}% | {cells[0]:>22} | {cells[1]:>22} | {ratio}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    today = datetime.date.today().isoformat()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {
                "date": today,
                "quicconn": QUICCONN["name"] or default_quicconn(),
                "size": size,
                "runs": args.runs,
                "link": "10 Mbit/s, 15 ms each way, 25-packet queues, burst 3",
                "load_average": [load_before[0], load_after[0]],
                "goodput_mbps": results,
                "failures": failures,
            },
            indent=2,
        )
        + "\n"
    )
    plot(results, rates, Path(args.png), plot_title(size, args.runs, today))
    return 0


def plot_title(size: int, runs: int, day: str) -> str:
    return (
        f"{size >> 20} MB download, 10 Mbit/s, 15 ms each way, 25-packet queue,\n"
        f"random loss both ways (burst <= 3); median of {runs}, min-max bars; {day}"
    )


def replot(json_path: Path, png: Path) -> int:
    """Draw the plot again from a saved JSON (no measuring)."""
    saved = json.loads(json_path.read_text())
    results = saved["goodput_mbps"]
    rates = sorted({float(r) for stack in results.values() for r in stack})
    title = plot_title(saved["size"], saved["runs"], saved["date"])
    plot(results, rates, png, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
