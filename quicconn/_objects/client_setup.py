"""A client connection's setup: transport, peer, names, ALPN, sessions, 0-RTT.

What OpenSSL configures on a QUIC connection before its handshake (the
socket, the initial peer address, the SNI and verification names, ALPN,
the session to resume, early data) and the client handshake's start, which
checks those settings and creates the core.  :class:`ClientSetup` is a
mixin of :class:`~quicconn._objects.connection.Connection`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._asyncjob.engine import AsyncEngine
from .._constants import (
    EARLY_DATA_ACCEPTED,
    EARLY_DATA_NOT_SENT,
    EARLY_DATA_REJECTED,
    MODE_ASYNC,
    TLS13_CIPHERSUITES,
)
from .._core.rules import verify_result
from .._io.transport import (
    DatagramTransport,
    UdpTransport,
    require_datagram_transport,
    resolve_address,
)
from .._quic.assist import check_real_clock, start_assist
from .._quic.channel import Channel, EarlyData
from .._quic.reactor import Reactor
from . import domain_flags
from .binding import Binding
from .call import api
from .context_base import checked_alpn
from .context_settings import ContextSettings
from .session import Session, ticket_for
from .stream import StreamHandle

if TYPE_CHECKING:
    from .._types import Buffer

_NAMES = {v: n for n, v in TLS13_CIPHERSUITES.items()}


class ClientSetup:
    """Mixin: what a connection is told before its handshake."""

    _ctx: ContextSettings
    _channel: Channel
    _binding: Binding
    _default: StreamHandle
    _last_error: int
    _owns_socket: bool
    _sni: str | None
    _verify_host: str | None
    _session: Session | None
    _new_session: Session | None

    # Provided by the connection and its other mixins:
    _call_lock: Callable[[], AbstractContextManager[object]]
    get_async_engine: Callable[[], AsyncEngine | None]
    _detach_reactor: Callable[[], None]

    @api
    def set_fd(self, fd: socket.socket | int) -> None:
        """Use a UDP socket for I/O (SSL_set_fd).

        A ``socket.socket`` or a descriptor number (duplicated, so freeing
        the connection never closes it: OpenSSL's ``BIO_NOCLOSE``).  A
        connected socket's peer becomes the initial peer address.
        """
        owns = isinstance(fd, int)
        if owns:
            sock = socket.socket(fileno=os.dup(fd))  # type: ignore[arg-type]
        elif isinstance(fd, socket.socket):
            sock = fd
        else:
            raise TypeError(f"set_fd() takes a socket or an int fd, not {fd!r}")
        ctx = self._ctx
        transport = UdpTransport(
            sock, use_gso=ctx.use_gso, use_gro=ctx.use_gro, dont_fragment=True
        )
        self._attach(transport, owns)

    @api
    def set_transport(self, transport: DatagramTransport) -> None:
        """Use any datagram transport (SSL_set_bio with a datagram BIO),
        e.g. one end of :class:`quicconn.testing.DatagramPair`."""
        self._attach(require_datagram_transport(transport, "set_transport()"), False)

    def _attach(self, transport: DatagramTransport, owns_socket: bool) -> None:
        channel = self._channel
        if channel.started:
            raise ValueError("the transport cannot change once the handshake started")
        concurrency = self._ctx.get_domain_flags()
        if domain_flags.thread_assisted(concurrency):
            check_real_clock(transport.clock)
        self._detach_reactor()
        reactor = Reactor(transport)
        reactor.retain()
        channel.reactor = reactor
        self._owns_socket = owns_socket
        if channel.peer_addr is None:
            channel.peer_addr = transport.connected_peer()
        # The connection's implicit domain (openssl-quic-concurrency(7)):
        # without BLOCKING or LEGACY_BLOCKING objects start nonblocking;
        # thread-assisted, a thread handles its timers and datagrams.
        if not domain_flags.blocking_by_default(concurrency):
            self._binding.blocking = False
        if domain_flags.thread_assisted(concurrency):
            start_assist(reactor)

    @api
    def set1_initial_peer_addr(self, addr: tuple[Any, ...]) -> None:
        """The address to send the first datagram to (SSL_set1_initial_peer_addr)."""
        channel = self._channel
        if channel.started:
            raise ValueError(
                "the peer address cannot change once the handshake started"
            )
        family = socket.AF_INET6 if ":" in str(addr[0]) else socket.AF_INET
        reactor = channel.reactor
        if reactor is not None and isinstance(reactor.transport, UdpTransport):
            family = reactor.transport.family
        channel.peer_addr = resolve_address(family, addr)

    @api
    def set_tlsext_host_name(self, name: str) -> None:
        """The server name sent in SNI (SSL_set_tlsext_host_name)."""
        self._sni = self._check_name(name)

    @api
    def set1_host(self, name: str) -> None:
        """The name the server certificate must match (SSL_set1_host).

        quicconn checks the host name against this name or, failing that,
        the SNI name; see docs/api-mapping.md for where that differs.
        """
        self._verify_host = self._check_name(name)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError("a host name must be a non-empty str")
        if self._channel.started:
            raise ValueError("host names cannot change once the handshake started")
        return name

    @api
    def set_alpn_protos(self, protocols: list[str]) -> None:
        """Offer these ALPN protocols on this connection (SSL_set_alpn_protos)."""
        self._channel.settings.alpn_protocols = checked_alpn(protocols) or None

    def get0_alpn_selected(self) -> str | None:
        """The negotiated ALPN protocol (SSL_get0_alpn_selected)."""
        core = self._channel.core
        return core.alpn_protocol if core is not None else None

    def get_current_cipher(self) -> str | None:
        """The TLS 1.3 cipher suite's name (SSL_get_current_cipher +
        SSL_CIPHER_get_name), e.g. ``"TLS_AES_128_GCM_SHA256"``; None before
        the handshake chose one."""
        core = self._channel.core
        suite = core.cipher_suite if core is not None else None
        return None if suite is None else _NAMES.get(suite)

    def get_quic_version(self) -> int | None:
        """The QUIC version in use (a quicconn extension: OpenSSL 3.5 speaks
        only v1): QUIC_VERSION_1 or _2, or None before the connection started."""
        core = self._channel.core
        return core.version if core is not None else None

    def get_core_name(self) -> str:
        """The QUIC core this connection runs on (``"qh3"``, ``"aioquic"``).

        A quicconn extension (OpenSSL has one QUIC stack): chosen when the
        connection was made, from its context (``Context.core``).
        """
        return self._channel.backend.name

    def session_reused(self) -> bool:
        """Whether the TLS session was resumed (SSL_session_reused)."""
        core = self._channel.core
        return core is not None and core.session_resumed

    @api
    def set_session(self, session: Session | None) -> None:
        """Resume ``session`` on the next handshake (SSL_set_session).

        A session issued for another server name is ignored by the
        handshake, as in OpenSSL: a full handshake happens instead.
        """
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"set_session() takes a quicconn.Session, not {session!r}")
        if not self._channel.is_client:
            raise ValueError("only client connections resume sessions")
        if self._channel.started:
            raise ValueError("set_session() must be called before the handshake")
        self._session = session

    def get_verify_result(self) -> int:
        """The certificate verification result (SSL_get_verify_result).

        ``X509_V_OK`` (0) unless the handshake failed on the peer's
        certificate; then OpenSSL's ``X509_V_ERR_*`` code for the reason
        (e.g. 19 self-signed certificate in the chain, 62 host name
        mismatch), or ``X509_V_ERR_UNSPECIFIED`` (1).
        """
        return verify_result(self._channel.close_info)

    def get1_session(self) -> Session | None:
        """The newest session ticket the server sent, or None (SSL_get1_session).

        Servers send tickets after the handshake; read some data (or call
        :meth:`handle_events`) before asking, or learn of each new session
        from the context's callback (:meth:`Context.sess_set_new_cb`).
        """
        return self._new_session

    @api
    def write_early_data(self, data: Buffer) -> int:
        """Send ``data`` as 0-RTT on the default stream (SSL_write_early_data).

        Needs a resumed session that allows early data (:meth:`set_session`)
        and must come before the handshake completes; it starts the handshake
        without waiting for it.  OpenSSL's QUIC stack has no 0-RTT; this
        follows its TLS function.  Rejected early data is retransmitted
        after the handshake, so nothing is lost.
        """
        if not self._channel.is_client:
            raise ValueError("only clients send early data")
        if self._session is None or not self._session.get_max_early_data():
            raise ValueError(
                "write_early_data() needs set_session() with a session that "
                "allows early data (Session.get_max_early_data() > 0)"
            )
        if not self._channel.started:
            self._start()
        if self._channel.require_core().handshake_complete:
            raise ValueError("the handshake is complete: use write()")
        self._channel.early_data = EarlyData.ENABLED
        return self._default.write(data, 0)

    def set_early_data_enabled(self, enabled: bool) -> None:
        """Let stream I/O before the handshake completes go as 0-RTT.

        A quicconn extension generalising SSL_write_early_data to every
        stream: with a session that allows early data, ``new_stream()`` and
        writes before the handshake completes go in 0-RTT instead of
        waiting.  Early data can be replayed: use it for idempotent requests.
        """
        if enabled and not self._channel.is_client:
            raise ValueError("only clients send early data")
        self._channel.early_data = EarlyData.ENABLED if enabled else EarlyData.OFF

    def get_early_data_status(self) -> int:
        """EARLY_DATA_NOT_SENT, _REJECTED or _ACCEPTED (SSL_get_early_data_status)."""
        core = self._channel.core
        if (
            core is None
            or self._channel.early_data is not EarlyData.SENT
            or not core.handshake_complete
        ):
            return EARLY_DATA_NOT_SENT
        return EARLY_DATA_ACCEPTED if core.early_data_accepted else EARLY_DATA_REJECTED

    def _start(self) -> None:
        """Start the client handshake: check the names, create the core."""
        channel = self._channel
        if not channel.is_client:
            raise ValueError(
                "a server connection comes from Listener.accept_connection()"
            )
        self._binding.require_reactor()
        server_name = self._verify_host or self._sni
        if channel.settings.verify_peer:
            if server_name is None:
                raise ValueError(
                    "certificate verification needs the server's name: call "
                    "set1_host() (an IP address is fine), or set "
                    "ctx.verify_mode = VERIFY_NONE to skip verification"
                )
            if self._sni and self._verify_host and self._sni != self._verify_host:
                raise ValueError(
                    "set_tlsext_host_name() and set1_host() name different hosts; "
                    "quicconn verifies the SNI name, so they must agree"
                )
        asynchronous = bool(self._binding.mode & MODE_ASYNC)
        settings = channel.settings
        settings.private_key = channel.backend.prepare_private_key(
            settings.private_key, offload=asynchronous
        )
        channel.async_engine = self.get_async_engine() if asynchronous else None
        session = self._session
        channel.start_client(
            server_name=server_name,
            session_ticket=None
            if session is None
            else ticket_for(session, channel.backend),
            on_session_ticket=self._on_session_ticket,
        )

    def _on_session_ticket(self, ticket: Any) -> None:
        session = Session(ticket, self._channel.backend)
        self._new_session = session
        callback = self._ctx.sess_get_new_cb()
        if callback is not None:
            callback(self, session)


__all__ = ["ClientSetup"]
