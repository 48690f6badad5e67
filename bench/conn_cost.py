"""bench/conn_cost: what a half-open and an idle connection cost a server.

A quicconn listener runs in this process; everything that talks to it runs
in child processes, so that only the server's own allocations and CPU are
counted.  Two measurements, each on a fresh listener:

* **half-open**: a child makes ``--half-open`` silent ClientHellos (the
  first flight of a quicconn client that is then thrown away: real
  Initials that never continue) and sends them to a listener that does not
  accept (Retry off, as against an attacker that answers Retry).  The
  server's bytes per connection (tracemalloc: what Python code allocated
  and still holds; RSS: the process's resident set, which also counts the
  Rust core's allocations) and CPU milliseconds per connection (process
  time of the ticks that processed them), then the same after the
  handshake timeout (or 40 s, whichever the tree has) let them expire.
* **idle**: a child opens ``--idle`` connections that complete their
  handshakes and then send nothing; the server accepts them all.  Bytes
  per connection as above, and the server's CPU over ``--idle-window``
  seconds of idleness (0 means an idle connection costs no wake-ups).

    python bench/conn_cost.py [--half-open 500] [--idle 200] [--core qh3]

Runs against whatever quicconn ``PYTHONPATH`` points at, so the same script
measures a tree before and after a change.  Prints one JSON line per
measurement and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import quicconn
from quicconn._certs import CertFiles, make_pki
from quicconn._io.transport import Datagram, UdpTransport
from quicconn._objects.listener import port_of

ALPN = ["quicconn-test"]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * PAGE


def trim() -> None:
    """Collect garbage and hand free heap pages back (glibc malloc_trim)."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- child: silent ClientHellos ------------------------------------------------


