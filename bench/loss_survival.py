"""bench/loss_survival: does a 2 MB echo survive 30% loss in both directions?

A quicconn listener (echoing its default stream) and a quicconn client run
in this process on real loopback sockets, with interop.netsim's relay
between them: random loss in each direction from a seeded generator
(``--loss`` percent, no burst cap), ``--delay`` seconds one way, no rate
limit.  Each run sends ``--size`` bytes, concludes, and reads the echo to
its FIN; it counts only if every byte came back in order.  Runs are
repeated with seeds 0..``--runs``-1 on every installed core (or
``--core``), and the counts printed: the goal is at least 9 of 10.

    python bench/loss_survival.py [--runs 10] [--size 2000000] [--loss 30]
        [--delay 0.005] [--core qh3] [--timeout 180]

Runs against whatever quicconn ``PYTHONPATH`` points at, so the same script
measures a tree before and after a change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # interop.netsim; quicconn comes from PYTHONPATH

import quicconn  # noqa: E402
from interop.netsim import LinkSpec, NetSim, NetSimConfig  # noqa: E402
from quicconn._certs import CertFiles, make_pki  # noqa: E402
from quicconn._core import registry  # noqa: E402
from quicconn.testing import ImpairmentSpec  # noqa: E402

ALPN = ["quicconn-test"]


class Echo:
    """A nonblocking echo of each accepted connection's default stream."""

    def __init__(self, listener: quicconn.Listener) -> None:
        self.listener = listener
        self.conns: dict[quicconn.Connection, list] = {}
        self.errors: list[str] = []

    def step(self) -> None:
        while (conn := self.listener.accept_connection()) is not None:
            conn.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
            self.conns[conn] = [bytearray(), False, False]
        for conn, state in list(self.conns.items()):
            pending, fin, concluded = state
            try:
                while not fin:
                    try:
                        pending += conn.read(65536)
                    except quicconn.WantReadError:
                        break
                    except quicconn.ZeroReturnError:
                        fin = state[1] = True
                while pending:
                    try:
                        del pending[: conn.write(pending)]
                    except quicconn.WantWriteError:
                        break
                if fin and not pending and not concluded:
                    conn.stream_conclude()
                    state[2] = True
            except quicconn.Error as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                del self.conns[conn]
                conn.free()


def run(
    certs: CertFiles,
    core: str,
    seed: int,
    size: int,
    loss: float,
    delay: float,
    timeout: float,
) -> dict[str, object]:
    sctx = quicconn.Context(quicconn.SERVER, core=core)
    sctx.load_cert_chain(certs.cert, certs.key)
    sctx.set_alpn_protos(ALPN)
    lst = sctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    lst.listen()
    echo = Echo(lst)
    lossy = LinkSpec(
        delay=delay,
        bandwidth=None,
        queue=None,
        impairment=ImpairmentSpec(drop_rate=loss),
    )
    config = NetSimConfig(
        server=("127.0.0.1", int(lst.local_address()[1])),
        to_server=lossy,
        to_client=lossy,
        seed=seed,
    )
    payload = os.urandom(size)
    got = bytearray()
    outcome = "timeout"
    started = time.monotonic()
    with NetSim(config) as sim:
        cctx = quicconn.Context(quicconn.CLIENT, core=core)
        cctx.load_verify_locations(certs.ca)
        cctx.set_alpn_protos(ALPN)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        conn = quicconn.Connection(cctx)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(sim.address)
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        conn.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
        sent = 0
        concluded = False
        while time.monotonic() - started < timeout:
            lst.handle_events()
            echo.step()
            try:
                if sent < size:
                    with contextlib.suppress(
                        quicconn.WantWriteError, quicconn.WantReadError
                    ):
                        sent += conn.write(payload[sent : sent + 65536])
                elif not concluded:
                    conn.stream_conclude()
                    concluded = True
                while True:
                    got += conn.read(65536)
            except (quicconn.WantReadError, quicconn.WantWriteError):
                pass
            except quicconn.ZeroReturnError:
                outcome = "ok" if bytes(got) == payload else "corrupt"
                break
            except quicconn.Error as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                break
            waits = [0.05]
            for obj in (lst, conn):
                t = obj.get_event_timeout()
                if t is not None:
                    waits.append(t)
            select.select([lst.fileno(), conn.fileno()], [], [], max(0.0, min(waits)))
        conn.free()
        sock.close()
        drops = sim.fates("to_server").get("drop", 0) + sim.fates("to_client").get(
            "drop", 0
        )
    for server_conn in list(echo.conns):
        server_conn.free()
    lst.free()
    return {
        "core": core,
        "seed": seed,
        "outcome": outcome,
        "seconds": round(time.monotonic() - started, 1),
        "echoed": len(got),
        "dropped": drops,
        "server_errors": echo.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=2_000_000)
    parser.add_argument("--loss", type=float, default=30.0)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--core", action="append")
    args = parser.parse_args()
    cores = args.core or list(registry.available())
    certs = make_pki(Path(tempfile.mkdtemp(prefix="quicconn-bench-")))
    print(
        f"# quicconn from {Path(quicconn.__file__).parent}; {args.size} bytes echoed "
        f"through {args.loss:g}% loss each way, {args.delay * 1000:g} ms each way"
    )
    totals = {}
    for core in cores:
        ok = 0
        for seed in range(args.runs):
            result = run(
                certs, core, seed, args.size, args.loss, args.delay, args.timeout
            )
            ok += result["outcome"] == "ok"
            print(json.dumps(result), flush=True)
        totals[core] = f"{ok}/{args.runs}"
    print(json.dumps({"byte_exact": totals}))


if __name__ == "__main__":
    main()
