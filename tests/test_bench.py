"""bench/bulk.py and bench/handshakes.py run, with tiny sizes, on every stack.

A smoke test only: speed is measured by running the scripts, never asserted
here.  Each script runs quicconn on every installed core and every peer
stack, in separate processes, and must report every run, the ratios, and
write its JSON and a well-formed SVG plot.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.peer
SVG = "{http://www.w3.org/2000/svg}"


def plotted_rows(path: Path) -> list[str]:
    """The row labels of a bench plot (right-aligned texts), in order."""
    root = ET.parse(path).getroot()
    return [
        t.text or "" for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"
    ]


def run_bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bulk_runs_every_stack_and_reports_ratios(tmp_path: Path) -> None:
    out = run_bench(
        "bulk.py",
        "--size",
        "300000",
        "--rounds",
        "1",
        "--set",
        "max_data=8388608",
        "--json",
        str(tmp_path / "bulk.json"),
        "--svg",
        str(tmp_path / "bulk.svg"),
    )
    record = json.loads((tmp_path / "bulk.json").read_text())
    stacks = {run["stack"] for run in record["runs"]}
    assert stacks == {"quicconn-qh3", "quicconn-aioquic", "qh3", "aioquic", "ngtcp2"}
    assert record["knobs"] == ["max_data=8388608"]
    for run in record["runs"]:
        assert run["mbit_per_s"] > 0 and run["server_cpu"] >= 0, run
        assert run["load"].startswith("load ")
    assert "quicconn-qh3/qh3" in record["ratios"]
    assert "goal quicconn-qh3 >= 2x qh3:" in out
    assert plotted_rows(tmp_path / "bulk.svg") == [
        "quicconn-qh3",
        "quicconn-aioquic",
        "qh3",
        "aioquic",
        "ngtcp2",
    ]


def test_handshakes_runs_every_server_with_both_clients(tmp_path: Path) -> None:
    out = run_bench(
        "handshakes.py",
        "--sequential",
        "3",
        "--concurrent",
        "4",
        "--concurrency",
        "2",
        "--rounds",
        "1",
        "--peers",
        "qh3,ngtcp2",
        "--json",
        str(tmp_path / "hs.json"),
        "--svg",
        str(tmp_path / "hs.svg"),
    )
    record = json.loads((tmp_path / "hs.json").read_text())
    seen = {(r["stack"], r["client"], r["phase"]) for r in record["runs"]}
    # servers x clients x phases, less qh3's server with aioquic's clients
    assert len(seen) == 4 * 2 * 2 - 2
    assert ("qh3", "aioquic", "sequential") not in seen
    assert "skipping qh3 server with aioquic clients" in out
    assert "goal (qh3 clients, sequential): quicconn-qh3" in out
    assert len(plotted_rows(tmp_path / "hs.svg")) == 4 * 4 - 2


def test_a_knob_quicconn_does_not_have_fails_clearly(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bulk.py"),
            "--size",
            "1000",
            "--rounds",
            "1",
            "--core",
            "aioquic",
            "--peers",
            "",
            "--set",
            "no_such_knob=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert "no_such_knob" in done.stderr
