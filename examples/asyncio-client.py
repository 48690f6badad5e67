"""Driving a nonblocking quicconn connection from an asyncio event loop.

asyncio watches the connection's poll descriptor with ``add_reader`` (and
``add_writer`` while ``net_write_desired()``), and arms a timer from
``get_event_timeout()``; when either fires it calls ``handle_events()`` and
retries the operation.  No thread, no busy loop.

    python examples/asyncio-client.py [--cafile CA] hostname port
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Callable
from typing import TypeVar

import quicconn

T = TypeVar("T")


async def wait_for_activity(conn: quicconn.Connection) -> None:
    loop = asyncio.get_running_loop()
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    fd = conn.get_rpoll_descriptor()
    loop.add_reader(fd, wake)
    writing = conn.net_write_desired()
    if writing:
        loop.add_writer(fd, wake)
    timeout = conn.get_event_timeout()
    timer = loop.call_later(timeout, wake) if timeout is not None else None
    try:
        await woken
    finally:
        loop.remove_reader(fd)
        if writing:
            loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()
    conn.handle_events()  # timers and datagrams: SSL_handle_events


async def call(conn: quicconn.Connection, operation: Callable[[], T]) -> T:
    """Run a nonblocking quicconn call to completion without blocking the loop."""
    while True:
        try:
            return operation()
        except (quicconn.WantReadError, quicconn.WantWriteError):
            await wait_for_activity(conn)


async def fetch(host: str, port: int, cafile: str | None) -> bytes:
    ctx = quicconn.Context(quicconn.CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.load_default_verify_paths()
    ctx.set_alpn_protos(["http/1.0"])
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(infos[0][4])
    conn.set1_host(host)
    conn.set_blocking_mode(False)
    try:
        await call(conn, conn.connect)
        request = b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n"
        await call(conn, lambda: conn.write_ex2(request, quicconn.WRITE_FLAG_CONCLUDE))
        response = bytearray()
        while True:
            try:
                response += await call(conn, conn.read)
            except quicconn.ZeroReturnError:
                break
        while not conn.shutdown():
            await wait_for_activity(conn)
        return bytes(response)
    finally:
        conn.free()
        sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="asyncio-driven quicconn client")
    parser.add_argument("--cafile")
    parser.add_argument("hostname")
    parser.add_argument("port", type=int)
    args = parser.parse_args()

    async def run() -> bytes:
        # Show that the loop stays free: a ticker runs while QUIC proceeds.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            return await fetch(args.hostname, args.port, args.cafile)
        finally:
            task.cancel()
            print(f"(the loop ran {ticks} other ticks meanwhile)", file=sys.stderr)

    sys.stdout.buffer.write(asyncio.run(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
