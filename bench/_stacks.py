"""The QUIC stacks bench/bulk.py and bench/handshakes.py compare.

Each stack runs as separate processes, a server and a client, so every
process's CPU can be measured on its own:

``quicconn-<core>``
    quicconn on one of its cores (``QUICCONN_CORE`` set for both
    processes): bench/peers/quicconn_peer.py for bulk, and
    examples/quic_server_multi.py as the handshake server.
``qh3`` / ``aioquic``
    qh3's and aioquic's own asyncio stacks: bench/peers/asyncio_peer.py.
``ngtcp2``
    ngtcp2's ``gtlsserver`` / ``gtlsclient`` (C, GnuTLS; Debian's builds
    speak HTTP/3 only, so its bulk download is one HTTP/3 GET of a file).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _common import ROOT

from interop.peers import locate
from interop.runner import wait_until_ready
from tests.support.certs import CertFiles

PEERS = ROOT / "bench" / "peers"
QUICCONN_PEER = PEERS / "quicconn_peer.py"
ASYNCIO_PEER = PEERS / "asyncio_peer.py"
HANDSHAKE_SERVER = ROOT / "examples" / "quic_server_multi.py"
TICKS = os.sysconf("SC_CLK_TCK")

#: quicconn's cores, in the order of quicconn's own "auto" choice.
CORES = ("qh3", "aioquic")
#: The stacks quicconn is measured against.
PEER_STACKS = ("qh3", "aioquic", "ngtcp2")
ALPN = "quicconn-test"


@dataclass
class Transfer:
    """One bulk download, as its client reported it."""

    nbytes: int
    seconds: float
    client_cpu: float
    server_cpu: float = 0.0

    @property
    def mbit_per_s(self) -> float:
        return self.nbytes * 8 / self.seconds / 1e6


@dataclass
class Server:
    port: int
    pid: int
    alpn: str


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM ends the benchmark as Ctrl-C does: its servers are stopped."""

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit("terminated")

    signal.signal(signal.SIGTERM, stop)


def parse_list(text: str | None, known: Sequence[str], what: str) -> list[str]:
    """A comma-separated choice out of ``known`` (all of them if empty)."""
    if text is None:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {known})")
    return names


def missing(stack: str) -> str | None:
    """Why ``stack`` cannot run here, or None."""
    library = stack.removeprefix("quicconn-")
    if library in ("qh3", "aioquic") and importlib.util.find_spec(library) is None:
        return f"{library} is not installed"
    if stack == "ngtcp2":
        paths = locate()
        if paths.gtlsserver is None or paths.gtlsclient is None:
            return "ngtcp2's gtlsserver/gtlsclient are not installed"
    return None


def stacks(cores: Sequence[str], peers: Sequence[str]) -> list[str]:
    """The stacks to run, those that cannot run here left out with a note."""
    chosen = []
    for stack in [*(f"quicconn-{c}" for c in cores), *peers]:
        why = missing(stack)
        if why:
            print(f"  (skipping {stack}: {why})")
        else:
            chosen.append(stack)
    return chosen


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(stack: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p
    )
    if stack.startswith("quicconn-"):
        env["QUICCONN_CORE"] = stack.removeprefix("quicconn-")
    return env


