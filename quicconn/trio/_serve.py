"""``connect()``, ``open_quic_listener()`` and ``serve_quic()`` for trio."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from .._objects.context import Context
from .._objects.convenience import client_connection, client_context, server_context
from ._objects import Connection, Listener

Handler = Callable[[Connection], Awaitable[object]]


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
    """Open a handshaken QUIC connection in the current ``trio.run``.

    The trio form of :func:`quicconn.connect` (same arguments).
    """
    if context is None:
        context = client_context(alpn, cafile, verify, ctx_options, "connect")
    elif alpn or cafile or ctx_options:
        raise TypeError("connect(): pass either context= or context settings")
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    quic = client_connection(context, host, list(infos))
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


async def open_quic_listener(
    host: str,
    port: int,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    alpn: list[str] | None = None,
    context: Context | None = None,
    flags: int = 0,
    **ctx_options: Any,
) -> Listener:
    """A :class:`Listener` on ``(host, port)`` (SSL_new_listener + SSL_listen)."""
    if context is None:
        context = server_context(certfile, keyfile, alpn, ctx_options, "listen")
    elif certfile or keyfile or alpn or ctx_options:
        raise TypeError("open_quic_listener(): pass either context= or settings")
    await trio.lowlevel.checkpoint()
    return Listener(context.new_listener((host, port), flags))


async def serve_quic(
    handler: Handler,
    host: str,
    port: int,
    *,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[Listener]] = trio.TASK_STATUS_IGNORED,
    **listener_options: Any,
) -> NoReturn:
    """Serve QUIC on ``(host, port)`` forever, as :func:`trio.serve_tcp`:
    each connection, once handshaken, goes to ``handler`` in a task of a
    nursery; ``nursery.start(serve_quic, ...)`` returns the listeners."""
    listener = await open_quic_listener(host, port, **listener_options)

    async def serve_one(conn: Connection) -> None:
        async with conn:
            await handler(conn)

    await trio.serve_listeners(
        serve_one, [listener], handler_nursery=handler_nursery, task_status=task_status
    )
    raise AssertionError("trio.serve_listeners returned")  # pragma: no cover


__all__ = ["Handler", "connect", "open_quic_listener", "serve_quic"]
