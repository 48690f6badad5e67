"""quicconn: OpenSSL's QUIC API, in Python, on aioquic's sans-I/O core.

The names follow OpenSSL with the ``SSL_`` prefix dropped
(``SSL_get_event_timeout(ssl)`` is ``conn.get_event_timeout()``), the
integer constants keep OpenSSL's values, and failures raise exceptions whose
``code`` is what ``SSL_get_error()`` would say.  See docs/api-mapping.md.
"""

from __future__ import annotations

import socket
from typing import Any

from . import _constants
from ._asyncjob.engine import (
    AsyncEngine,
    ProcessPoolEngine,
    SignRequest,
    ThreadPoolEngine,
)
from ._asyncjob.job import async_cleanup_thread, async_init_thread
from ._constants import *  # noqa: F403 - OpenSSL's constants, by design
from ._constants import CLIENT, Role
from ._errors import (
    ConnCloseInfo,
    ConnectionTerminatedError,
    Error,
    SSLError,
    StreamCountLimitedError,
    StreamResetError,
    SyscallError,
    VerificationError,
    WantAsyncError,
    WantAsyncJobError,
    WantReadError,
    WantWriteError,
    ZeroReturnError,
)
from ._io.clock import FakeClock, MonotonicClock
from ._io.transport import enlarge_socket_buffers
from ._objects.connection import Connection, ConnState
from ._objects.context import Context
from ._objects.dtls.connection import DTLSConnection, DTLSState
from ._objects.dtls.context import DTLSContext
from ._objects.dtls.listener import DTLSListener, DTLSListenerStats
from ._objects.events import get_event_timeout, handle_events
from ._objects.listener import Listener, ListenerStats
from ._objects.poll import PollItem, poll
from ._objects.session import Session
from ._objects.stream import Stream

__version__ = "0.1.0"


def connect(
    host: str,
    port: int,
    *,
    alpn: list[str] | None = None,
    cafile: str | None = None,
    verify: bool = True,
    **ctx_options: Any,
) -> Connection:
    """Open a blocking, handshaken client connection over its own UDP socket.

    Verifies the server's certificate against ``cafile`` or the system CAs,
    and ``host`` against the certificate, unless ``verify=False``.  Other
    keyword arguments set :class:`Context` attributes (``idle_timeout``,
    ``keylog_filename``, ``qlog_dir``, ``max_datagram_size``, ...).  Use the
    result as a context manager to shut it down cleanly.
    """
    ctx = Context(CLIENT)
    if verify:
        if cafile is not None:
            ctx.load_verify_locations(cafile)
        else:
            ctx.load_default_verify_paths()
    else:
        ctx.verify_mode = VERIFY_NONE  # noqa: F405
    if alpn:
        ctx.set_alpn_protos(alpn)
    _apply_options(ctx, ctx_options, "connect")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    enlarge_socket_buffers(sock)
    conn = Connection(ctx)
    try:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        conn.set_fd(sock)
        conn._owns_socket = True
        conn.set1_initial_peer_addr(address)
        conn.set1_host(host)
        conn.connect()
    except BaseException:
        conn.free()
        sock.close()
        raise
    return conn


def listen(
    addr: tuple[str, int],
    certfile: str,
    keyfile: str | None = None,
    *,
    alpn: list[str] | None = None,
    flags: int = 0,
    **ctx_options: Any,
) -> Listener:
    """Bind ``addr`` and return a listening :class:`Listener` (blocking).

    ``alpn`` lists the protocols the server accepts; ``flags`` are
    ``LISTENER_FLAG_*``; other keyword arguments set :class:`Context`
    attributes.  Accept with ``listener.accept_connection()``.
    """
    ctx = Context(SERVER)  # noqa: F405
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protos(alpn)
    _apply_options(ctx, ctx_options, "listen")
    listener = ctx.new_listener(addr, flags)
    listener.listen()
    return listener


def _apply_options(ctx: Context, options: dict[str, Any], caller: str) -> None:
    for name, value in options.items():
        if (
            name.startswith("_")
            or not hasattr(ctx, name)
            or callable(getattr(ctx, name))
        ):
            raise TypeError(f"{caller}() got an unknown option {name!r}")
        setattr(ctx, name, value)


__all__ = [
    "AsyncEngine",
    "ConnCloseInfo",
    "ConnState",
    "Connection",
    "ConnectionTerminatedError",
    "Context",
    "DTLSConnection",
    "DTLSContext",
    "DTLSListener",
    "DTLSListenerStats",
    "DTLSState",
    "Error",
    "FakeClock",
    "Listener",
    "ListenerStats",
    "MonotonicClock",
    "ProcessPoolEngine",
    "Role",
    "SSLError",
    "PollItem",
    "Session",
    "SignRequest",
    "Stream",
    "StreamCountLimitedError",
    "StreamResetError",
    "SyscallError",
    "ThreadPoolEngine",
    "VerificationError",
    "WantAsyncError",
    "WantAsyncJobError",
    "WantReadError",
    "WantWriteError",
    "ZeroReturnError",
    "async_cleanup_thread",
    "async_init_thread",
    "connect",
    "get_event_timeout",
    "handle_events",
    "listen",
    "poll",
    *[name for name in dir(_constants) if name.isupper()],
]
