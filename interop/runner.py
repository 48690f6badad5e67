"""The local interop runner: testcases, servers and clients over the simulator.

For one (server, client, testcase) :func:`run_testcase` does what the QUIC
interop runner does with containers, on loopback:

1. makes the ``/www`` files, the ``/certs`` chain and empty ``/downloads``;
2. starts the server and waits until it answers the runner's readiness probe
   (a datagram of version 0x57414954) with Version Negotiation;
3. starts :class:`interop.netsim.NetSim` with the testcase's scenario between
   them, capturing both sides of the link (``trace_node_left/right.pcap``);
4. runs the client (URLs point at the simulator), within the testcase's
   timeout; exit status 127 means "unsupported";
5. stops everything and judges the run from the captures (read by tshark,
   decrypted with the endpoints' key logs) and the downloaded files.

Everything a run leaves (logs, captures, key logs, qlogs) stays in its log
directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .certs import make_chain
from .implementations import (
    Command,
    Endpoint,
    Implementation,
    RunPaths,
    Unsupported,
    endpoint_alpn,
    is_quicconn,
)
from .netsim import NetSim, config_from_scenario
from .testcases import Evidence, Result, Testcase, Unjudgeable, goodput_kbps
from .trace import Trace, TsharkError

#: The version the interop runner's readiness probe uses ("WAIT").
PROBE_VERSION = 0x57414954
UNSUPPORTED_EXIT = 127


@dataclass
class Outcome:
    """The result of one testcase for one pair."""

    server: str
    client: str
    testcase: str
    result: Result
    reason: str = ""
    seconds: float = 0.0
    alpn: str = ""
    values: list[float] = field(default_factory=list)  # measurements
    log_dir: str = ""

    @property
    def value(self) -> float | None:
        return statistics.mean(self.values) if self.values else None


def probe_packet(dcid: bytes = b"\x01" * 8, scid: bytes = b"\x02" * 8) -> bytes:
    """A long-header datagram of the probe version, padded to 1200 bytes."""
    header = (
        bytes([0xC0])
        + PROBE_VERSION.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
    )
    return header + bytes(1200 - len(header))


def wait_until_ready(host: str, port: int, timeout: float = 15.0) -> bool:
    """Probe until the server answers Version Negotiation (version 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(probe_packet(), (host, port))
            ready, _, _ = select.select([sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                time.sleep(0.05)  # ICMP port unreachable: not listening yet
                continue
            if len(data) >= 5 and data[0] & 0x80 and data[1:5] == b"\0\0\0\0":
                return True
    return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(command: Command, log: IO[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own session; on exit kill it and its children."""
    env = os.environ | command.env
    proc = subprocess.Popen(
        command.args,
        env=env,
        cwd=command.cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _run_client(command: Command, log: IO[str], timeout: float) -> int:
    """Run one client process to completion; returns its exit status."""
    env = os.environ | command.env
    log.write(f"$ {' '.join(command.args)}\n")
    log.flush()
    out: IO[bytes] | None = None
    try:
        if command.stdout_path is not None:
            out = open(command.stdout_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            command.args,
            env=env,
            cwd=command.cwd,
            stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
            stdout=out if out is not None else log,
            stderr=log,
            start_new_session=True,
        )
        try:
            if command.stdin is not None and proc.stdin is not None:
                proc.stdin.write(command.stdin)
                proc.stdin.flush()
                if command.stdin_open_until is not None:
                    _close_stdin_when_received(proc, command, timeout)
            return proc.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            log.write(f"client timed out after {timeout:.0f} s\n")
            return -1
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
    finally:
        if out is not None:
            out.close()


def _close_stdin_when_received(
    proc: subprocess.Popen[bytes], command: Command, timeout: float
) -> None:
    assert command.stdout_path is not None and proc.stdin is not None
    deadline = time.monotonic() + timeout
    wanted = command.stdin_open_until or 0
    while proc.poll() is None and time.monotonic() < deadline:
        if command.stdout_path.stat().st_size >= wanted:
            break
        time.sleep(0.02)
    with contextlib.suppress(OSError):
        proc.stdin.close()


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    return lines[-1][:200] if lines else ""


def _valid_keylog(path: Path) -> bool:
    try:
        return "SERVER_HANDSHAKE_TRAFFIC_SECRET" in path.read_text(errors="replace")
    except OSError:
        return False


def _merged_keylog(paths: RunPaths, directory: Path) -> Path | None:
    """Both endpoints' secrets in one file (tshark takes any that match)."""
    parts = [p for p in (paths.client_keylog, paths.server_keylog) if _valid_keylog(p)]
    if not parts:
        return None
    merged = directory / "keys.log"
    merged.write_text("".join(p.read_text(errors="replace") for p in parts))
    return merged


def run_testcase(
    testcase: Testcase,
    server: Implementation,
    client: Implementation,
    log_dir: Path,
    *,
    seed: int = 0,
    repetition: int = 0,
) -> Outcome:
    """Run ``testcase`` once with ``server`` and ``client``; judge it."""
    started = time.monotonic()
    alpn = endpoint_alpn(testcase.name, server, client)
    outcome = Outcome(server.name, client.name, testcase.name, Result.FAILED, alpn=alpn)
    # Absolute: peers run from their own directories.
    run_dir = log_dir.resolve() / f"{server.name}_{client.name}" / testcase.name
    if repetition:
        run_dir = run_dir / str(repetition)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    outcome.log_dir = str(run_dir)
    paths = RunPaths(
        www=run_dir / "www",
        downloads=run_dir / "downloads",
        certs=run_dir / "certs",
        server_keylog=run_dir / "server" / "keys.log",
        client_keylog=run_dir / "client" / "keys.log",
        server_qlog=run_dir / "server" / "qlog",
        client_qlog=run_dir / "client" / "qlog",
    )
    sim_dir = run_dir / "sim"
    for directory in (
        paths.www,
        paths.downloads,
        paths.server_qlog,
        paths.client_qlog,
        sim_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    make_chain(paths.certs, testcase.cert_chain_length)
    files = testcase.make_files(paths.www, random.Random(f"{seed}/{testcase.name}"))

    host = "::1" if testcase.ipv6 else "127.0.0.1"
    port = _free_port(host)
    server_plan = server.server(
        Endpoint(testcase.testname("server"), alpn, host, port, testcase.name),
        paths,
    )
    if isinstance(server_plan, Unsupported):
        return _finish(outcome, Result.UNSUPPORTED, server_plan.reason, started)
    with (
        open(run_dir / "server.log", "w") as server_log,
        open(run_dir / "client.log", "w") as client_log,
    ):
        server_log.write(f"$ {' '.join(server_plan.args)}\n")
        server_log.flush()
        with _process(server_plan, server_log) as server_proc:
            if not wait_until_ready(host, port):
                if server_proc.poll() == UNSUPPORTED_EXIT:
                    return _finish(
                        outcome,
                        Result.UNSUPPORTED,
                        f"server: {_last_line(run_dir / 'server.log')}",
                        started,
                    )
                return _finish(
                    outcome,
                    Result.FAILED,
                    "the server never answered the readiness probe: "
                    + _last_line(run_dir / "server.log"),
                    started,
                )
            config = config_from_scenario(
                testcase.scenario,
                server=(host, port),
                listen=(host, 0),
                seed=f"{seed}/{testcase.name}/{repetition}",
            )
            with NetSim(
                config,
                log_file=sim_dir / "netsim.jsonl",
                keep_records=False,
                pcap_dir=sim_dir,
            ) as sim:
                relay_port = sim.address[1]
                authority = (
                    f"[{host}]:{relay_port}" if ":" in host else f"{host}:{relay_port}"
                )
                requests = [f"https://{authority}/{name}" for name in files]
                plan = client.client(
                    Endpoint(
                        testcase.testname("client"), alpn, host, port, testcase.name
                    ),
                    paths,
                    requests,
                )
                if isinstance(plan, Unsupported):
                    return _finish(outcome, Result.UNSUPPORTED, plan.reason, started)
                deadline = time.monotonic() + testcase.timeout
                status = 0
                for command in plan:
                    status = _run_client(
                        command, client_log, deadline - time.monotonic()
                    )
                    if status != 0:
                        break
            if server_proc.poll() is not None and server_proc.returncode not in (0,):
                server_log.write(f"server exited early: {server_proc.returncode}\n")
    if status == UNSUPPORTED_EXIT:
        return _finish(
            outcome,
            Result.UNSUPPORTED,
            f"client: {_last_line(run_dir / 'client.log')}",
            started,
        )
    if status != 0:
        why = "timed out" if status == -1 else f"exited with status {status}"
        return _finish(
            outcome,
            Result.FAILED,
            f"client {why}: {_last_line(run_dir / 'client.log')}",
            started,
        )
    keylog = _merged_keylog(paths, run_dir)
    if testcase.needs_keylog and keylog is None:
        return _finish(
            outcome, Result.UNSUPPORTED, "no key log to decrypt the capture", started
        )
    try:
        evidence = Evidence(
            www=paths.www,
            downloads=paths.downloads,
            files=files,
            client_trace=Trace(sim_dir / "trace_node_left.pcap", relay_port, keylog),
            server_trace=Trace(sim_dir / "trace_node_right.pcap", port, keylog),
            keylog=keylog,
        )
    except TsharkError as exc:
        return _finish(outcome, Result.FAILED, str(exc), started)
    for check in testcase.checks:
        try:
            failure = check(evidence)
        except Unjudgeable as exc:
            return _finish(outcome, Result.UNSUPPORTED, str(exc), started)
        if failure is not None:
            return _finish(outcome, Result.FAILED, failure, started)
    if testcase.unit is not None:
        value = goodput_kbps(evidence, sum(testcase.files))
        if value is None:
            return _finish(outcome, Result.FAILED, "no 1-RTT data to time", started)
        outcome.values.append(value)
    return _finish(outcome, Result.SUCCEEDED, "", started)


def _finish(outcome: Outcome, result: Result, reason: str, started: float) -> Outcome:
    outcome.result = result
    outcome.reason = reason
    outcome.seconds = time.monotonic() - started
    return outcome


def run(
    testcase: Testcase,
    server: Implementation,
    client: Implementation,
    log_dir: Path,
    *,
    seed: int = 0,
) -> Outcome:
    """Run a testcase; a measurement is repeated and fails if any run fails."""
    if testcase.unit is None:
        return run_testcase(testcase, server, client, log_dir, seed=seed)
    total: Outcome | None = None
    for repetition in range(1, testcase.repetitions + 1):
        outcome = run_testcase(
            testcase, server, client, log_dir, seed=seed, repetition=repetition
        )
        if total is None:
            total = outcome
        else:
            total.values += outcome.values
            total.seconds += outcome.seconds
        if outcome.result is not Result.SUCCEEDED:
            total.result, total.reason = outcome.result, outcome.reason
            break
    assert total is not None
    return total


def pairs(
    servers: Sequence[Implementation], clients: Sequence[Implementation]
) -> list[tuple[Implementation, Implementation]]:
    """Every pair in which quicconn, on any core, takes part (the others are
    not ours to test)."""
    return [
        (s, c)
        for c in clients
        for s in servers
        if (is_quicconn(s) or is_quicconn(c))
        and "server" in s.roles
        and "client" in c.roles
    ]
