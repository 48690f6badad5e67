"""bench/async_handshakes: RSA-4096 server handshakes/s, offloaded vs synchronous.

One quicconn server (a nonblocking event loop on a listener, RSA-4096
certificate) in this process; the load generator (concurrent quicconn
clients, each handshaking, closing and starting over) in a separate process
so it does not compete for the server's GIL.  Rounds alternate between

* ``sync``: the server signs CertificateVerify itself, in its event loop;
* ``process``: MODE_ASYNC with a ProcessPoolEngine - the signature is made
  in a worker process while the event loop serves other handshakes; the
  async callback wakes the loop when a signature is ready;

and the median handshakes/s of each is printed with their ratio.  An RSA-4096
signature costs milliseconds of CPU; with two cores, moving it out of the
event loop's process lets the loop spend that time on other handshakes.

    python bench/async_handshakes.py [--seconds 6] [--rounds 3] [--clients 24]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from _common import env_note, make_certs, median

import quicconn

ALPN = ["bench"]


# ---------------------------------------------------------------------------
# the server (this process)
# ---------------------------------------------------------------------------


class Server:
    """A nonblocking listener loop; optionally MODE_ASYNC with an engine."""

    def __init__(self, certs: object, engine: quicconn.AsyncEngine | None) -> None:
        ctx = quicconn.Context(quicconn.SERVER)
        ctx.load_cert_chain(certs.cert, certs.key)  # type: ignore[attr-defined]
        ctx.set_alpn_protos(ALPN)
        self._notify = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        if engine is not None:
            ctx.set_mode(quicconn.MODE_ASYNC)
            ctx.set_async_engine(engine)
            # Steps 1, 6-8 of SSL_set_async_callback(3): the engine's thread
            # only pokes the loop, which then retries (handle_events()).
            ctx.set_async_callback(self._wake)
        self.listener = ctx.new_listener(
            ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
        )
        self.listener.listen()
        self.listener.set_blocking_mode(False)
        self.port = int(self.listener.local_address()[1])
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="server-loop")
        self._thread.start()

    def _wake(self, conn: object, arg: object) -> None:
        os.eventfd_write(self._notify, 1)

    def _loop(self) -> None:
        listener = self.listener
        live: deque[quicconn.Connection] = deque()
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._notify, select.POLLIN)
        while not self._stop.is_set():
            timeout = listener.get_event_timeout()
            wait = 100.0 if timeout is None else min(timeout * 1000.0, 100.0)
            for fd, _ in poller.poll(wait):
                if fd == self._notify:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._notify)
            listener.handle_events()
            while True:
                conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
                if conn is None:
                    break
                live.append(conn)
            for _ in range(len(live)):
                conn = live.popleft()
                if conn.state is quicconn.ConnState.TERMINATED:
                    if conn.is_init_finished():
                        self.handshakes += 1
                    conn.free()
                else:
                    live.append(conn)
        for conn in live:
            conn.free()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.listener.free()
        os.close(self._notify)


# ---------------------------------------------------------------------------
# the load generator (a separate process)
# ---------------------------------------------------------------------------


def run_clients(port: int, clients: int, warmup: float, seconds: float) -> None:
    """Keep ``clients`` handshakes in flight; print how many completed."""
    ctx = quicconn.Context(quicconn.CLIENT)
    # A load generator, like h2load: it checks the CertificateVerify
    # signature (the TLS stack always does) but not the chain, to leave the
    # CPU to the server.  Both server modes see the same clients.
    ctx.verify_mode = quicconn.VERIFY_NONE
    ctx.set_alpn_protos(ALPN)
    poller = select.poll()
    live: dict[int, tuple[quicconn.Connection, socket.socket]] = {}

    def start() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", port))
        conn = quicconn.Connection(ctx)
        conn.set_fd(sock)
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        live[sock.fileno()] = (conn, sock)
        poller.register(sock.fileno(), select.POLLIN)
        step(sock.fileno())

    def finish(fd: int) -> None:
        conn, sock = live.pop(fd)
        poller.unregister(fd)
        with contextlib.suppress(quicconn.Error):
            conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
        conn.free()
        sock.close()

    counted = 0
    completed = 0
    failures = 0
    begin = time.monotonic()
    measure_from = begin + warmup
    end = measure_from + seconds

    def step(fd: int) -> None:
        nonlocal counted, completed, failures
        conn = live[fd][0]
        try:
            conn.connect()
        except quicconn.WantReadError:
            return
        except quicconn.Error:
            failures += 1
            finish(fd)
            return
        completed += 1
        if time.monotonic() >= measure_from:
            counted += 1
        finish(fd)

    for _ in range(clients):
        start()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        timeouts = [c.get_event_timeout() for c, _ in live.values()]
        due = [t for t in timeouts if t is not None]
        wait = min([end - now, *due]) if due else end - now
        for fd, _ in poller.poll(max(wait, 0.0) * 1000.0):
            if fd in live:
                live[fd][0].handle_events()
                step(fd)
        for fd in [fd for fd, (c, _) in live.items() if c.get_event_timeout() == 0.0]:
            live[fd][0].handle_events()
            step(fd)
        while len(live) < clients:
            start()
    for fd in list(live):
        finish(fd)
    print(f"RESULT {counted} {failures} {completed}", flush=True)


# ---------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children."""
    t = os.times()
    return t.user + t.system, t.children_user + t.children_system


