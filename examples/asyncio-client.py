"""An asyncio client on quicconn.asyncio: one HTTP/1.0 request over QUIC.

The connection is driven by the running loop (one driver per socket: the
descriptor registered once, one timer re-armed from the connection's
deadline), so the request and the response are plain awaits, and any other
task keeps running meanwhile; see docs/event-loops.md.

    python examples/asyncio-client.py [--cafile CA] [--uvloop] hostname port
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import quicconn.asyncio as qa


async def fetch(host: str, port: int, cafile: str | None) -> bytes:
    async with await qa.connect(host, port, alpn=["http/1.0"], cafile=cafile) as conn:
        stream = await conn.open_stream()
        request = b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n"
        await stream.write(request, end=True)  # end=True: FIN after the request
        response = bytearray()
        while data := await stream.read():  # b"" at the server's FIN
            response += data
        return bytes(response)


async def run(host: str, port: int, cafile: str | None) -> bytes:
    # Show that the loop stays free: a ticker runs while QUIC proceeds.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await fetch(host, port, cafile)
    finally:
        task.cancel()
        print(f"(the loop ran {ticks} other ticks meanwhile)", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description="quicconn.asyncio client")
    parser.add_argument("--cafile")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("hostname")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    main_coro = run(args.hostname, args.port, args.cafile)
    if args.uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            response = runner.run(main_coro)
    else:
        response = asyncio.run(main_coro)
    sys.stdout.buffer.write(response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
