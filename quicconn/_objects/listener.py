"""``Listener``: OpenSSL 3.5's QUIC server object (``SSL_new_listener``).

One listener owns one UDP socket (through a reactor) and its port
(``quicconn/_quic/port.py``), which answers datagrams no connection claims
and queues new connections for :meth:`Listener.accept_connection` once
their handshake completed (OpenSSL 3.5 queues them at their first Initial;
see docs/api-mapping.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from .._constants import (
    ACCEPT_CONNECTION_NO_BLOCK,
    LISTENER_FLAG_NO_ACCEPT,
    LISTENER_FLAG_NO_VALIDATE,
    POLL_EVENT_EL,
    POLL_EVENT_F,
    POLL_EVENT_IC,
    Role,
)
from .._io.transport import Address, DatagramTransport, open_transport
from .._quic.assist import check_real_clock, start_assist
from .._quic.channel import Channel
from .._quic.conditions import Condition, QuicFailure
from .._quic.port import ListenerStats, Port
from .._quic.reactor import Reactor
from . import domain_flags
from .call import api, poll_once, run_call
from .connection import Connection, client_on_reactor, server_connection
from .context_settings import ContextSettings, core_backend, core_settings
from .errors import bind_error
from .kinds import QuicObjectKind
from .surface import EventSurface


class Listener(EventSurface, QuicObjectKind):
    """A QUIC listener: accepts incoming connections on one UDP socket.

    Made by :meth:`Context.new_listener`.  Blocking by default, like every
    OpenSSL QUIC object; connections it returns inherit its blocking mode.
    """

    _IS_LISTENER = True

    def __init__(
        self,
        ctx: ContextSettings,
        transport: DatagramTransport,
        flags: int = 0,
        *,
        owns_socket: bool = False,
        domain: Any = None,
    ) -> None:
        known = LISTENER_FLAG_NO_ACCEPT | LISTENER_FLAG_NO_VALIDATE
        if flags & ~known:
            raise ValueError(f"unknown listener flags 0x{flags & ~known:x}")
        self._ctx = ctx
        self._flags = flags
        self._owns_socket = owns_socket
        settings = core_settings(ctx)
        backend = core_backend(ctx)
        reset_key = ctx.stateless_reset_key or os.urandom(32)
        self._domain = domain
        concurrency = self.get_domain_flags()
        if domain_flags.thread_assisted(concurrency):
            check_real_clock(transport.clock)
        reactor = Reactor(transport)
        reactor.retain()
        self._reactor: Reactor | None = reactor
        self._port: Port[Connection] = Port(
            reactor,
            backend,
            backend.new_gate(
                settings,
                validate_addresses=not flags & LISTENER_FLAG_NO_VALIDATE,
                reset_key=reset_key,
            ),
            self._new_connection,
            reset_key=reset_key,
            cid_length=settings.connection_id_length,
            accepts=not flags & LISTENER_FLAG_NO_ACCEPT,
            max_pending=ctx.max_pending_connections,
            max_live=ctx.max_connections,
            max_handshakes=ctx.max_handshakes,
            ticket_key=ctx.session_ticket_key,
        )
        self._last_error = 0
        self._blocking = domain_flags.blocking_by_default(concurrency)
        self._keep_alive = ctx.keep_alive_for(concurrency)
        if domain_flags.thread_assisted(concurrency):
            start_assist(reactor)

    def _new_connection(self) -> tuple[Channel, Connection]:
        channel, conn = server_connection(self._ctx, self._require_reactor(), self)
        # The domain, not only the context, decides the keep-alive.
        channel.settings.keep_alive = self._keep_alive
        return channel, conn

    def _call_lock(self) -> AbstractContextManager[object]:
        reactor = self._reactor
        return contextlib.nullcontext() if reactor is None else reactor.lock

    def _events_reactor(self) -> Reactor | None:
        return self._reactor

    def _require_events_reactor(self) -> Reactor:
        return self._require_reactor()

    def _require_reactor(self) -> Reactor:
        if self._reactor is None:
            raise ValueError("the listener was freed")
        return self._reactor

    # -- OpenSSL API ------------------------------------------------------

    @property
    def stats(self) -> ListenerStats:
        """Counters of what the listener did with the datagrams it owned."""
        return self._port.stats

    @property
    def max_pending_connections(self) -> int:
        """Connections whose handshake completed, waiting in the accept
        queue, before new ones are refused (a quicconn extension)."""
        return self._port.max_pending

    @max_pending_connections.setter
    def max_pending_connections(self, count: int) -> None:
        self._port.max_pending = count

    @property
    def max_connections(self) -> int:
        """Live connections (half-open, queued or accepted) before new ones
        are refused (a quicconn extension)."""
        return self._port.max_live

    @max_connections.setter
    def max_connections(self, count: int) -> None:
        self._port.max_live = count

    @property
    def max_handshakes(self) -> int:
        """Half-open connections (handshake in progress) before the oldest
        is dropped to make room for a new one (a quicconn extension)."""
        return self._port.max_handshakes

    @max_handshakes.setter
    def max_handshakes(self, count: int) -> None:
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"max_handshakes must be an int >= 1, not {count!r}")
        self._port.max_handshakes = count

    def listen(self) -> None:
        """Start accepting incoming connections (SSL_listen).

        Idempotent.  On a ``LISTENER_FLAG_NO_ACCEPT`` listener it only
        starts handling the network: incoming connections are never made.
        """
        self._require_reactor()
        self._port.listening = True

    @api
    def accept_connection(self, flags: int = 0) -> Connection | None:
        """Return the next incoming connection (SSL_accept_connection).

        Its handshake has completed (unlike OpenSSL 3.5, which returns
        connections mid-handshake: see docs/api-mapping.md); under MODE_ASYNC
        with an offload engine it may still be mid-handshake, and its
        ``accept()`` or ``do_handshake()`` completes it.  Blocking listeners
        wait for one;
        with ``ACCEPT_CONNECTION_NO_BLOCK`` or a nonblocking listener, None
        is returned when the queue is empty (after one tick).
        """
        if flags & ~ACCEPT_CONNECTION_NO_BLOCK:
            raise ValueError(f"unknown accept_connection() flags 0x{flags:x}")
        reactor = self._require_reactor()
        if self._flags & LISTENER_FLAG_NO_ACCEPT:
            raise ValueError(
                "this listener accepts no connections (LISTENER_FLAG_NO_ACCEPT, or "
                "a client Context): use new_from_listener()"
            )
        self._port.listening = True

        def attempt() -> Connection | None:
            if self._reactor is None:
                raise QuicFailure(
                    Condition.SOCKET_FAILED, "the listener was freed while accepting"
                )
            conn = self._port.pop_accepted()
            err = reactor.transport.fatal_error
            if conn is None and err is not None:
                raise QuicFailure(
                    Condition.SOCKET_FAILED,
                    f"the listener's UDP socket failed: {err}",
                    errno=err.errno,
                )
            return conn

        if flags & ACCEPT_CONNECTION_NO_BLOCK or not self._blocking:
            conn = poll_once(attempt, reactor, implicit_events=True)
        else:
            conn = run_call(
                attempt,
                reactor,
                blocking=True,
                implicit_events=True,
                would_block=lambda: QuicFailure(Condition.WANT_READ, "no connection"),
                stopped=lambda: QuicFailure(
                    Condition.SOCKET_FAILED,
                    "the listener's socket was closed while accepting",
                ),
            )
        if conn is not None:
            conn.set_blocking_mode(self._blocking)
        return conn

    def get_accept_connection_queue_len(self) -> int:
        """Connections waiting to be accepted (SSL_get_accept_connection_queue_len)."""
        return len(self._port.accept_queue)

    def new_from_listener(
        self, flags: int = 0, ctx: ContextSettings | None = None
    ) -> Connection:
        """A client connection sharing this listener's socket (SSL_new_from_listener).

        OpenSSL takes the client settings from the listener's SSL_CTX; a
        quicconn context has one role, so pass a client ``ctx`` when the
        listener's context is a server one.
        """
        if flags:
            raise ValueError("new_from_listener() takes no flags (pass 0)")
        client_ctx = ctx if ctx is not None else self._ctx
        if client_ctx.role is not Role.CLIENT:
            raise ValueError(
                "new_from_listener() makes a client connection: pass a client "
                "Context, e.g. listener.new_from_listener(ctx=client_ctx)"
            )
        return client_on_reactor(client_ctx, self._require_reactor())

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking (default) or nonblocking accepts (SSL_set_blocking_mode)."""
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether accept_connection() blocks (SSL_get_blocking_mode)."""
        return self._blocking

    def get0_listener(self) -> Listener:
        """The listener itself (SSL_get0_listener)."""
        return self

    def get_error(self) -> int:
        """The ``ERROR_*`` code of the last failed call (SSL_get_error)."""
        return self._last_error

    def local_address(self) -> Address:
        """The address the listener receives on."""
        return self._require_reactor().transport.local_address()

    def get_core_name(self) -> str:
        """The QUIC core the listener's connections run on (``"qh3"``,
        ``"aioquic"``): a quicconn extension, chosen from its context."""
        return self._port.backend.name

    @property
    def validates_addresses(self) -> bool:
        """Whether Retry address validation is on (no LISTENER_FLAG_NO_VALIDATE)."""
        return self._port.gate.validates_addresses

    # -- lifetime ---------------------------------------------------------

    def free(self) -> None:
        """Stop listening and release the listener (SSL_free).

        Connections already accepted keep working until they are freed; the
        socket closes when the last of them (and the listener) is gone, and
        only if the listener created it.
        """
        reactor = self._reactor
        if reactor is None:
            return
        with reactor.lock:
            self._port.stop()
            self._reactor = None
            # A thread blocked in accept_connection() learns it now, even
            # while accepted connections keep the reactor (and socket) open.
            reactor.wake_waiters()
        if reactor.release():
            reactor.close(close_transport=self._owns_socket)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        where = self.local_address() if self._reactor is not None else "freed"
        return f"<quicconn.Listener {where} live={self._port.live}>"


def make_listener(
    ctx: ContextSettings, where: Any, flags: int, domain: Any = None
) -> Listener:
    """Build a listener on a socket, an address to bind, or a transport;
    in ``domain`` (SSL_new_listener_from) or the context's implicit one."""
    if ctx.role is not Role.SERVER:
        # As in OpenSSL, a client context makes a client-only listener.
        flags |= LISTENER_FLAG_NO_ACCEPT
    elif core_settings(ctx).certificate is None:
        raise ValueError(
            "the server Context has no certificate: call load_cert_chain()"
        )
    try:
        transport, owns_socket = open_transport(
            where,
            "new_listener()",
            use_gso=ctx.use_gso,
            use_gro=ctx.use_gro,
            dont_fragment=True,
        )
    except OSError as exc:
        raise bind_error(where, exc) from exc
    try:
        return Listener(ctx, transport, flags, owns_socket=owns_socket, domain=domain)
    except BaseException:
        if owns_socket:
            transport.close()
        raise


def poll_source(listener: Listener) -> tuple[Reactor | None, Callable[[int], int]]:
    """The reactor a poll() item waits on, and its revents (lock held).

    EL: the listener's socket failed; IC: connections wait to be accepted.
    """

    def revents(events: int) -> int:
        reactor = listener._reactor
        if reactor is None:
            return POLL_EVENT_F
        found = 0
        if reactor.transport.fatal_error is not None:
            found |= POLL_EVENT_EL
        if listener._port.accept_queue:
            found |= POLL_EVENT_IC
        return found & events

    return listener._reactor, revents


def close_connections(listener: Listener, error_code: int, reason: str) -> int:
    """Close every live connection the listener made (queued or accepted,
    not yet terminated or freed): CONNECTION_CLOSE with ``error_code`` (an
    application error) and ``reason`` goes out now.  How many."""
    reactor = listener._require_reactor()
    with reactor.lock:
        return listener._port.close_all(error_code, reason)


def port_of(listener: Listener) -> Port[Connection]:
    """The listener's port (tests and diagnostics look at its state)."""
    return listener._port


__all__ = [
    "Listener",
    "ListenerStats",
    "close_connections",
    "make_listener",
    "poll_source",
    "port_of",
]
