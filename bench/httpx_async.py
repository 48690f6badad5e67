"""bench/httpx_async.py: httpx.AsyncClient over HTTP/3, three ways.

* quicconn's ``AsyncHTTP3Transport`` on asyncio,
* the same transport on trio,
* aioquic's own httpx transport (``H3Transport`` of aioquic's
  examples/httpx_client.py, on aioquic's asyncio stack): what an httpx user
  would pick instead.

All three download from the same server (``quicconn serve`` in a separate
process), in alternating runs in one invocation:

* one download: one request for a large file;
* many requests: small files, a fixed number in flight at once, on one
  connection (the clients keep one per origin).

Prints goodput or requests per second, the client's CPU seconds, and the
median ratios against aioquic.

    python bench/httpx_async.py [--size 20000000] [--requests 500]
        [--concurrency 50] [--small 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx
from _common import ROOT, env_note, make_certs, measure, median

import quicconn.http

EXAMPLES = ROOT / ".peers" / "aioquic-examples"


@contextmanager
def quicconn_serve(root: Path, cert: str, key: str) -> Iterator[int]:
    """``quicconn serve ROOT`` on a free port; yield the port."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quicconn",
            "serve",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cert",
            cert,
            "--key",
            key,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if "serving" not in line:
            raise RuntimeError(f"quicconn serve did not start: {line!r}")
        found = re.search(r"https://\S+:(\d+)/", line)
        assert found is not None, line
        yield int(found.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the work, whatever the client ---------------------------------------------


async def one_download(http: httpx.AsyncClient, base: str, size: int) -> int:
    received = 0
    async with http.stream("GET", f"{base}/big.bin") as response:
        async for chunk in response.aiter_raw():
            received += len(chunk)
    if received != size:
        raise RuntimeError(f"received {received} of {size} bytes")
    return received


async def worker(http: httpx.AsyncClient, base: str, count: int, small: int) -> int:
    received = 0
    for _ in range(count):
        response = await http.get(f"{base}/small.bin")
        if len(response.content) != small:
            raise RuntimeError("a short response")
        received += len(response.content)
    return received


Work = Callable[[httpx.AsyncClient], Awaitable[int]]


def quicconn_asyncio(ca: str, work: Work, parallel: int) -> int:
    async def main() -> int:
        transport = quicconn.http.AsyncHTTP3Transport(verify=ca)
        async with httpx.AsyncClient(transport=transport, timeout=60) as http:
            return sum(await asyncio.gather(*[work(http) for _ in range(parallel)]))

    return asyncio.run(main())


def quicconn_trio(ca: str, work: Work, parallel: int) -> int:
    import trio

    async def main() -> int:
        total = [0]
        transport = quicconn.http.AsyncHTTP3Transport(verify=ca)
        async with httpx.AsyncClient(transport=transport, timeout=60) as http:

            async def one() -> None:
                total[0] += await work(http)

            async with trio.open_nursery() as nursery:
                for _ in range(parallel):
                    nursery.start_soon(one)
        return total[0]

    return trio.run(main)


def aioquic_asyncio(ca: str, work: Work, parallel: int, port: int) -> int:
    sys.path.insert(0, str(EXAMPLES))
    from aioquic.asyncio.client import connect
    from aioquic.h3.connection import H3_ALPN
    from aioquic.quic.configuration import QuicConfiguration
    from httpx_client import H3Transport  # aioquic's example transport

    async def main() -> int:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_REQUIRED
        )
        config.load_verify_locations(ca)
        async with connect(
            "localhost", port, configuration=config, create_protocol=H3Transport
        ) as transport:
            transport = cast(Any, transport)
            async with httpx.AsyncClient(transport=transport, timeout=60) as http:
                return sum(await asyncio.gather(*[work(http) for _ in range(parallel)]))

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20_000_000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    certs = make_certs()
    ca = str(certs.ca)
    root = Path(tempfile.mkdtemp(prefix="quicconn-bench-www-"))
    (root / "big.bin").write_bytes(os.urandom(args.size))
    (root / "small.bin").write_bytes(os.urandom(args.small))
    per_worker = args.requests // args.concurrency
    total_requests = per_worker * args.concurrency
    print(
        f"bench/httpx_async: one {args.size / 1e6:g} MB download; "
        f"{total_requests} x {args.small / 1e3:g} KB requests, "
        f"{args.concurrency} at once; {args.rounds} rounds alternating; "
        f"server: quicconn serve (core {quicconn.Context(quicconn.SERVER).core}); "
        f"{env_note()}"
    )
    with quicconn_serve(root, str(certs.cert), str(certs.key)) as port:
        base = f"https://localhost:{port}"
        clients: dict[str, Callable[[Work, int], int]] = {
            "quicconn asyncio": lambda w, n: quicconn_asyncio(ca, w, n),
            "quicconn trio": lambda w, n: quicconn_trio(ca, w, n),
            "aioquic asyncio": lambda w, n: aioquic_asyncio(ca, w, n, port),
        }
        big: dict[str, list[float]] = {name: [] for name in clients}
        big_cpu: dict[str, list[float]] = {name: [] for name in clients}
        many: dict[str, list[float]] = {name: [] for name in clients}
        many_cpu: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(args.rounds):
            for name, run in clients.items():

                async def download(http: httpx.AsyncClient) -> int:
                    return await one_download(http, base, args.size)

                with measure() as m:
                    run(download, 1)
                big[name].append(args.size * 8 / m[0] / 1e6)
                big_cpu[name].append(m[1])
                print(
                    f"  round {i + 1} download  {name:17s} {big[name][-1]:7.1f} "
                    f"Mbit/s  {m[0]:6.2f} s wall  {m[1]:6.2f} s CPU",
                    flush=True,
                )

                async def requests(http: httpx.AsyncClient) -> int:
                    return await worker(http, base, per_worker, args.small)

                time.sleep(0.2)
                with measure() as m:
                    run(requests, args.concurrency)
                many[name].append(total_requests / m[0])
                many_cpu[name].append(m[1])
                print(
                    f"  round {i + 1} requests  {name:17s} {many[name][-1]:7.1f} "
                    f"req/s   {m[0]:6.2f} s wall  {m[1]:6.2f} s CPU",
                    flush=True,
                )
    base_big = median(big["aioquic asyncio"])
    base_many = median(many["aioquic asyncio"])
    for name in clients:
        print(
            f"{name:17s}: download median {median(big[name]):7.1f} Mbit/s "
            f"({median(big[name]) / base_big:.2f}x aioquic), CPU "
            f"{median(big_cpu[name]):.2f} s; requests median "
            f"{median(many[name]):7.1f} req/s ({median(many[name]) / base_many:.2f}x "
            f"aioquic), CPU {median(many_cpu[name]):.2f} s"
        )


if __name__ == "__main__":
    main()
