"""bench/asyncio: quicconn.asyncio against aioquic's own asyncio client.

Both clients download from the same aioquic asyncio server
(tests/peers/aioquic_server.py, a separate process), in alternating runs
in one invocation:

* one stream: a 50 MB download on one stream of one connection;
* many connections: 100 connections at once, 1 MB each.

Prints goodput, the client's CPU seconds, and the median ratios.

    python bench/asyncio [--size 50000000] [--rounds 5]
        [--connections 100] [--each 1000000] [--uvloop]
"""

from __future__ import annotations

# A folder with a __main__.py, not bench/asyncio.py: a module of that name
# would shadow the standard library's asyncio for every script in bench/.
# The folder has no __init__.py, so it never does.
import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import (
    Sample,
    aioquic_server,
    env_note,
    make_certs,
    measure,
    median,
)

import quicconn
import quicconn.asyncio as qa

ALPN = ["quicconn-test"]


#: aioquic's default idle timeout, for both clients: with 100 connections at
#: once the server's socket (aioquic's default buffer) drops datagrams on a
#: busy machine, and its recovery can leave one connection silent for long.
IDLE_TIMEOUT = 60.0


async def quicconn_fetch(port: int, ca: str, size: int) -> int:
    conn = await qa.connect(
        "localhost", port, alpn=ALPN, cafile=ca, idle_timeout=IDLE_TIMEOUT
    )
    try:
        stream = await conn.open_stream()
        await stream.write(b"send %d\n" % size)
        received = 0
        while chunk := await stream.read():
            received += len(chunk)
        return received
    finally:
        await conn.aclose(flags=quicconn.SHUTDOWN_FLAG_RAPID)


async def aioquic_fetch(port: int, ca: str, size: int) -> int:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=ALPN,
        verify_mode=ssl.CERT_REQUIRED,
        idle_timeout=IDLE_TIMEOUT,
    )
    config.load_verify_locations(ca)
    config.max_data = 4 * 1024 * 1024
    config.max_stream_data = 1024 * 1024
    async with connect("localhost", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(b"send %d\n" % size)
        received = 0
        while chunk := await reader.read(256 * 1024):
            received += len(chunk)
        client.close()
        return received


Fetch = Callable[[int, str, int], Awaitable[int]]


def run_loop(main: Awaitable[int], use_uvloop: bool) -> int:
    if use_uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


def one_stream(fetch: Fetch, port: int, ca: str, size: int, uv: bool) -> Sample:
    with measure() as m:
        received = run_loop(fetch(port, ca, size), uv)
    if received != size:
        raise RuntimeError(f"received {received} of {size} bytes")
    return Sample(m[0], m[1], received)


def many(fetch: Fetch, port: int, ca: str, count: int, each: int, uv: bool) -> Sample:
    async def main() -> int:
        results = await asyncio.gather(*(fetch(port, ca, each) for _ in range(count)))
        return sum(results)

    with measure() as m:
        received = run_loop(main(), uv)
    if received != count * each:
        raise RuntimeError(f"received {received} of {count * each} bytes")
    return Sample(m[0], m[1], received)


def report(title: str, results: dict[str, list[Sample]]) -> None:
    q = median([s.mbit_per_s for s in results["quicconn"]])
    a = median([s.mbit_per_s for s in results["aioquic"]])
    qc = median([s.cpu for s in results["quicconn"]])
    ac = median([s.cpu for s in results["aioquic"]])
    print(
        f"{title}: median goodput quicconn.asyncio {q:.1f} Mbit/s, "
        f"aioquic asyncio {a:.1f} Mbit/s; ratio {q / a:.2f}x"
    )
    print(
        f"{title}: median client CPU quicconn.asyncio {qc:.2f} s, "
        f"aioquic asyncio {ac:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--each", type=int, default=1_000_000)
    parser.add_argument("--uvloop", action="store_true", help="quicconn on uvloop")
    parser.add_argument("--skip-many", action="store_true")
    args = parser.parse_args()
    certs = make_certs()
    ca = str(certs.ca)
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"bench/asyncio: {args.size / 1e6:.0f} MB on one stream and "
        f"{args.connections} x {args.each / 1e6:g} MB connections, "
        f"{args.rounds} rounds alternating; quicconn on {loop}; {env_note()}"
    )
    fetches: dict[str, Fetch] = {"quicconn": quicconn_fetch, "aioquic": aioquic_fetch}
    single: dict[str, list[Sample]] = {"quicconn": [], "aioquic": []}
    multi: dict[str, list[Sample]] = {"quicconn": [], "aioquic": []}
    with aioquic_server(certs) as port:
        for i in range(args.rounds):
            for name, fetch in fetches.items():
                uv = args.uvloop and name == "quicconn"
                sample = one_stream(fetch, port, ca, args.size, uv)
                single[name].append(sample)
                print(
                    f"  round {i + 1} one stream  {name:9s} "
                    f"{sample.mbit_per_s:7.1f} Mbit/s  {sample.seconds:6.2f} s wall  "
                    f"{sample.cpu:6.2f} s CPU",
                    flush=True,
                )
            if args.skip_many:
                continue
            for name, fetch in fetches.items():
                uv = args.uvloop and name == "quicconn"
                sample = many(fetch, port, ca, args.connections, args.each, uv)
                multi[name].append(sample)
                print(
                    f"  round {i + 1} {args.connections} conns  {name:9s} "
                    f"{sample.mbit_per_s:7.1f} Mbit/s  {sample.seconds:6.2f} s wall  "
                    f"{sample.cpu:6.2f} s CPU",
                    flush=True,
                )
    report("one stream", single)
    if not args.skip_many:
        report(f"{args.connections} connections", multi)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
