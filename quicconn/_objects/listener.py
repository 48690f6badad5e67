"""``Listener``: OpenSSL 3.5's QUIC server object (``SSL_new_listener``).

One listener owns one UDP socket (through a reactor) and demultiplexes
every connection on it by connection ID.  Datagrams no connection claims go
to the listener's :class:`~quicconn._core.interface.ServerGate`, which answers
statelessly (Version Negotiation, Retry, stateless reset) or says "accept";
accepted connections are created at once and queued for
:meth:`Listener.accept_connection`, possibly still mid-handshake, exactly as
OpenSSL hands them out.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._constants import (
    ACCEPT_CONNECTION_NO_BLOCK,
    LISTENER_FLAG_NO_ACCEPT,
    LISTENER_FLAG_NO_VALIDATE,
    Role,
)
from .._core.interface import GateAction, GateDecision, GateReply, SessionTicket
from .._errors import Error, SyscallError
from .._io.transport import Address, DatagramTransport, open_transport
from .._quic.reactor import Reactor

if TYPE_CHECKING:
    from .connection import Connection
    from .context import Context

#: Session tickets a listener remembers for resumption.
_TICKET_STORE_SIZE = 4096


@dataclass
class ListenerStats:
    """Counters of what the listener did with datagrams it owned."""

    connections_accepted: int = 0
    connections_refused: int = 0
    retries_sent: int = 0
    version_negotiations_sent: int = 0
    stateless_resets_sent: int = 0
    datagrams_dropped: int = 0


class Listener:
    """A QUIC listener: accepts incoming connections on one UDP socket.

    Made by :meth:`Context.new_listener`.  Blocking by default, like every
    OpenSSL QUIC object; connections it returns inherit its blocking mode.
    """

    def __init__(
        self,
        ctx: Context,
        transport: DatagramTransport,
        flags: int = 0,
        *,
        owns_socket: bool = False,
    ) -> None:
        known = LISTENER_FLAG_NO_ACCEPT | LISTENER_FLAG_NO_VALIDATE
        if flags & ~known:
            raise ValueError(f"unknown listener flags 0x{flags & ~known:x}")
        self._ctx = ctx
        self._flags = flags
        self._owns_socket = owns_socket
        settings = ctx._core_settings()
        self._reset_key = ctx.stateless_reset_key or os.urandom(32)
        #: The QUIC library behind the gate and the connections' cores.
        self._backend = ctx._backend()
        self._gate = self._backend.new_gate(
            settings,
            validate_addresses=not flags & LISTENER_FLAG_NO_VALIDATE,
            reset_key=self._reset_key,
        )
        reactor = Reactor(transport)
        reactor.cid_length = settings.connection_id_length
        reactor.unroutable_handler = self._on_unroutable
        reactor.retain()
        self._reactor: Reactor | None = reactor
        self._listening = False
        self._blocking = True
        self._accept_queue: deque[Connection] = deque()
        self._live: set[Connection] = set()
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()
        self._last_error = 0
        self.stats = ListenerStats()
        #: Connections waiting in the accept queue before new ones are refused.
        self.max_pending_connections = ctx.max_pending_connections
        #: Live connections (accepted or queued) before new ones are refused.
        self.max_connections = ctx.max_connections

    # -- OpenSSL API ------------------------------------------------------

    def listen(self) -> None:
        """Start accepting incoming connections (SSL_listen).

        Idempotent.  On a ``LISTENER_FLAG_NO_ACCEPT`` listener it only
        starts handling the network: incoming connections are never made.
        """
        self._require_reactor()
        self._listening = True

    def accept_connection(self, flags: int = 0) -> Connection | None:
        """Return the next incoming connection (SSL_accept_connection).

        The connection may still be mid-handshake: its ``accept()`` or
        ``do_handshake()`` completes it.  Blocking listeners wait for one;
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
        if not self._listening:
            self.listen()
        try:
            return self._accept(reactor, flags)
        except Error as exc:
            self._last_error = exc.code
            raise

    def _accept(self, reactor: Reactor, flags: int) -> Connection | None:
        self._last_error = 0
        transport = reactor.transport

        def settled() -> bool:
            return (
                bool(self._accept_queue)
                or reactor.closed
                or transport.fatal_error is not None
            )

        with reactor.lock:
            conn = self._pop_accepted()
            if conn is None:
                if flags & ACCEPT_CONNECTION_NO_BLOCK or not self._blocking:
                    reactor.tick()
                else:
                    reactor.block_until(settled)
                conn = self._pop_accepted()
            if conn is None:
                self._raise_if_socket_failed(transport)
                if reactor.closed:
                    raise SyscallError(
                        "the listener's socket was closed while accepting"
                    )
        return conn

    @staticmethod
    def _raise_if_socket_failed(transport: DatagramTransport) -> None:
        err = transport.fatal_error
        if err is not None:
            raise SyscallError(f"the listener's UDP socket failed: {err}", err.errno)

    def _pop_accepted(self) -> Connection | None:
        if not self._accept_queue:
            return None
        conn = self._accept_queue.popleft()
        conn.set_blocking_mode(self._blocking)
        return conn

    def get_accept_connection_queue_len(self) -> int:
        """Connections waiting to be accepted (SSL_get_accept_connection_queue_len)."""
        return len(self._accept_queue)

    def new_from_listener(
        self, flags: int = 0, ctx: Context | None = None
    ) -> Connection:
        """A client connection sharing this listener's socket (SSL_new_from_listener).

        OpenSSL takes the client settings from the listener's SSL_CTX; a
        quicconn context has one role, so pass a client ``ctx`` when the
        listener's context is a server one.
        """
        from .connection import Connection

        if flags:
            raise ValueError("new_from_listener() takes no flags (pass 0)")
        client_ctx = ctx if ctx is not None else self._ctx
        if client_ctx.role is not Role.CLIENT:
            raise ValueError(
                "new_from_listener() makes a client connection: pass a client "
                "Context, e.g. listener.new_from_listener(ctx=client_ctx)"
            )
        conn = Connection(client_ctx)
        conn._use_reactor(self._require_reactor())
        return conn

    def handle_events(self) -> None:
        """Tick timers and I/O for every connection here (SSL_handle_events)."""
        reactor = self._reactor
        if reactor is not None:
            with reactor.lock:
                reactor.tick()

    def get_event_timeout(self) -> float | None:
        """Seconds until any connection here needs events; None if never.

        Mirrors SSL_get_event_timeout on a listener: the earliest deadline
        of all its connections, from a heap.
        """
        reactor = self._reactor
        if reactor is None:
            return None
        with reactor.lock:
            return reactor.timeout()

    def net_read_desired(self) -> bool:
        """True while the listener has a socket to read (SSL_net_read_desired)."""
        return self._reactor is not None

    def net_write_desired(self) -> bool:
        """True while datagrams wait for the socket (SSL_net_write_desired)."""
        return self._reactor is not None and self._reactor.net_write_desired()

    def get_rpoll_descriptor(self) -> int:
        """The socket descriptor to poll for reading (SSL_get_rpoll_descriptor)."""
        return self._require_reactor().transport.fileno()

    def get_wpoll_descriptor(self) -> int:
        """The socket descriptor to poll for writing (SSL_get_wpoll_descriptor)."""
        return self._require_reactor().transport.fileno()

    def fileno(self) -> int:
        """The socket descriptor (SSL_get_fd)."""
        return self._require_reactor().transport.fileno()

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking (default) or nonblocking accepts (SSL_set_blocking_mode)."""
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether accept_connection() blocks (SSL_get_blocking_mode)."""
        return self._blocking

    def is_listener(self) -> bool:
        """Always True for a listener (SSL_is_listener)."""
        return True

    def get0_listener(self) -> Listener:
        """The listener itself (SSL_get0_listener)."""
        return self

    def get_error(self) -> int:
        """The ``ERROR_*`` code of the last failed call (SSL_get_error)."""
        return self._last_error

    def local_address(self) -> Address:
        """The address the listener receives on."""
        return self._require_reactor().transport.local_address()

    @property
    def validates_addresses(self) -> bool:
        """Whether Retry address validation is on (no LISTENER_FLAG_NO_VALIDATE)."""
        return self._gate.validates_addresses

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
            self._listening = False
            for conn in list(self._accept_queue):
                conn._listener = None
                conn.free_locked()
            self._accept_queue.clear()
        self._reactor = None
        if reactor.release():
            reactor.close(close_transport=self._owns_socket)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        where = self.local_address() if self._reactor is not None else "freed"
        return f"<quicconn.Listener {where} live={len(self._live)}>"

    # -- datagrams no connection claims (reactor callback, lock held) ----

    def _on_unroutable(self, data: bytes, addr: Address, now: float) -> None:
        reactor = self._reactor
        if (
            reactor is None
            or not self._listening
            or self._flags & LISTENER_FLAG_NO_ACCEPT
        ):
            self.stats.datagrams_dropped += 1
            return
        decision = self._gate.inspect(data, addr, now)
        if decision.action is GateAction.DROP:
            self.stats.datagrams_dropped += 1
        elif decision.action is GateAction.REPLY:
            assert decision.reply is not None
            reactor.transport.send_batch([(decision.reply, addr)])
            self._count_reply(decision)
        elif self._full():
            self.stats.connections_refused += 1
            refusal = self._gate.refuse(decision, "server busy: too many connections")
            reactor.transport.send_batch([(refusal, addr)])
        else:
            self._create_connection(decision, data, addr, now)

    def _count_reply(self, decision: GateDecision) -> None:
        kind = decision.reply_kind
        if kind is GateReply.RETRY:
            self.stats.retries_sent += 1
        elif kind is GateReply.VERSION_NEGOTIATION:
            self.stats.version_negotiations_sent += 1
        elif kind is GateReply.STATELESS_RESET:
            self.stats.stateless_resets_sent += 1

    def _full(self) -> bool:
        return (
            len(self._accept_queue) >= self.max_pending_connections
            or len(self._live) >= self.max_connections
        )

    def _create_connection(
        self, decision: GateDecision, data: bytes, addr: Address, now: float
    ) -> None:
        from .connection import Connection

        reactor = self._require_reactor()
        conn = Connection(self._ctx)
        core = self._backend.new_server(
            conn._settings,
            conn,
            decision,
            reset_key=self._reset_key,
            fetch_ticket=self._fetch_ticket,
            store_ticket=self._store_ticket,
        )
        # Adopt before the first datagram: with MODE_ASYNC, its processing
        # (the ClientHello leads to a signature) must already run in a job.
        conn._use_reactor(reactor)
        conn._adopt_core(core, addr)
        core.receive_datagram(data, addr, now)
        if not core.received_a_packet():
            # Shaped like an Initial but undecryptable: junk, which must
            # not take a connection slot or a place in the accept queue.
            conn.free_locked()
            self.stats.datagrams_dropped += 1
            return
        conn._listener = self
        reactor.add_core(core, decision.client_dcid, core.host_cid)
        reactor.mark_dirty(core)
        self._live.add(conn)
        self._accept_queue.append(conn)
        self.stats.connections_accepted += 1

    def _fetch_ticket(self, label: bytes) -> SessionTicket | None:
        return self._tickets.get(label)

    def _store_ticket(self, ticket: SessionTicket) -> None:
        self._tickets[self._backend.ticket_label(ticket)] = ticket
        while len(self._tickets) > _TICKET_STORE_SIZE:
            self._tickets.popitem(last=False)

    # -- notifications from connections (lock held) ------------------------

    def _on_handshake_complete(self, conn: Connection) -> None:
        pass  # connections are queued when created, as OpenSSL does

    def _on_connection_closing(self, conn: Connection) -> None:
        pass

    def _on_connection_terminated(self, conn: Connection) -> None:
        self._live.discard(conn)
        if conn in self._accept_queue:
            # Never accepted and now dead: the application never sees it.
            self._accept_queue.remove(conn)
            conn._listener = None
            conn.free_locked()
        elif conn._core is not None and self._reactor is not None:
            self._reactor.remove_core(conn._core)

    def _on_connection_freed(self, conn: Connection) -> None:
        self._live.discard(conn)
        if conn in self._accept_queue:
            self._accept_queue.remove(conn)

    def _require_reactor(self) -> Reactor:
        if self._reactor is None:
            raise ValueError("the listener was freed")
        return self._reactor


def make_listener(ctx: Context, where: Any, flags: int) -> Listener:
    """Build a listener on a socket, an address to bind, or a transport."""
    if ctx.role is not Role.SERVER:
        # As in OpenSSL, a client context makes a client-only listener.
        flags |= LISTENER_FLAG_NO_ACCEPT
    elif ctx._settings.certificate is None:
        raise ValueError(
            "the server Context has no certificate: call load_cert_chain()"
        )
    transport, owns_socket = open_transport(where, "new_listener()")
    return Listener(ctx, transport, flags, owns_socket=owns_socket)


__all__ = ["Error", "Listener", "ListenerStats", "make_listener"]
