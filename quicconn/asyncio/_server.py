"""``connect()`` and ``start_server()``: the asyncio entry points."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from .._constants import ACCEPT_CONNECTION_NO_BLOCK
from .._errors import Error
from .._io.transport import Address
from .._objects.connection import Connection as QuicConnection
from .._objects.context import Context
from .._objects.convenience import client_connection, client_context, server_context
from .._objects.listener import Listener
from .._objects.surface import events_reactor
from ._connection import Connection
from ._driver import AsyncioDriver, driver_for

logger = logging.getLogger("quicconn.asyncio")

Handler = Callable[[Connection], Awaitable[None]]


async def connect(
    host: str,
    port: int,
    *,
    alpn: list[str] | None = None,
    cafile: str | os.PathLike[str] | None = None,
    verify: bool = True,
    context: Context | None = None,
    **ctx_options: Any,
) -> Connection:
    """Open a handshaken QUIC connection on the running loop.

    The asyncio form of :func:`quicconn.connect`: a UDP socket of its own,
    the server's certificate verified against ``cafile`` (or the system
    store) and ``host`` unless ``verify=False``; other keyword arguments
    set :class:`~quicconn.Context` attributes.  Pass ``context=`` to use a
    client context of your own instead.
    """
    if context is None:
        context = client_context(alpn, cafile, verify, ctx_options, "connect")
    elif alpn or cafile or ctx_options:
        raise TypeError("connect(): pass either context= or context settings")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    quic = client_connection(context, host, infos)
    try:
        conn = Connection(quic)
    except BaseException:
        quic.free()
        raise
    try:
        await conn.do_handshake()
    except BaseException:
        conn.abort()
        raise
    return conn


class Server:
    """A QUIC listener serving connections on the running loop.

    Made by :func:`start_server`; like :class:`asyncio.Server` it can be
    used with ``async with`` and :meth:`serve_forever`.  Each accepted
    connection completes its handshake and is handed to the handler in a
    task of its own; it is closed gracefully when the handler returns.
    """

    def __init__(self, listener: Listener, handler: Handler | None) -> None:
        listener.set_blocking_mode(False)
        listener.listen()
        self.listener = listener
        self._handler = handler
        self._driver: AsyncioDriver = driver_for(events_reactor(listener))
        self._driver.add_condition(
            listener, lambda: listener.get_accept_connection_queue_len() > 0
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None
        self._closed = False
        self._closed_event = asyncio.Event()
        if handler is not None:
            self._accepting = asyncio.get_running_loop().create_task(self._serve())

    def local_address(self) -> Address:
        """The address the server receives on."""
        return self.listener.local_address()

    async def accept(self) -> Connection:
        """The next incoming connection, possibly mid-handshake
        (SSL_accept_connection); its :meth:`~Connection.do_handshake`
        completes it.  For a server made without a handler."""
        listener = self.listener

        def attempt() -> QuicConnection | None:
            if self._closed:
                raise ValueError("the server was closed")
            return listener.accept_connection(ACCEPT_CONNECTION_NO_BLOCK)

        quic = await self._driver.complete(lambda: listener, attempt)
        return Connection(quic)

    async def _serve(self) -> None:
        while not self._closed:
            try:
                conn = await self.accept()
            except ValueError:
                return
            task = asyncio.get_running_loop().create_task(self._run(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        assert self._handler is not None
        try:
            await conn.do_handshake()
            await self._handler(conn)
        except Error as exc:
            logger.info("connection %r ended: %s", conn, exc)
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception:
            logger.exception("the connection handler failed")
        finally:
            if not conn.closed:
                try:
                    await conn.aclose()
                except Error:
                    conn.abort()

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stop accepting; connections being served go on (asyncio.Server)."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.cancel()
        self._driver.remove_condition(self.listener)
        self.listener.free()
        self._driver.wake(self.listener)  # a task in accept() sees the close
        self._closed_event.set()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler returned."""
        await self._closed_event.wait()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close."""
        try:
            await asyncio.Future()
        finally:
            self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        for task in list(self._tasks):
            task.cancel()
        await self.wait_closed()


async def start_server(
    handler: Handler | None,
    host: str,
    port: int,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    alpn: list[str] | None = None,
    context: Context | None = None,
    flags: int = 0,
    **ctx_options: Any,
) -> Server:
    """Listen on ``(host, port)`` and run ``await handler(connection)`` for
    every connection, in a task of its own, once its handshake completed.

    The asyncio form of :func:`quicconn.listen` (SSL_new_listener,
    SSL_listen, SSL_accept_connection), shaped like
    :func:`asyncio.start_server`.  ``handler=None`` makes a server whose
    connections come from :meth:`Server.accept`.  ``flags`` are
    ``LISTENER_FLAG_*``; other keyword arguments set
    :class:`~quicconn.Context` attributes.
    """
    if context is None:
        context = server_context(certfile, keyfile, alpn, ctx_options, "start_server")
    elif certfile or keyfile or alpn or ctx_options:
        raise TypeError("start_server(): pass either context= or context settings")
    listener = context.new_listener((host, port), flags)
    try:
        return Server(listener, handler)
    except BaseException:
        listener.free()
        raise


__all__ = ["Handler", "Server", "connect", "start_server"]