@contextmanager
def _started(
    args: list[str], stack: str, ready: str | None, port: int | None = None
) -> Iterator[tuple[int, int]]:
    """Start a server; yield (port, pid) once it is ready.

    With ``ready`` the port is the second word of the line starting with it;
    otherwise the server was given ``port`` and is probed until it answers.
    """
    # A server with a READY line says so on stdout; gtlsserver's chatter
    # (stderr too, even with -q) is dropped.
    quiet = subprocess.DEVNULL if ready is None else None
    proc = subprocess.Popen(
        args,
        env=_env(stack),
        stdout=subprocess.PIPE if ready is not None else subprocess.DEVNULL,
        stderr=quiet,
        text=True,
    )
    try:
        if ready is not None:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(ready):
                raise RuntimeError(f"{stack} server did not start: {line!r}")
            if port is None:
                port = int(line.split()[1])
        if port is None or not wait_until_ready("127.0.0.1", port):
            raise RuntimeError(f"{stack} server does not answer")
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def bulk_server(
    stack: str, certs: CertFiles, size: int, knobs: Sequence[str] = ()
) -> Iterator[Server]:
    """A server that answers ``send N`` (or, for ngtcp2, GET /file) with ``size``
    bytes."""
    if stack.startswith("quicconn-"):
        args = [sys.executable, str(QUICCONN_PEER), "server"]
        args += ["--cert", str(certs.cert), "--key", str(certs.key)]
        for knob in knobs:
            args += ["--set", knob]
        with _started(args, stack, "READY") as (port, pid):
            yield Server(port, pid, ALPN)
    elif stack in ("qh3", "aioquic"):
        args = [sys.executable, str(ASYNCIO_PEER), "--stack", stack, "server"]
        args += ["--cert", str(certs.cert), "--key", str(certs.key)]
        args += ["--alpn", ALPN, "--alpn", "h3"]
        with _started(args, stack, "READY") as (port, pid):
            yield Server(port, pid, ALPN)
    elif stack == "ngtcp2":
        with _ngtcp2_server(certs, size) as (port, pid):
            yield Server(port, pid, "h3")
    else:
        raise ValueError(f"unknown stack {stack!r}")


@contextmanager
def handshake_server(
    stack: str, certs: CertFiles, retry: bool, *, tickets: bool = True
) -> Iterator[Server]:
    """A server for handshakes only (every stack's clients close right
    after); ``tickets``: it sends a session ticket after each handshake
    (gtlsserver as it comes)."""
    if stack.startswith("quicconn-"):
        port = _free_port()
        args = [sys.executable, str(HANDSHAKE_SERVER), str(port)]
        args += [str(certs.cert), str(certs.key), "--alpn", ALPN]
        if not retry:
            args.append("--no-validate")
        if not tickets:
            args += ["--num-tickets", "0"]
        with _started(args, stack, "Listening", port) as (port, pid):
            yield Server(port, pid, ALPN)
    elif stack in ("qh3", "aioquic"):
        args = [sys.executable, str(ASYNCIO_PEER), "--stack", stack, "server"]
        args += ["--cert", str(certs.cert), "--key", str(certs.key), "--alpn", ALPN]
        if retry:
            args.append("--retry")
        if tickets:
            args.append("--tickets")
        with _started(args, stack, "READY") as (port, pid):
            yield Server(port, pid, ALPN)
    elif stack == "ngtcp2":
        with _ngtcp2_server(certs, 0, retry=retry) as (port, pid):
            yield Server(port, pid, "h3")
    else:
        raise ValueError(f"unknown stack {stack!r}")


@contextmanager
def _ngtcp2_server(
    certs: CertFiles, size: int, *, retry: bool = False
) -> Iterator[tuple[int, int]]:
    gtlsserver = locate().gtlsserver
    assert gtlsserver is not None
    docroot = Path(tempfile.mkdtemp(prefix="quicconn-bench-www-", dir=_scratch()))
    try:
        with (docroot / "file").open("wb") as out:
            out.truncate(size)  # a sparse file: it costs no page cache to make
        port = _free_port()
        args = [gtlsserver, "-q", f"--htdocs={docroot}"]
        if retry:
            args.append("--validate-addr")
        args += ["127.0.0.1", str(port), str(certs.key), str(certs.cert)]
        with _started(args, "ngtcp2", None, port) as started:
            yield started
    finally:
        shutil.rmtree(docroot, ignore_errors=True)