def pid_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by other processes (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fp:
                fields = fp.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Round:
    rate: float  #: handshakes/s in the measured window
    handshakes: int  #: completed over the whole run, warm-up included
    server_cpu: float  #: seconds, this process (event loop, engine threads)
    signer_cpu: float  #: seconds, the engine's worker processes
    client_cpu: float  #: seconds, the load generator

    def per_handshake(self) -> str:
        n = max(self.handshakes, 1)
        return (
            f"CPU ms/handshake: server {self.server_cpu * 1000 / n:.1f}, "
            f"signer {self.signer_cpu * 1000 / n:.1f}, "
            f"clients {self.client_cpu * 1000 / n:.1f}"
        )


def one_round(
    certs: object, engine: quicconn.AsyncEngine | None, args: argparse.Namespace
) -> Round:
    server = Server(certs, engine)
    workers = (
        engine.worker_pids() if isinstance(engine, quicconn.ProcessPoolEngine) else []
    )
    try:
        self0, child0 = cpu_seconds()
        signer0 = pid_cpu_seconds(workers)
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--client-mode",
                str(server.port),
                str(args.clients),
                str(args.warmup),
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            timeout=args.warmup + args.seconds + 60,
        )
        self1, child1 = cpu_seconds()
        signer1 = pid_cpu_seconds(workers)
    finally:
        server.close()
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"load generator failed:\n{proc.stdout}\n{proc.stderr}")
    _, counted, failures, total = line.split()
    if int(failures):
        print(f"  ({failures} handshakes failed)")
    return Round(
        rate=int(counted) / args.seconds,
        handshakes=int(total),
        server_cpu=self1 - self0,
        signer_cpu=signer1 - signer0,
        client_cpu=child1 - child0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--modes",
        default="sync,process",
        help="comma-separated: sync, process, thread (ThreadPoolEngine)",
    )
    parser.add_argument("--client-mode", nargs=4, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client_mode:
        port, clients, warmup, seconds = args.client_mode
        run_clients(int(port), int(clients), float(warmup), float(seconds))
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "sync" not in modes or not set(modes) <= {"sync", "process", "thread"}:
        parser.error("--modes must include sync, plus process and/or thread")
    certs = make_certs("rsa4096")
    print(
        f"RSA-4096 handshakes/s, {args.clients} concurrent clients in another "
        f"process, {args.seconds:g} s per round after {args.warmup:g} s warm-up, "
        f"{args.workers} signing worker(s) ({env_note()}; load average before: "
        f"{os.getloadavg()[0]:.2f})"
    )
    results: dict[str, list[float]] = {m: [] for m in modes}
    with contextlib.ExitStack() as stack:
        engines: dict[str, quicconn.AsyncEngine | None] = {"sync": None}
        if "process" in modes:
            engines["process"] = stack.enter_context(
                quicconn.ProcessPoolEngine(max_workers=args.workers)
            )
        if "thread" in modes:
            engines["thread"] = stack.enter_context(
                quicconn.ThreadPoolEngine(max_workers=args.workers)
            )
        for rnd in range(args.rounds):
            for name in modes:
                result = one_round(certs, engines[name], args)
                results[name].append(result.rate)
                print(
                    f"  round {rnd + 1} {name:8s} {result.rate:7.1f} handshakes/s "
                    f"({result.per_handshake()})"
                )
    sync = median(results["sync"])
    for name in modes:
        print(f"median {name:8s} {median(results[name]):7.1f} handshakes/s")
    for name in modes:
        if name != "sync":
            print(f"ratio {name}/sync: {median(results[name]) / sync:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
