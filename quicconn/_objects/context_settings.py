"""``ContextSettings``: what a QUIC ``SSL_CTX`` configures for its connections.

The public :class:`~quicconn.Context` is this class plus its factories
(``quicconn/_objects/context.py``); the split lets connections and
listeners depend on the settings without depending on the factory that
makes them.  The functions at the end are the internal API through which
the objects made from a context read it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from .._asyncjob.engine import AsyncEngine
from .._constants import (
    CLIENT_THREAD,
    MODE_ASYNC,
    MODE_AUTO_RETRY,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    TLS13_CIPHERSUITES,
    VERIFY_PEER,
    Role,
)
from .._core import registry
from .._core.interface import Capability, CoreBackend
from .._core.quic_lb import QuicLbConfig
from .._core.settings import CoreSettings
from .._quic.channel import ChannelConfig
from . import domain_flags
from .async_surface import AsyncCallback
from .context_base import ContextBase, checked_alpn

#: ``callback(conn, session)``: SSL_CTX_sess_set_new_cb's callback.
NewSessionCallback = Callable[[Any, Any], Any]


class ContextSettings(ContextBase):
    """Settings from which connections and listeners are made (``SSL_CTX_new``).

    ``Context(quicconn.CLIENT)`` verifies the server's certificate and host
    name by default (``VERIFY_PEER``) but, like OpenSSL, trusts no CA until
    :meth:`load_default_verify_paths` or :meth:`load_verify_locations` is
    called.  ``Context(quicconn.SERVER)`` needs :meth:`load_cert_chain`.
    """

    def __init__(
        self, role: Role | int = Role.CLIENT, *, core: str | None = None
    ) -> None:
        # CLIENT_THREAD is OSSL_QUIC_client_thread_method(): a client whose
        # connections are thread-assisted unless its domain flags change.
        thread_method = role == CLIENT_THREAD and not isinstance(role, Role)
        super().__init__(Role.CLIENT if thread_method else role)
        self._domain_flags = (
            domain_flags.THREAD_METHOD_FLAGS
            if thread_method
            else domain_flags.DEFAULT_FLAGS
        )
        #: Keep-alive PINGs after a silence of half the idle timeout (at
        #: most 25 s), as OpenSSL's channel sends them.  None (the default):
        #: on exactly for thread-assisted connections, whose assist thread
        #: is then what keeps them alive; True or False: always or never.
        self.keep_alive: bool | None = None
        if core is not None and core != registry.AUTO and core not in registry.known():
            raise ValueError(
                f"unknown QUIC core {core!r}: choose one of "
                f"{', '.join(registry.known())} or {registry.AUTO!r}"
            )
        #: The core asked for: a backend name, "auto", or None (the
        #: environment's QUICCONN_CORE, else auto); see :attr:`core`.
        self._core_choice = core
        self._settings = CoreSettings(is_client=self.role is Role.CLIENT)
        #: Write a qlog trace per connection into this directory (defaults
        #: to ``$QLOGDIR``); off unless set.
        self.qlog_dir: str | None = os.environ.get("QLOGDIR") or None
        #: OpenSSL's SSL_CTX_new sets SSL_MODE_AUTO_RETRY.
        self._mode = MODE_AUTO_RETRY
        self._new_session_cb: NewSessionCallback | None = None
        self.async_callback: AsyncCallback | None = None
        self.async_callback_arg: Any = None
        self._async_engine: AsyncEngine | None = None
        #: Bytes a stream may hold written but unacknowledged before a
        #: nonblocking write returns short (``SSL_VALUE_STREAM_WRITE_BUF_SIZE``).
        self.stream_write_buffer_size = 1024 * 1024
        #: Bytes all streams of a connection together may hold written but
        #: unacknowledged (a quicconn extension: OpenSSL bounds each stream
        #: only); writes also stop at the peer's MAX_DATA credit.
        self.connection_write_buffer_size = 4 * 1024 * 1024
        #: Server: connections whose handshake completed, queued for
        #: accept_connection(), before new ones are refused with
        #: CONNECTION_REFUSED.
        self.max_pending_connections = 256
        #: Server: live connections per listener (half-open, queued or
        #: accepted) before new ones are refused.
        self.max_connections = 10_000
        self._use_gso = True
        self._use_gro = True
        #: Server: half-open connections (handshake in progress) per
        #: listener; when full, the oldest is dropped to make room.
        self.max_handshakes = 1024
        self._stateless_reset_key: bytes | None = None
        self._session_ticket_key: bytes | None = None
        self._quic_lb: QuicLbConfig | None = None
        # An explicit choice (here or in $QUICCONN_CORE) that is unknown or
        # not installed is refused now, not at the first connection.
        self._check_core()

    @property
    def core(self) -> str:
        """The name of the QUIC core connections of this context run on.

        A quicconn extension: ``Context(role, core=...)`` chooses it
        (``"qh3"``, ``"aioquic"``, or ``"auto"``: the fastest installed core
        that can do what the context asks); without a choice,
        ``$QUICCONN_CORE``, else auto.  Settings only some cores can honour
        (docs/cores.md) move "auto" to one that can, and are refused with a
        ValueError when the core was chosen explicitly.
        """
        return registry.resolve(self._core_choice, self._needs()).name

    def _check_core(self) -> None:
        """ValueError if the chosen core cannot do what the settings ask."""
        registry.resolve(self._core_choice, self._needs())

    def _set_checked(self, name: str, value: Any) -> None:
        """Set an attribute, undoing it if no acceptable core can do it."""
        old = getattr(self, name)
        setattr(self, name, value)
        try:
            self._check_core()
        except ValueError:
            setattr(self, name, old)
            raise

    # -- verification -----------------------------------------------------

    def load_verify_locations(
        self,
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
        cadata: bytes | str | None = None,
    ) -> None:
        """Trust the CAs in a PEM file, a hashed directory or PEM data.

        Mirrors SSL_CTX_load_verify_locations (plus ``cadata`` as in CPython's
        ``ssl``).
        """
        file_path, dir_path, data = self._checked_ca_locations(cafile, capath, cadata)
        if file_path is not None:
            self._settings.cafile = file_path
        if dir_path is not None:
            self._settings.capath = dir_path
        if data is not None:
            self._settings.cadata = (self._settings.cadata or b"") + data

    def load_default_verify_paths(self) -> None:
        """Trust the system's CAs (SSL_CTX_set_default_verify_paths)."""
        self._settings.load_default_verify_paths()

    def load_cert_chain(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None = None,
        password: bytes | str | None = None,
    ) -> None:
        """Load this endpoint's certificate chain and private key.

        Mirrors SSL_CTX_use_certificate_chain_file + SSL_CTX_use_PrivateKey_file
        (+ SSL_CTX_check_private_key): a key that is not the certificate's
        raises ValueError ("key values mismatch" in OpenSSL) instead of
        failing every handshake later.  A missing file raises
        FileNotFoundError, a file without a PEM certificate or key ValueError.
        """
        self._settings.load_cert_chain(certfile, keyfile, password)

    # -- protocol ---------------------------------------------------------

    def set_alpn_protos(self, protocols: Iterable[str]) -> None:
        """Offer (client) or accept (server) these ALPN protocols.

        Mirrors SSL_CTX_set_alpn_protos; takes a list of names instead of
        OpenSSL's length-prefixed wire format.
        """
        self._settings.alpn_protocols = checked_alpn(protocols) or None

    def get_alpn_protos(self) -> list[str]:
        return list(self._settings.alpn_protocols or [])

    def set_ciphersuites(self, ciphersuites: str) -> None:
        """Offer (client) or accept (server) only these TLS 1.3 cipher suites.

        Mirrors SSL_CTX_set_ciphersuites: a colon-separated list of names such
        as ``"TLS_CHACHA20_POLY1305_SHA256"``, in preference order.  QUIC needs
        TLS 1.3, so an empty list is an error (OpenSSL would fail the
        handshake instead).
        """
        if not isinstance(ciphersuites, str):
            raise TypeError("ciphersuites must be a colon-separated str")
        names = [n.strip() for n in ciphersuites.split(":") if n.strip()]
        if not names:
            raise ValueError("QUIC needs at least one TLS 1.3 cipher suite")
        unknown = [n for n in names if n not in TLS13_CIPHERSUITES]
        if unknown:
            raise ValueError(
                f"unknown TLS 1.3 cipher suite(s) {', '.join(unknown)}; "
                f"known: {', '.join(TLS13_CIPHERSUITES)}"
            )
        self._settings.cipher_suites = [TLS13_CIPHERSUITES[n] for n in names]

    def set_quic_versions(
        self, versions: Iterable[int], *, initial: int | None = None
    ) -> None:
        """Choose the QUIC versions this side supports, most preferred first.

        A quicconn extension: OpenSSL 3.5 speaks QUIC v1 only and has no such
        call.  ``initial`` (client) is the version of the first Initial; the
        others are offered through compatible version negotiation (RFC 9368),
        so ``set_quic_versions([QUIC_VERSION_2, QUIC_VERSION_1],
        initial=QUIC_VERSION_1)`` starts in v1 and lets the server move the
        connection to v2.
        """
        chosen = [int(v) for v in versions]
        known = (QUIC_VERSION_1, QUIC_VERSION_2)
        if not chosen or any(v not in known for v in chosen):
            raise ValueError(
                "versions must be a non-empty list of QUIC_VERSION_1 / QUIC_VERSION_2"
            )
        if initial is not None and int(initial) not in chosen:
            raise ValueError("initial must be one of versions")
        self._settings.supported_versions = chosen
        self._settings.original_version = None if initial is None else int(initial)

    # -- transport settings -----------------------------------------------

    @property
    def idle_timeout(self) -> float:
        """Idle timeout requested from the peer, seconds (0 disables)."""
        return self._settings.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("idle_timeout must be >= 0 seconds")
        self._settings.idle_timeout = float(seconds)

    @property
    def handshake_timeout(self) -> float:
        """How long an unfinished handshake may go without hearing from the
        peer before it is abandoned, seconds (default 5; 0: only the idle
        timeout applies).

        A quicconn extension (OpenSSL has no such setting; quic-go's
        HandshakeIdleTimeout is the same idea, with the same default).  On a
        server it bounds how long a half-open connection (a client that
        sent a ClientHello and went silent) holds state; on a client, how
        long a handshake waits on a server that stopped answering.  The
        abandoned connection sends nothing; a client's call raises
        ConnectionTerminatedError ("handshake timed out").
        """
        return self._settings.handshake_timeout

    @handshake_timeout.setter
    def handshake_timeout(self, seconds: float) -> None:
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(
                f"handshake_timeout must be a number of seconds >= 0, not {seconds!r}"
            )
        self._settings.handshake_timeout = float(seconds)

    @property
    def max_datagram_size(self) -> int:
        """Largest UDP payload sent, bytes: the ceiling of path MTU discovery.

        Every path starts at 1200 bytes (the size QUIC requires all paths
        to carry); path MTU discovery (RFC 9000 section 14.3, RFC 8899)
        raises the size towards this ceiling where the path carries it, and
        falls back when it stops doing so.  The default, 1472, is a 1500-byte
        Ethernet MTU over IPv4 (over IPv6 that MTU carries 1452, which the
        search finds); 1200 turns discovery off.  A quicconn extension:
        OpenSSL 3.5 sends 1200-byte datagrams and does not probe.  What each
        core can probe: docs/performance.md, "Path MTU discovery".
        """
        return self._settings.max_datagram_size

    @max_datagram_size.setter
    def max_datagram_size(self, size: int) -> None:
        if not 1200 <= size <= 65527:
            raise ValueError("max_datagram_size must be between 1200 and 65527")
        self._settings.max_datagram_size = size

    @property
    def use_gso(self) -> bool:
        """Send runs of equal-sized datagrams in one system call (UDP
        generic segmentation offload, ``UDP_SEGMENT``) where the kernel
        can (Linux); default True.  A quicconn extension (OpenSSL leaves
        the socket to the application); applies to the UDP sockets of
        connections and listeners made afterwards.  docs/performance.md,
        "The driver".
        """
        return self._use_gso

    @use_gso.setter
    def use_gso(self, on: bool) -> None:
        self._use_gso = _flag(on, "use_gso")

    @property
    def use_gro(self) -> bool:
        """Receive runs of datagrams the kernel coalesced in one system
        call (UDP generic receive offload, ``UDP_GRO``) where it can
        (Linux); default True.  A quicconn extension, as :attr:`use_gso`.
        """
        return self._use_gro

    @use_gro.setter
    def use_gro(self, on: bool) -> None:
        self._use_gro = _flag(on, "use_gro")

    def set_max_datagram_frame_size(self, size: int | None) -> None:
        """Offer DATAGRAM frames (RFC 9221) up to ``size`` bytes each (a
        quicconn extension; OpenSSL has no DATAGRAM support).

        ``size`` is the max_datagram_frame_size transport parameter: the
        largest frame (type, length and payload) this endpoint accepts;
        None (the default) or 0 does not offer DATAGRAM frames.  A
        connection can send them only if the peer offered them too.
        """
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ValueError(f"max_datagram_frame_size is a non-negative int: {size!r}")
        self._settings.max_datagram_frame_size = size or None

    def get_max_datagram_frame_size(self) -> int | None:
        """The DATAGRAM frame size offered, or None (DATAGRAM frames off)."""
        return self._settings.max_datagram_frame_size

    @property
    def max_data(self) -> int:
        """Connection receive window, bytes, kept ahead of what was read."""
        return self._settings.max_data

    @max_data.setter
    def max_data(self, size: int) -> None:
        if size < 1:
            raise ValueError("max_data must be positive")
        self._settings.max_data = size

    @property
    def max_stream_data(self) -> int:
        """Per-stream receive window, bytes, kept ahead of what was read."""
        return self._settings.max_stream_data

    @max_stream_data.setter
    def max_stream_data(self, size: int) -> None:
        if size < 1:
            raise ValueError("max_stream_data must be positive")
        self._settings.max_stream_data = size

    @property
    def max_streams_bidi(self) -> int:
        """Bidirectional streams the peer may open at once (MAX_STREAMS).

        No OpenSSL call sets this (OpenSSL fixes it at 100); a peer stream
        finished on the wire and accepted gives its slot back.
        """
        return self._settings.max_streams_bidi

    @max_streams_bidi.setter
    def max_streams_bidi(self, count: int) -> None:
        self._settings.max_streams_bidi = _stream_count(count, "max_streams_bidi")

    @property
    def max_streams_uni(self) -> int:
        """Unidirectional streams the peer may open at once (MAX_STREAMS).

        See :attr:`max_streams_bidi`.
        """
        return self._settings.max_streams_uni

    @max_streams_uni.setter
    def max_streams_uni(self, count: int) -> None:
        self._settings.max_streams_uni = _stream_count(count, "max_streams_uni")

    @property
    def congestion_control(self) -> str:
        """Congestion controller: ``"reno"`` or ``"cubic"``.

        Unless set, the core's own: Reno on aioquic, CUBIC (with HyStart++)
        on qh3, which has no other (setting ``"reno"`` there is a
        ValueError; with core "auto" it selects aioquic).
        """
        chosen = self._settings.congestion_control
        if chosen is not None:
            return chosen
        return core_backend(self).default_congestion_control

    @congestion_control.setter
    def congestion_control(self, name: str) -> None:
        if name not in ("reno", "cubic"):
            raise ValueError(
                f"congestion_control must be 'reno' or 'cubic', not {name!r}"
            )
        old = self._settings.congestion_control
        self._settings.congestion_control = name
        try:
            self._check_core()
        except ValueError:
            self._settings.congestion_control = old
            raise

    @property
    def stateless_reset_key(self) -> bytes | None:
        """Server: the secret stateless reset tokens are derived from.

        Keep it across restarts to reset connections a previous process
        owned.  A quicconn extension; it needs a core that derives every
        token it issues (docs/cores.md: aioquic).
        """
        return self._stateless_reset_key

    @stateless_reset_key.setter
    def stateless_reset_key(self, key: bytes | None) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) < 16):
            raise ValueError("stateless_reset_key must be at least 16 bytes")
        self._set_checked("_stateless_reset_key", key)

    @property
    def retry_token_key(self) -> bytes | None:
        """Server: the key Retry tokens are sealed with (AES-GCM: 16, 24 or
        32 bytes); None (the default): a random key per listener.

        Servers that may see a client's retried Initial (the workers of a
        group, hosts behind a load balancer) share it.  A quicconn extension.
        """
        return self._settings.retry_token_key

    @retry_token_key.setter
    def retry_token_key(self, key: bytes | None) -> None:
        self._settings.retry_token_key = _aes_key(key, "retry_token_key")

    @property
    def session_ticket_key(self) -> bytes | None:
        """Server: seal each session ticket under this key (AES-GCM: 16, 24
        or 32 bytes) into the label the client presents, instead of
        remembering it; None (the default): remember up to 4,096 per
        listener.

        Servers that share it resume each other's sessions, 0-RTT included
        (the workers of a group, hosts behind a load balancer).  The
        quicconn counterpart of OpenSSL's ticket keys
        (SSL_CTX_set_tlsext_ticket_key_evp_cb); a label is about 110 bytes.
        """
        return self._session_ticket_key

    @session_ticket_key.setter
    def session_ticket_key(self, key: bytes | None) -> None:
        self._session_ticket_key = _aes_key(key, "session_ticket_key")

    @property
    def quic_lb(self) -> QuicLbConfig | None:
        """Server: choose connection IDs in the QUIC-LB draft's format
        (``quicconn.scale.QuicLbConfig``: config rotation bits, this
        server's ID, a nonce), so that a load balancer routes a
        connection's packets here even after the client's address changed.

        None (the default): random 8-byte IDs.  With a configuration the
        server issues no spare IDs (NEW_CONNECTION_ID), as the draft asks of
        its plaintext algorithm; qh3's core adds one of its own, and needs
        the IDs to be 8 bytes long (docs/scaling.md).  A quicconn extension.
        """
        return self._quic_lb

    @quic_lb.setter
    def quic_lb(self, config: QuicLbConfig | None) -> None:
        if config is not None and not isinstance(config, QuicLbConfig):
            raise TypeError(f"expected a quicconn.scale.QuicLbConfig, not {config!r}")
        if config is not None and self.role is not Role.SERVER:
            raise ValueError("quic_lb chooses a server's connection IDs: not a client")
        old = self._quic_lb
        self._quic_lb = config
        try:
            self._check_core()
        except ValueError:
            self._quic_lb = old
            raise
        settings = self._settings
        settings.server_cid_factory = None if config is None else config.new_cid
        settings.connection_id_length = (
            CoreSettings.connection_id_length if config is None else config.cid_length
        )

    # -- concurrency model (QUIC domains) -----------------------------------

    def set_domain_flags(self, flags: int) -> None:
        """Choose the concurrency model of this context's objects
        (SSL_CTX_set_domain_flags).

        ``DOMAIN_FLAG_SINGLE_THREAD``, ``_MULTI_THREAD`` (the default) or
        ``_THREAD_ASSISTED`` (a background thread handles timers and
        incoming datagrams), plus ``DOMAIN_FLAG_BLOCKING`` /
        ``_LEGACY_BLOCKING`` (objects start in blocking mode).  Completed as
        OpenSSL does (THREAD_ASSISTED implies MULTI_THREAD; no model means
        MULTI_THREAD); conflicting or unknown flags raise ValueError.  It
        applies to connections and listeners made afterwards (their
        implicit domain) and is the default of :meth:`new_domain`.
        """
        self._domain_flags = domain_flags.adjust(flags)

    def get_domain_flags(self) -> int:
        """The context's domain flags (SSL_CTX_get_domain_flags)."""
        return self._domain_flags

    def keep_alive_for(self, flags: int) -> bool:
        """Whether objects with these domain flags send keep-alive PINGs."""
        if self.keep_alive is None:
            return domain_flags.thread_assisted(flags)
        return bool(self.keep_alive)

    # -- modes ------------------------------------------------------------

    def sess_set_new_cb(self, callback: NewSessionCallback | None) -> None:
        """Call ``callback(conn, session)`` per new session (SSL_CTX_sess_set_new_cb).

        A client learns here when the server's ticket arrived (after the
        handshake; ``get1_session()`` right after ``connect()`` is usually
        still None).  It runs during event handling, with the connection's
        lock held: keep the session (``session.to_bytes()``) and return;
        do not call back into the connection.  Unlike OpenSSL, no session
        cache mode has to be set for it to be called, and its return value
        is ignored (the session object stays valid either way).
        """
        if callback is not None and not callable(callback):
            raise TypeError("the new-session callback must be callable")
        self._new_session_cb = callback

    def sess_get_new_cb(self) -> NewSessionCallback | None:
        """The new-session callback, or None (SSL_CTX_sess_get_new_cb)."""
        return self._new_session_cb

    def set_num_tickets(self, num_tickets: int) -> None:
        """How many session tickets a server sends after a full handshake
        (SSL_CTX_set_num_tickets).

        0 sends none: clients cannot resume (or send 0-RTT data), and the
        server neither builds nor keeps tickets.  OpenSSL's default is 2;
        quicconn's cores send one NewSessionTicket for any value above 0
        (a client needs only one to resume).
        """
        if isinstance(num_tickets, bool) or not isinstance(num_tickets, int):
            raise TypeError(f"num_tickets is an int, not {num_tickets!r}")
        if num_tickets < 0:
            raise ValueError(f"num_tickets cannot be negative: {num_tickets}")
        self._settings.num_tickets = num_tickets

    def get_num_tickets(self) -> int:
        """The value set with :meth:`set_num_tickets` (SSL_CTX_get_num_tickets)."""
        return self._settings.num_tickets

    def set_mode(self, mode: int) -> int:
        """Add mode bits (SSL_CTX_set_mode); returns the new mode."""
        self._set_checked("_mode", self._mode | mode)
        return self._mode

    def clear_mode(self, mode: int) -> int:
        """Remove mode bits (SSL_CTX_clear_mode); returns the new mode."""
        self._mode &= ~mode
        return self._mode

    def get_mode(self) -> int:
        """The current mode bits (SSL_CTX_get_mode)."""
        return self._mode

    def set_async_callback(self, callback: AsyncCallback | None) -> None:
        """Call ``callback(conn, arg)`` when an async job can resume.

        Mirrors SSL_CTX_set_async_callback; a connection's own callback wins.
        """
        if callback is not None and not callable(callback):
            raise TypeError("the async callback must be callable")
        self.async_callback = callback

    def set_async_callback_arg(self, arg: Any) -> None:
        """The ``arg`` passed to the async callback (SSL_CTX_set_async_callback_arg)."""
        self.async_callback_arg = arg

    def set_async_engine(self, engine: AsyncEngine | None) -> None:
        """Offload private-key operations to ``engine`` under MODE_ASYNC.

        quicconn's counterpart of an async-capable OpenSSL ENGINE/provider
        (ThreadPoolEngine, ProcessPoolEngine, or an AsyncEngine subclass).
        Without one, MODE_ASYNC changes nothing, as in OpenSSL: signing is
        synchronous and get_async_status() is ASYNC_STATUS_UNSUPPORTED.
        Connections take the engine when their handshake starts.
        """
        if engine is not None and not isinstance(engine, AsyncEngine):
            raise TypeError(f"expected a quicconn.AsyncEngine, not {engine!r}")
        self._set_checked("_async_engine", engine)

    def get_async_engine(self) -> AsyncEngine | None:
        """The engine set with :meth:`set_async_engine`, or None."""
        return self._async_engine

    # -- for the objects layer --------------------------------------------

    def _core_settings(self) -> CoreSettings:
        """A private copy of the settings for one new connection."""
        settings = dataclasses.replace(self._settings)
        settings.verify_peer = bool(self._verify_mode & VERIFY_PEER)
        settings.secrets_log_file = self._keylog()
        settings.qlog_dir = self.qlog_dir
        settings.keep_alive = self.keep_alive_for(self._domain_flags)
        return settings

    def _needs(self) -> frozenset[Capability]:
        """The capabilities the settings ask of a core."""
        needs = {Capability.CLIENT if self.role is Role.CLIENT else Capability.SERVER}
        if self._mode & MODE_ASYNC and self._async_engine is not None:
            needs.add(Capability.ASYNC_SIGN)
        chosen = self._settings.congestion_control
        if chosen is not None:
            needs.add(_CONGESTION_CONTROLLERS[chosen])
        if self._stateless_reset_key is not None and self._quic_lb is None:
            # With QUIC-LB IDs the key covers the IDs quicconn chose, the
            # only ones a load balancer routes here; a core that adds spare
            # IDs of its own lacks CHOSEN_CONNECTION_IDS instead.
            needs.add(Capability.DERIVED_RESET_TOKENS)
        if self.keep_alive_for(self._domain_flags):
            needs.add(Capability.KEEP_ALIVE)
        if self._settings.max_datagram_frame_size:
            needs.add(Capability.DATAGRAMS)
        if (
            self._quic_lb is not None
            and self._quic_lb.cid_length != CoreSettings.connection_id_length
        ):
            needs.add(Capability.ANY_CID_LENGTH)
        return frozenset(needs)


