"""Contexts and client connections made from keyword arguments: what
:func:`quicconn.connect` and :func:`quicconn.listen` do, shared by the
event-loop packages (quicconn.asyncio, quicconn.trio)."""

from __future__ import annotations

import os
import socket
from typing import Any

from .._constants import CLIENT, SERVER, VERIFY_NONE
from .._io.transport import enlarge_socket_buffers
from .connection import Connection as QuicConnection
from .context import Context


def apply_options(ctx: Context, options: dict[str, Any], caller: str) -> None:
    """Set :class:`~quicconn.Context` attributes named by keyword arguments."""
    for name, value in options.items():
        if (
            name.startswith("_")
            or not hasattr(ctx, name)
            or callable(getattr(ctx, name))
        ):
            raise TypeError(f"{caller}() got an unknown option {name!r}")
        setattr(ctx, name, value)


def client_context(
    alpn: list[str] | None,
    cafile: str | os.PathLike[str] | None,
    verify: bool,
    options: dict[str, Any],
    caller: str,
) -> Context:
    """A client context as :func:`quicconn.connect` makes one."""
    ctx = Context(CLIENT)
    if verify:
        if cafile is not None:
            ctx.load_verify_locations(cafile)
        else:
            ctx.load_default_verify_paths()
    else:
        ctx.verify_mode = VERIFY_NONE
    if alpn:
        ctx.set_alpn_protos(alpn)
    apply_options(ctx, options, caller)
    return ctx


def server_context(
    certfile: str | os.PathLike[str] | None,
    keyfile: str | os.PathLike[str] | None,
    alpn: list[str] | None,
    options: dict[str, Any],
    caller: str,
) -> Context:
    """A server context as :func:`quicconn.listen` makes one."""
    if certfile is None:
        raise TypeError(f"{caller}() needs certfile= (or context=)")
    ctx = Context(SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protos(alpn)
    apply_options(ctx, options, caller)
    return ctx


def client_connection(ctx: Context, host: str, infos: list[Any]) -> QuicConnection:
    """A quicconn client connection on a UDP socket of its own."""
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        enlarge_socket_buffers(sock)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        conn = QuicConnection(ctx)
        conn.set_fd(sock.fileno())  # a duplicate, which the connection owns
    finally:
        sock.close()
    try:
        conn.set1_initial_peer_addr(address)
        conn.set1_host(host)
    except BaseException:
        conn.free()
        raise
    return conn


__all__ = ["apply_options", "client_connection", "client_context", "server_context"]