def _scratch() -> str | None:
    """A memory-backed directory for downloads when there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def _run_client(
    args: list[str], stack: str, timeout: float
) -> tuple[str, float, float]:
    """Run a client to its end: (stdout, wall seconds, CPU seconds of the process).

    The CPU is the growth of RUSAGE_CHILDREN: the harness is one thread and
    reaps no other child meanwhile (servers are reaped when they stop).
    """
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, env=_env(stack), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{stack} client timed out after {timeout:.0f} s") from None
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{stack} client exited {proc.returncode}: {err.decode()[-2000:]}"
        )
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return out.decode(), wall, cpu


def bulk_download(
    stack: str, server: Server, certs: CertFiles, size: int, knobs: Sequence[str] = ()
) -> Transfer:
    """One download of ``size`` bytes from ``server``; the server's CPU is
    measured over the client's whole run (handshake, transfer, close)."""
    cpu0 = cpu_seconds(server.pid)
    if stack == "ngtcp2":
        transfer = _ngtcp2_download(server, size)
    else:
        if stack.startswith("quicconn-"):
            args = [sys.executable, str(QUICCONN_PEER), "client"]
            for knob in knobs:
                args += ["--set", knob]
        else:
            args = [sys.executable, str(ASYNCIO_PEER), "--stack", stack, "client"]
        args += ["--port", str(server.port), "--ca", str(certs.ca)]
        args += ["--size", str(size)]
        out, _, _ = _run_client(args, stack, timeout=600)
        report = json.loads(out.strip().splitlines()[-1])
        if stack.startswith("quicconn-") and report["core"] != stack[9:]:
            raise RuntimeError(f"{stack} ran on the {report['core']} core")
        transfer = Transfer(report["bytes"], report["seconds"], report["cpu"])
    time.sleep(0.1)  # the server's share of the close
    transfer.server_cpu = cpu_seconds(server.pid) - cpu0
    if transfer.nbytes != size:
        raise RuntimeError(f"{stack} received {transfer.nbytes} of {size} bytes")
    return transfer


def _ngtcp2_download(server: Server, size: int) -> Transfer:
    """gtlsclient cannot time itself: its process's wall time and CPU are used
    (a C program's start-up is a few milliseconds)."""
    gtlsclient = locate().gtlsclient
    assert gtlsclient is not None
    downloads = Path(tempfile.mkdtemp(prefix="quicconn-bench-dl-", dir=_scratch()))
    try:
        url = f"https://127.0.0.1:{server.port}/file"
        args = [gtlsclient, "-q", "--exit-on-all-streams-close"]
        args += [f"--download={downloads}", "127.0.0.1", str(server.port), url]
        _, wall, cpu = _run_client(args, "ngtcp2", timeout=600)
        got = downloads / "file"
        # gtlsclient exits 0 even when the connection failed: count the bytes.
        nbytes = got.stat().st_size if got.exists() else 0
        return Transfer(nbytes, wall, cpu)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)


#: The handshake load generators: aioquic's or qh3's asyncio clients.
CLIENT_STACKS = ("aioquic", "qh3")

#: (server, clients) pairs that cannot be measured, and why: skipped unless
#: asked for by name.
BROKEN_PAIRS = {
    ("qh3", "aioquic"): (
        "qh3's server credits its anti-amplification budget with the length "
        "of an aioquic client's first Initial packet, not of its padded "
        "datagram, fails to build its reply ('packet builder capacity "
        "exhausted') and answers only the client's retransmission: about one "
        "handshake per second, whatever the server's CPU"
    ),
}


def handshake_clients(
    server: Server, certs: CertFiles, count: int, concurrency: int, client: str
) -> dict[str, object]:
    """tests/peers/aioquic_clients.py with ``client``'s stack: ``count``
    handshakes, ``concurrency`` in flight; returns its JSON report with the
    server's CPU seconds added."""
    cpu0 = cpu_seconds(server.pid)
    args = [sys.executable, str(ROOT / "tests/peers/aioquic_clients.py")]
    args += ["--stack", client]
    args += ["--port", str(server.port), "--ca", str(certs.ca)]
    args += ["--clients", str(count), "--concurrency", str(concurrency)]
    args += ["--size", "0", "--alpn", server.alpn]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    time.sleep(0.1)  # the server's share of the last closes
    report: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    report["server_cpu"] = cpu_seconds(server.pid) - cpu0
    if report["failed"]:
        raise RuntimeError(f"{report['failed']} handshakes failed: {report['errors']}")
    return report


def load_range(runs: list[dict[str, object]]) -> str:
    """The spread of the 1-minute load average over a benchmark's runs."""
    loads = [float(str(r["load"]).split()[1].split("/")[0]) for r in runs]
    return f"load average {min(loads):.1f} to {max(loads):.1f}" if loads else ""


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f}"
