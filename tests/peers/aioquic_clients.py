"""Many aioquic asyncio clients at once, as an independent load generator.

Run as a program (used by tests/test_server_limits.py and bench/handshakes.py)::

    python tests/peers/aioquic_clients.py --port P --ca CA --clients 200 \\
        [--concurrency 200] [--size 65536] [--alpn quicconn-test] [--stack qh3]

``--stack qh3`` runs qh3's asyncio clients instead: qh3 is a fork of
aioquic that keeps its asyncio API (its ClientHello carries an ML-KEM key
share and fills two Initial packets).

Every client opens its own UDP socket, completes a handshake and then, with
``--size N > 0``, sends N bytes of a pattern on one bidirectional stream
with FIN, reads the echo to FIN and checks every byte; with ``--size 0`` it
closes right after the handshake.  ``--concurrency`` clients run at a time
(1 = sequential).  With ``--size 0`` a client gives its place to the next
one as soon as its handshake completes (its close runs on in the
background), so ``--concurrency`` counts handshakes in flight.  The program
prints one JSON line: counts of successes and failures, the first few
errors, wall-clock seconds, and handshakes per second (from the first
start to the last completed handshake).

A client succeeds once its exchange is verified and its CONNECTION_CLOSE is
sent.  The closing period that follows (RFC 9000, section 10.2: three PTOs,
during which aioquic only answers stray packets) is the client's own
bookkeeping: the program does not wait for it.  Its length follows the
client's RTT estimate, and 200 connections in one Python process on a busy
machine measure their own event loop's backlog as RTT (seconds), so waiting
for it would time clients out (and keep the program alive) long after the
server did everything right; ``closing_pending`` counts the clients still
in that period when the program ends.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import ssl
import sys
import time
from collections.abc import Callable

PATTERN = bytes(range(251)) * 1024  # 251 is prime: misplaced bytes show


def pattern_bytes(n: int, seed: int) -> bytes:
    start = seed % 251
    data = PATTERN[start:] + PATTERN
    while len(data) < n:
        data += PATTERN
    return data[:n]


async def one_client(
    args: argparse.Namespace,
    index: int,
    handshaken: Callable[[], None],
    done: asyncio.Future[None],
) -> None:
    connect = importlib.import_module(f"{args.stack}.asyncio").connect
    configuration = importlib.import_module(f"{args.stack}.quic.configuration")
    config = configuration.QuicConfiguration(
        is_client=True,
        alpn_protocols=args.alpn,
        verify_mode=ssl.CERT_REQUIRED,
        idle_timeout=args.idle_timeout,
        server_name="localhost",
    )
    config.load_verify_locations(args.ca)
    async with connect(args.host, args.port, configuration=config) as client:
        handshaken()
        if args.size:
            payload = pattern_bytes(args.size, index)
            reader, writer = await client.create_stream()
            writer.write(payload)
            writer.write_eof()
            echoed = await reader.read()
            if echoed != payload:
                raise AssertionError(
                    f"client {index}: got {len(echoed)} bytes back, "
                    f"expected {len(payload)} (content differs)"
                )
        client.close()
        # Sent now: the exchange is over (see the module docstring).
        client.transmit()
        done.set_result(None)
        await client.wait_closed()


async def run(args: argparse.Namespace) -> dict[str, object]:
    gate = asyncio.Semaphore(args.concurrency)
    closing: set[asyncio.Task[None]] = set()
    errors: list[str] = []
    handshakes: list[float] = []
    ok = 0

    async def guarded(index: int) -> None:
        nonlocal ok
        await gate.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release()

        def handshaken() -> None:
            handshakes.append(time.perf_counter())
            if not args.size:
                release()

        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(one_client(args, index, handshaken, done))
        closing.add(task)
        task.add_done_callback(closing.discard)
        try:
            await asyncio.wait_for(
                asyncio.wait([task, done], return_when="FIRST_COMPLETED"), args.timeout
            )
            if not done.done():
                task.result()  # the client failed: raise its error
                raise AssertionError("the client ended without closing")
        except Exception as exc:
            task.cancel()
            errors.append(f"client {index}: {type(exc).__name__}: {exc}")
        else:
            ok += 1
        finally:
            release()

    started = time.perf_counter()
    await asyncio.gather(*(guarded(i) for i in range(args.clients)))
    span = (max(handshakes) - started) if handshakes else 0.0
    return {
        "ok": ok,
        "failed": len(errors),
        "errors": errors[:5],
        "seconds": time.perf_counter() - started,
        "handshakes_per_s": len(handshakes) / span if span else 0.0,
        "closing_pending": len(closing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=0, help="0: all at once")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--alpn", action="append", default=None)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--stack", choices=["aioquic", "qh3"], default="aioquic")
    args = parser.parse_args()
    args.alpn = args.alpn or ["quicconn-test"]
    args.concurrency = args.concurrency or args.clients
    asyncio.run(run_and_exit(args))


async def run_and_exit(args: argparse.Namespace) -> None:
    """Run, print the result and exit at once: from inside the event loop,
    because asyncio.run would otherwise wait for every client's closing
    period before returning (see the module docstring)."""
    result = await run(args)
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    os._exit(0 if not result["failed"] else 1)


if __name__ == "__main__":
    main()