def channel_config(ctx: ContextSettings) -> ChannelConfig:
    """What a new connection's channel is made from (settings copied)."""
    return ChannelConfig(
        backend=registry.resolve(ctx._core_choice, ctx._needs()),
        settings=ctx._core_settings(),
        write_buffer_size=ctx.stream_write_buffer_size,
        connection_write_buffer_size=ctx.connection_write_buffer_size,
    )


def core_settings(ctx: ContextSettings) -> CoreSettings:
    """A private copy of the context's core settings (for a listener)."""
    return ctx._core_settings()


def core_backend(ctx: ContextSettings) -> CoreBackend:
    """The core backend connections of this context run on."""
    return registry.resolve(ctx._core_choice, ctx._needs())


_CONGESTION_CONTROLLERS = {"reno": Capability.RENO, "cubic": Capability.CUBIC}


def _aes_key(key: bytes | None, name: str) -> bytes | None:
    if key is not None and (not isinstance(key, bytes) or len(key) not in (16, 24, 32)):
        raise ValueError(f"{name} must be 16, 24 or 32 bytes (an AES key), or None")
    return key


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} is True or False, not {value!r}")
    return value


def _stream_count(count: int, name: str) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**60:
        raise ValueError(f"{name} must be an int in [0, 2**60), not {count!r}")
    return count


__all__ = ["ContextSettings", "channel_config", "core_backend", "core_settings"]
