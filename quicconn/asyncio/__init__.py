"""quicconn for asyncio (and uvloop): awaitable QUIC connections and streams.

A quicconn extension: OpenSSL has no event-loop bindings; this package runs
its application-driven event model (poll descriptor, ``SSL_handle_events``,
``SSL_get_event_timeout``) once per socket inside the running loop, so any
number of tasks can use a connection and its streams::

    import quicconn.asyncio as qa

    async def main():
        async with await qa.connect("example.com", 443, alpn=["hq-interop"]) as conn:
            stream = await conn.open_stream()
            await stream.write(b"GET /\\r\\n", end=True)
            print(await stream.read())

    async def handler(conn: qa.Connection) -> None:
        stream = await conn.accept_stream()
        reader, writer = stream.as_streams()
        writer.write(await reader.read())
        writer.close()

    server = await qa.start_server(handler, "0.0.0.0", 4433,
                                   certfile="cert.pem", alpn=["echo"])

See docs/event-loops.md.
"""

from __future__ import annotations

from ._connection import Connection, Stream
from ._driver import AsyncioDriver
from ._server import Server, connect, start_server

__all__ = [
    "AsyncioDriver",
    "Connection",
    "Server",
    "Stream",
    "connect",
    "start_server",
]
