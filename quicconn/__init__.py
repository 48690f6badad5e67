"""quicconn: OpenSSL's QUIC API, in Python, on aioquic's sans-I/O core.

The names follow OpenSSL with the ``SSL_`` prefix dropped
(``SSL_get_event_timeout(ssl)`` is ``conn.get_event_timeout()``), the
integer constants keep OpenSSL's values, and failures raise exceptions whose
``code`` is what ``SSL_get_error()`` would say.  See docs/api-mapping.md.
"""

from __future__ import annotations

import socket
import typing

from ._asyncjob.engine import (
    AsyncEngine,
    ProcessPoolEngine,
    SignRequest,
    ThreadPoolEngine,
)
from ._asyncjob.job import async_cleanup_thread, async_init_thread
from ._constants import (
    ACCEPT_CONNECTION_NO_BLOCK,
    ACCEPT_STREAM_BIDI,
    ACCEPT_STREAM_NO_BLOCK,
    ACCEPT_STREAM_UNI,
    ASYNC_STATUS_EAGAIN,
    ASYNC_STATUS_ERR,
    ASYNC_STATUS_OK,
    ASYNC_STATUS_UNSUPPORTED,
    CLIENT,
    CLIENT_THREAD,
    CONN_CLOSE_FLAG_LOCAL,
    CONN_CLOSE_FLAG_TRANSPORT,
    DEFAULT_STREAM_MODE_AUTO_BIDI,
    DEFAULT_STREAM_MODE_AUTO_UNI,
    DEFAULT_STREAM_MODE_NONE,
    DOMAIN_FLAG_BLOCKING,
    DOMAIN_FLAG_LEGACY_BLOCKING,
    DOMAIN_FLAG_MULTI_THREAD,
    DOMAIN_FLAG_SINGLE_THREAD,
    DOMAIN_FLAG_THREAD_ASSISTED,
    EARLY_DATA_ACCEPTED,
    EARLY_DATA_NOT_SENT,
    EARLY_DATA_REJECTED,
    ERROR_NONE,
    ERROR_SSL,
    ERROR_SYSCALL,
    ERROR_WANT_ACCEPT,
    ERROR_WANT_ASYNC,
    ERROR_WANT_ASYNC_JOB,
    ERROR_WANT_CLIENT_HELLO_CB,
    ERROR_WANT_CONNECT,
    ERROR_WANT_READ,
    ERROR_WANT_RETRY_VERIFY,
    ERROR_WANT_WRITE,
    ERROR_WANT_X509_LOOKUP,
    ERROR_ZERO_RETURN,
    INCOMING_STREAM_POLICY_ACCEPT,
    INCOMING_STREAM_POLICY_AUTO,
    INCOMING_STREAM_POLICY_REJECT,
    KEY_UPDATE_NONE,
    KEY_UPDATE_NOT_REQUESTED,
    KEY_UPDATE_REQUESTED,
    LISTENER_FLAG_NO_ACCEPT,
    LISTENER_FLAG_NO_VALIDATE,
    MODE_ACCEPT_MOVING_WRITE_BUFFER,
    MODE_ASYNC,
    MODE_AUTO_RETRY,
    MODE_ENABLE_PARTIAL_WRITE,
    POLL_EVENT_DGRAM,
    POLL_EVENT_E,
    POLL_EVENT_EC,
    POLL_EVENT_ECD,
    POLL_EVENT_EL,
    POLL_EVENT_ER,
    POLL_EVENT_EW,
    POLL_EVENT_F,
    POLL_EVENT_I,
    POLL_EVENT_IC,
    POLL_EVENT_IS,
    POLL_EVENT_ISB,
    POLL_EVENT_ISE,
    POLL_EVENT_ISU,
    POLL_EVENT_NONE,
    POLL_EVENT_OS,
    POLL_EVENT_OSB,
    POLL_EVENT_OSE,
    POLL_EVENT_OSU,
    POLL_EVENT_R,
    POLL_EVENT_RE,
    POLL_EVENT_RW,
    POLL_EVENT_RWE,
    POLL_EVENT_W,
    POLL_EVENT_WE,
    POLL_FLAG_NO_HANDLE_EVENTS,
    QUIC_ERR_AEAD_LIMIT_REACHED,
    QUIC_ERR_APPLICATION_ERROR,
    QUIC_ERR_CONNECTION_ID_LIMIT_ERROR,
    QUIC_ERR_CONNECTION_REFUSED,
    QUIC_ERR_CRYPTO_BUFFER_EXCEEDED,
    QUIC_ERR_CRYPTO_ERR,
    QUIC_ERR_CRYPTO_ERR_BEGIN,
    QUIC_ERR_CRYPTO_ERR_END,
    QUIC_ERR_CRYPTO_ERROR_BASE,
    QUIC_ERR_FINAL_SIZE_ERROR,
    QUIC_ERR_FLOW_CONTROL_ERROR,
    QUIC_ERR_FRAME_ENCODING_ERROR,
    QUIC_ERR_INTERNAL_ERROR,
    QUIC_ERR_INVALID_TOKEN,
    QUIC_ERR_KEY_UPDATE_ERROR,
    QUIC_ERR_NO_ERROR,
    QUIC_ERR_NO_VIABLE_PATH,
    QUIC_ERR_PROTOCOL_VIOLATION,
    QUIC_ERR_STREAM_LIMIT_ERROR,
    QUIC_ERR_STREAM_STATE_ERROR,
    QUIC_ERR_TRANSPORT_PARAMETER_ERROR,
    QUIC_LOCAL_ERR_IDLE_TIMEOUT,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    SERVER,
    SHUTDOWN_FLAG_NO_BLOCK,
    SHUTDOWN_FLAG_NO_STREAM_FLUSH,
    SHUTDOWN_FLAG_RAPID,
    SHUTDOWN_FLAG_WAIT_PEER,
    STREAM_FLAG_ADVANCE,
    STREAM_FLAG_NO_BLOCK,
    STREAM_FLAG_UNI,
    STREAM_STATE_CONN_CLOSED,
    STREAM_STATE_FINISHED,
    STREAM_STATE_NONE,
    STREAM_STATE_OK,
    STREAM_STATE_RESET_LOCAL,
    STREAM_STATE_RESET_REMOTE,
    STREAM_STATE_WRONG_DIR,
    STREAM_TYPE_BIDI,
    STREAM_TYPE_NONE,
    STREAM_TYPE_READ,
    STREAM_TYPE_WRITE,
    TLS13_CIPHERSUITES,
    VALUE_CLASS_FEATURE_NEGOTIATED,
    VALUE_CLASS_FEATURE_PEER_REQUEST,
    VALUE_CLASS_FEATURE_REQUEST,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_EVENT_HANDLING_MODE_IMPLICIT,
    VALUE_EVENT_HANDLING_MODE_INHERIT,
    VALUE_NONE,
    VALUE_QUIC_IDLE_TIMEOUT,
    VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL,
    VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL,
    VALUE_STREAM_WRITE_BUF_AVAIL,
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
    VERIFY_FAIL_IF_NO_PEER_CERT,
    VERIFY_NONE,
    VERIFY_PEER,
    WRITE_FLAG_CONCLUDE,
    Role,
)
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
from ._io.transport import enlarge_socket_buffers as _enlarge_socket_buffers
from ._objects.connection import Connection, ConnState
from ._objects.context import Context
from ._objects.domain import Domain
from ._objects.dtls.connection import DTLSConnection, DTLSState
from ._objects.dtls.context import DTLSContext
from ._objects.dtls.listener import DTLSListener, DTLSListenerStats
from ._objects.events import get_event_timeout, handle_events
from ._objects.listener import Listener, ListenerStats
from ._objects.poll import PollItem, poll
from ._objects.session import Session
from ._objects.stream import Stream
from ._version import __version__ as __version__