class _Recorder(UdpTransport):
    """A client transport that records what it would send and sends nothing."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.sent: list[bytes] = []

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        self.sent.extend(bytes(d) for d, _ in datagrams)


def silent_client_hellos(count: int, ca: str, core: str | None) -> list[list[bytes]]:
    """The first flight of ``count`` fresh clients (one or two Initials each)."""
    ctx = quicconn.Context(quicconn.CLIENT, core=core)
    ctx.load_verify_locations(ca)
    ctx.set_alpn_protos(ALPN)
    flights = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    for _ in range(count):
        recorder = _Recorder(sock)
        conn = quicconn.Connection(ctx)
        conn.set_transport(recorder)
        conn.set1_initial_peer_addr(("127.0.0.1", 9))
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        with contextlib.suppress(quicconn.WantReadError):
            conn.connect()
        flights.append(recorder.sent)
        conn.free()
    sock.close()
    return flights


def child_flood(port: int, count: int, ca: str, core: str | None) -> None:
    flights = silent_client_hellos(count, ca, core)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("READY", flush=True)
    sys.stdin.readline()
    sent = 0
    for i, flight in enumerate(flights):
        for datagram in flight:
            sock.sendto(datagram, ("127.0.0.1", port))
            sent += len(datagram)
        if i % 20 == 19:
            time.sleep(0.01)  # let the server's socket buffer drain
    print(json.dumps({"sent_bytes": sent, "datagrams": sum(map(len, flights))}))


# -- child: idle clients ---------------------------------------------------------


def child_idle(port: int, count: int, ca: str, core: str | None, hold: float) -> None:
    ctx = quicconn.Context(quicconn.CLIENT, core=core)
    ctx.load_verify_locations(ca)
    ctx.set_alpn_protos(ALPN)
    if hasattr(ctx, "handshake_timeout"):
        # A hundred handshakes in one loop on a busy machine: the client
        # side's patience is not what is measured.
        ctx.handshake_timeout = 0
    conns = []
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        conn = quicconn.Connection(ctx)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", port))
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        conns.append(conn)
        socks.append(sock)
    pending = set(range(count))
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            try:
                conns[i].connect()
                pending.discard(i)
            except quicconn.WantReadError:
                pass
        waits = [t for c in conns if (t := c.get_event_timeout()) is not None]
        select.select(socks, [], [], min([0.05, *waits]))
    print(json.dumps({"connected": count - len(pending)}), flush=True)
    end = time.monotonic() + hold
    while time.monotonic() < end:
        for conn in conns:
            conn.handle_events()
        waits = [t for c in conns if (t := c.get_event_timeout()) is not None]
        select.select(
            socks, [], [], max(0.0, min([0.5, end - time.monotonic(), *waits]))
        )


# -- the server ------------------------------------------------------------------


def listener(certs: CertFiles, core: str | None, **limits: float) -> quicconn.Listener:
    ctx = quicconn.Context(quicconn.SERVER, core=core)
    ctx.load_cert_chain(certs.cert, certs.key)
    ctx.set_alpn_protos(ALPN)
    for name, value in limits.items():
        if hasattr(ctx, name):
            setattr(ctx, name, value)
    lst = ctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    lst.listen()
    return lst


def serve_for(
    lst: quicconn.Listener, seconds: float, accept: list | None = None
) -> None:
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        lst.handle_events()
        if accept is not None:
            while (conn := lst.accept_connection()) is not None:
                accept.append(conn)
        timeout = lst.get_event_timeout()
        wait = end - now if timeout is None else min(timeout, end - now)
        select.select([lst.fileno()], [], [], max(0.0, wait))


def child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _flood(
    certs: CertFiles, count: int, core: str | None, traced: bool
) -> tuple[quicconn.Listener, dict[str, float]]:
    """Send ``count`` silent ClientHellos to a fresh listener; what it cost."""
    lst = listener(
        certs,
        core,
        max_pending_connections=count * 2,
        max_connections=count * 2,
        max_handshakes=count * 2,
    )
    port = int(lst.local_address()[1])
    args = ["--child-flood", str(port), str(count), str(certs.ca)]
    proc = child(args + (["--core", core] if core else []))
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().startswith("READY")
    serve_for(lst, 0.2)
    trim()
    if traced:
        tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    rss0 = rss()
    cpu0 = cpu()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    flood = json.loads(proc.stdout.readline())
    proc.wait(timeout=30)
    serve_for(lst, 1.0)
    busy = cpu() - cpu0
    made = max(lst.stats.connections_accepted, 1)
    gc.collect()
    result = {
        "half_open_made": lst.stats.connections_accepted,
        "flood_bytes": flood["sent_bytes"],
        "live": port_of(lst).live,
        "traced0": traced0,
    }
    if traced:
        result["bytes_traced_each"] = (
            tracemalloc.get_traced_memory()[0] - traced0
        ) / made
    else:
        result["bytes_rss_each"] = (rss() - rss0) / made
        result["cpu_ms_each"] = busy * 1000 / made
    return lst, result


def half_open(certs: CertFiles, count: int, core: str | None) -> dict[str, float]:
    # CPU and RSS without tracemalloc (which slows Python down severalfold),
    # then Python's own bytes with it, on a second listener.
    lst, untraced = _flood(certs, count, core, traced=False)
    lst.free()
    lst, result = _flood(certs, count, core, traced=True)
    result.update(untraced)
    # Let them expire: the handshake timeout, or the idle timeout before it.
    expiry = 8.0 if hasattr(lst, "max_handshakes") else 40.0
    serve_for(lst, expiry)
    trim()
    result["expired_after_s"] = expiry
    result["live_after"] = port_of(lst).live
    result["traced_left_after"] = tracemalloc.get_traced_memory()[0] - result.pop(
        "traced0"
    )
    tracemalloc.stop()
    lst.free()
    return result


def idle(
    certs: CertFiles, count: int, core: str | None, window: float
) -> dict[str, float]:
    lst = listener(certs, core, max_pending_connections=count * 2)
    port = int(lst.local_address()[1])
    accepted: list[quicconn.Connection] = []
    serve_for(lst, 0.2)
    trim()
    tracemalloc.start()
    traced0 = tracemalloc.get_traced_memory()[0]
    rss0 = rss()
    args = ["--child-idle", str(port), str(count), str(certs.ca), str(window + 30)]
    proc = child(args + (["--core", core] if core else []))
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while len(accepted) < count and time.monotonic() < deadline:
        serve_for(lst, 0.1, accepted)
    for conn in accepted:
        with contextlib.suppress(quicconn.Error):
            conn.accept()
    serve_for(lst, 1.0, accepted)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced0
    grown = rss() - rss0
    tracemalloc.stop()
    cpu0 = cpu()
    wake_ups = 0
    end = time.monotonic() + window
    while (now := time.monotonic()) < end:
        lst.handle_events()
        wake_ups += 1
        timeout = lst.get_event_timeout()
        wait = end - now if timeout is None else min(timeout, end - now)
        select.select([lst.fileno()], [], [], max(0.0, wait))
    idle_cpu = cpu() - cpu0
    proc.kill()
    proc.wait()
    for conn in accepted:
        conn.free()
    lst.free()
    n = max(len(accepted), 1)
    return {
        "idle_connections": len(accepted),
        "bytes_traced_each": traced / n,
        "bytes_rss_each": grown / n,
        "idle_window_s": window,
        "idle_cpu_ms_total": idle_cpu * 1000,
        "wake_ups": wake_ups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half-open", type=int, default=500)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--idle-window", type=float, default=5.0)
    parser.add_argument("--core", default=None)
    parser.add_argument("--child-flood", nargs=3)
    parser.add_argument("--child-idle", nargs=4)
    args = parser.parse_args()
    if args.child_flood:
        port, count, ca = args.child_flood
        child_flood(int(port), int(count), ca, args.core)
        return
    if args.child_idle:
        port, count, ca, hold = args.child_idle
        child_idle(int(port), int(count), ca, args.core, float(hold))
        return
    certs = make_pki(Path(tempfile.mkdtemp(prefix="quicconn-bench-")))
    core = quicconn.Context(quicconn.SERVER, core=args.core).core
    print(
        f"# quicconn from {Path(quicconn.__file__).parent}, core {core}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    )
    results = {"core": core}
    if args.half_open:
        results["half_open"] = half_open(certs, args.half_open, args.core)
        print(json.dumps(results["half_open"]), flush=True)
    if args.idle:
        results["idle"] = idle(certs, args.idle, args.core, args.idle_window)
        print(json.dumps(results["idle"]), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
