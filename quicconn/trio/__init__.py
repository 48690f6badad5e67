"""quicconn for trio: QUIC connections, streams as ``trio.abc.HalfCloseableStream``,
listeners as ``trio.abc.Listener``.

A quicconn extension (OpenSSL has no event-loop bindings): one driver task
per socket runs OpenSSL's application-driven event model inside the trio
run, so any number of tasks can share a connection::

    import trio
    import quicconn.trio as qt

    async def handler(conn: qt.Connection) -> None:
        stream = await conn.accept_stream()
        await stream.send_all(await stream.receive_some())
        await stream.send_eof()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(
                qt.serve_quic, handler, "127.0.0.1", 4433,
                certfile="cert.pem", alpn=["echo"])

See docs/event-loops.md.
"""

from __future__ import annotations

from ._driver import TrioDriver
from ._objects import Connection, Listener, Stream
from ._serve import connect, open_quic_listener, serve_quic

__all__ = [
    "Connection",
    "Listener",
    "Stream",
    "TrioDriver",
    "connect",
    "open_quic_listener",
    "serve_quic",
]