if typing.TYPE_CHECKING:
    from typing import Any


def connect(
    host: str,
    port: int,
    *,
    alpn: list[str] | None = None,
    cafile: str | None = None,
    verify: bool = True,
    core: str | None = None,
    **ctx_options: Any,
) -> Connection:
    """Open a blocking, handshaken client connection over its own UDP socket.

    Verifies the server's certificate against ``cafile`` or the system CAs,
    and ``host`` against the certificate, unless ``verify=False``.  ``core``
    chooses the QUIC core as ``Context(CLIENT, core=...)`` does.  Other
    keyword arguments set :class:`Context` attributes (``idle_timeout``,
    ``keylog_filename``, ``qlog_dir``, ``max_datagram_size``, ...).  Use the
    result as a context manager to shut it down cleanly.

    A quicconn extension (OpenSSL has no one-call client).  ``port`` must be
    1-65535 (ValueError otherwise, TypeError if it is not an int): the
    socket layer would otherwise wrap 99999 around to 34463.
    """
    _check_port(port, "connect", lowest=1)
    ctx = Context(CLIENT, core=core)
    if verify:
        if cafile is not None:
            ctx.load_verify_locations(cafile)
        else:
            ctx.load_default_verify_paths()
    else:
        ctx.verify_mode = VERIFY_NONE
    if alpn:
        ctx.set_alpn_protos(alpn)
    _apply_options(ctx, ctx_options, "connect")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    _enlarge_socket_buffers(sock)
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
    core: str | None = None,
    **ctx_options: Any,
) -> Listener:
    """Bind ``addr`` and return a listening :class:`Listener` (blocking).

    ``alpn`` lists the protocols the server accepts; ``flags`` are
    ``LISTENER_FLAG_*``; ``core`` chooses the QUIC core; other keyword
    arguments set :class:`Context` attributes.  Accept with
    ``listener.accept_connection()``.

    A quicconn extension (SSL_new_listener on a socket bound here).  The
    port must be 0-65535 (0: any free port).
    """
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise TypeError(f"listen() needs a (host, port) tuple, got {addr!r}")
    _check_port(addr[1], "listen", lowest=0)
    ctx = Context(SERVER, core=core)
    ctx.load_cert_chain(certfile, keyfile)
    if alpn:
        ctx.set_alpn_protos(alpn)
    _apply_options(ctx, ctx_options, "listen")
    listener = ctx.new_listener(addr, flags)
    listener.listen()
    return listener


def _check_port(port: object, caller: str, *, lowest: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{caller}(): the port must be an int, not {port!r}")
    if not lowest <= port <= 65535:
        raise ValueError(
            f"{caller}(): port {port} is out of range (a port is {lowest}-65535)"
        )


def _apply_options(ctx: Context, options: dict[str, Any], caller: str) -> None:
    for name, value in options.items():
        if (
            name.startswith("_")
            or not hasattr(ctx, name)
            or callable(getattr(ctx, name))
        ):
            raise TypeError(f"{caller}() got an unknown option {name!r}")
        attribute = getattr(type(ctx), name, None)
        if isinstance(attribute, property) and attribute.fset is None:
            raise TypeError(f"{caller}(): {name!r} is read-only, not an option")
        setattr(ctx, name, value)


__all__ = [
    "ACCEPT_CONNECTION_NO_BLOCK",
    "ACCEPT_STREAM_BIDI",
    "ACCEPT_STREAM_NO_BLOCK",
    "ACCEPT_STREAM_UNI",
    "ASYNC_STATUS_EAGAIN",
    "ASYNC_STATUS_ERR",
    "ASYNC_STATUS_OK",
    "ASYNC_STATUS_UNSUPPORTED",
    "CLIENT",
    "CLIENT_THREAD",
    "CONN_CLOSE_FLAG_LOCAL",
    "CONN_CLOSE_FLAG_TRANSPORT",
    "DEFAULT_STREAM_MODE_AUTO_BIDI",
    "DEFAULT_STREAM_MODE_AUTO_UNI",
    "DEFAULT_STREAM_MODE_NONE",
    "DOMAIN_FLAG_BLOCKING",
    "DOMAIN_FLAG_LEGACY_BLOCKING",
    "DOMAIN_FLAG_MULTI_THREAD",
    "DOMAIN_FLAG_SINGLE_THREAD",
    "DOMAIN_FLAG_THREAD_ASSISTED",
    "EARLY_DATA_ACCEPTED",
    "EARLY_DATA_NOT_SENT",
    "EARLY_DATA_REJECTED",
    "ERROR_NONE",
    "ERROR_SSL",
    "ERROR_SYSCALL",
    "ERROR_WANT_ACCEPT",
    "ERROR_WANT_ASYNC",
    "ERROR_WANT_ASYNC_JOB",
    "ERROR_WANT_CLIENT_HELLO_CB",
    "ERROR_WANT_CONNECT",
    "ERROR_WANT_READ",
    "ERROR_WANT_RETRY_VERIFY",
    "ERROR_WANT_WRITE",
    "ERROR_WANT_X509_LOOKUP",
    "ERROR_ZERO_RETURN",
    "INCOMING_STREAM_POLICY_ACCEPT",
    "INCOMING_STREAM_POLICY_AUTO",
    "INCOMING_STREAM_POLICY_REJECT",
    "KEY_UPDATE_NONE",
    "KEY_UPDATE_NOT_REQUESTED",
    "KEY_UPDATE_REQUESTED",
    "LISTENER_FLAG_NO_ACCEPT",
    "LISTENER_FLAG_NO_VALIDATE",
    "MODE_ACCEPT_MOVING_WRITE_BUFFER",
    "MODE_ASYNC",
    "MODE_AUTO_RETRY",
    "MODE_ENABLE_PARTIAL_WRITE",
    "POLL_EVENT_DGRAM",
    "POLL_EVENT_E",
    "POLL_EVENT_EC",
    "POLL_EVENT_ECD",
    "POLL_EVENT_EL",
    "POLL_EVENT_ER",
    "POLL_EVENT_EW",
    "POLL_EVENT_F",
    "POLL_EVENT_I",
    "POLL_EVENT_IC",
    "POLL_EVENT_IS",
    "POLL_EVENT_ISB",
    "POLL_EVENT_ISE",
    "POLL_EVENT_ISU",
    "POLL_EVENT_NONE",
    "POLL_EVENT_OS",
    "POLL_EVENT_OSB",
    "POLL_EVENT_OSE",
    "POLL_EVENT_OSU",
    "POLL_EVENT_R",
    "POLL_EVENT_RE",
    "POLL_EVENT_RW",
    "POLL_EVENT_RWE",
    "POLL_EVENT_W",
    "POLL_EVENT_WE",
    "POLL_FLAG_NO_HANDLE_EVENTS",
    "QUIC_ERR_AEAD_LIMIT_REACHED",
    "QUIC_ERR_APPLICATION_ERROR",
    "QUIC_ERR_CONNECTION_ID_LIMIT_ERROR",
    "QUIC_ERR_CONNECTION_REFUSED",
    "QUIC_ERR_CRYPTO_BUFFER_EXCEEDED",
    "QUIC_ERR_CRYPTO_ERR",
    "QUIC_ERR_CRYPTO_ERROR_BASE",
    "QUIC_ERR_CRYPTO_ERR_BEGIN",
    "QUIC_ERR_CRYPTO_ERR_END",
    "QUIC_ERR_FINAL_SIZE_ERROR",
    "QUIC_ERR_FLOW_CONTROL_ERROR",
    "QUIC_ERR_FRAME_ENCODING_ERROR",
    "QUIC_ERR_INTERNAL_ERROR",
    "QUIC_ERR_INVALID_TOKEN",
    "QUIC_ERR_KEY_UPDATE_ERROR",
    "QUIC_ERR_NO_ERROR",
    "QUIC_ERR_NO_VIABLE_PATH",
    "QUIC_ERR_PROTOCOL_VIOLATION",
    "QUIC_ERR_STREAM_LIMIT_ERROR",
    "QUIC_ERR_STREAM_STATE_ERROR",
    "QUIC_ERR_TRANSPORT_PARAMETER_ERROR",
    "QUIC_LOCAL_ERR_IDLE_TIMEOUT",
    "QUIC_VERSION_1",
    "QUIC_VERSION_2",
    "SERVER",
    "SHUTDOWN_FLAG_NO_BLOCK",
    "SHUTDOWN_FLAG_NO_STREAM_FLUSH",
    "SHUTDOWN_FLAG_RAPID",
    "SHUTDOWN_FLAG_WAIT_PEER",
    "STREAM_FLAG_ADVANCE",
    "STREAM_FLAG_NO_BLOCK",
    "STREAM_FLAG_UNI",
    "STREAM_STATE_CONN_CLOSED",
    "STREAM_STATE_FINISHED",
    "STREAM_STATE_NONE",
    "STREAM_STATE_OK",
    "STREAM_STATE_RESET_LOCAL",
    "STREAM_STATE_RESET_REMOTE",
    "STREAM_STATE_WRONG_DIR",
    "STREAM_TYPE_BIDI",
    "STREAM_TYPE_NONE",
    "STREAM_TYPE_READ",
    "STREAM_TYPE_WRITE",
    "TLS13_CIPHERSUITES",
    "VALUE_CLASS_FEATURE_NEGOTIATED",
    "VALUE_CLASS_FEATURE_PEER_REQUEST",
    "VALUE_CLASS_FEATURE_REQUEST",
    "VALUE_CLASS_GENERIC",
    "VALUE_EVENT_HANDLING_MODE",
    "VALUE_EVENT_HANDLING_MODE_EXPLICIT",
    "VALUE_EVENT_HANDLING_MODE_IMPLICIT",
    "VALUE_EVENT_HANDLING_MODE_INHERIT",
    "VALUE_NONE",
    "VALUE_QUIC_IDLE_TIMEOUT",
    "VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL",
    "VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL",
    "VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL",
    "VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL",
    "VALUE_STREAM_WRITE_BUF_AVAIL",
    "VALUE_STREAM_WRITE_BUF_SIZE",
    "VALUE_STREAM_WRITE_BUF_USED",
    "VERIFY_FAIL_IF_NO_PEER_CERT",
    "VERIFY_NONE",
    "VERIFY_PEER",
    "WRITE_FLAG_CONCLUDE",
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
    "Domain",
    "Error",
    "FakeClock",
    "Listener",
    "ListenerStats",
    "MonotonicClock",
    "PollItem",
    "ProcessPoolEngine",
    "Role",
    "SSLError",
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
]
