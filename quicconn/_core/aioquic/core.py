"""The core adapter: quicconn's only window onto aioquic's ``QuicConnection``.

Everything protocol-shaped (packets, TLS, loss recovery, congestion control)
happens in aioquic's sans-I/O connection.  This module wraps it so that:

* the layers above see plain method calls and a :class:`CoreSink` callback
  interface instead of aioquic's event classes;
* a close becomes visible the moment it begins (aioquic reports it only when
  the terminating period ends), with whether it was local or remote;
* receive credit is granted as the *application* consumes data, not as it
  arrives, so memory per connection is bounded by the flow-control windows
  (aioquic's own policy doubles the window whenever half of it is used);
* one misbehaving datagram can never raise into the reactor.

The flow-control and close-state pieces read or override private members of
``QuicConnection``; that coupling is confined to this file, and the aioquic
minor version is pinned in ``pyproject.toml`` because of it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import re
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from aioquic.buffer import Buffer
from aioquic.quic import events as quic_events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicFileLogger
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.retry import QuicRetryTokenHandler
from aioquic.tls import (
    AlertInternalError,
    CipherSuite,
    Epoch,
    SessionTicket,
)
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..._asyncjob.engine import scheme_for
from ..._asyncjob.job import AsyncSignError, JobHost, Resumed, offload_sign
from ..._errors import ConnCloseInfo
from ..interface import GateAction, GateDecision, GateReply
from ..settings import CoreSettings

logger = logging.getLogger("quicconn.core")

Address = tuple[Any, ...]

#: TLS alerts (RFC 8446 section 6) that mean "your certificate is not acceptable".
_CERTIFICATE_ALERTS = frozenset({42, 43, 44, 45, 46, 48})
_CRYPTO_ERROR_BASE = 0x100
#: 1 byte header + 4 unpredictable bytes + 16-byte token (RFC 9000 section 10.3).
_MIN_STATELESS_RESET_SIZE = 21
_PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S
)

#: Frame capacities used when writing flow-control updates (type + 2 varints).
_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8
#: How long 1-RTT acknowledgements may wait for more packets (aioquic: 1 ms;
#: Initial and Handshake packets are acknowledged at once either way).
ACK_DELAY = 0.002
#: Added to the time a due timer is handled at (see ``QuicCore.handle_timer``).
TIMER_SLACK = 1e-6
_CONNECTION_LIMIT_FRAME_CAPACITY = 1 + 8


def is_verification_failure(info: ConnCloseInfo) -> bool:
    """Whether a close was this endpoint rejecting the peer's certificate."""
    alert = info.error_code - _CRYPTO_ERROR_BASE
    return info.is_local and info.is_transport and alert in _CERTIFICATE_ALERTS


_QLOG_LOGGERS: dict[str, QuicFileLogger] = {}


def _qlog_logger(directory: str) -> QuicFileLogger:
    """One file logger per directory: it writes one ``.qlog`` per connection."""
    found = _QLOG_LOGGERS.get(directory)
    if found is None:
        os.makedirs(directory, exist_ok=True)
        found = _QLOG_LOGGERS[directory] = QuicFileLogger(directory)
    return found


def build_configuration(
    settings: CoreSettings, server_name: str | None = None
) -> QuicConfiguration:
    """Make aioquic's configuration object from quicconn's settings."""
    config = QuicConfiguration(
        alpn_protocols=list(settings.alpn_protocols)
        if settings.alpn_protocols
        else None,
        congestion_control_algorithm=settings.congestion_control,
        connection_id_length=settings.connection_id_length,
        idle_timeout=settings.idle_timeout,
        is_client=settings.is_client,
        max_data=settings.max_data,
        max_datagram_size=settings.max_datagram_size,
        max_stream_data=settings.max_stream_data,
        secrets_log_file=settings.secrets_log_file,
        server_name=server_name,
        supported_versions=list(settings.supported_versions),
    )
    config.verify_mode = ssl.CERT_REQUIRED if settings.verify_peer else ssl.CERT_NONE
    if settings.original_version is not None:
        config.original_version = settings.original_version
    if settings.cipher_suites is not None:
        config.cipher_suites = [CipherSuite(v) for v in settings.cipher_suites]
    if settings.is_client and settings.verify_peer and not settings.has_trust_anchors():
        # OpenSSL trusts nothing until told to; aioquic would fall back to
        # certifi.  An empty store keeps OpenSSL's behaviour.
        config.cadata = b""
    else:
        config.cafile = settings.cafile
        config.capath = settings.capath
        config.cadata = settings.cadata
    config.certificate = settings.certificate
    config.certificate_chain = list(settings.certificate_chain)
    config.private_key = settings.private_key
    if settings.qlog_dir is not None:
        config.quic_logger = _qlog_logger(settings.qlog_dir)
    return config


# -- MODE_ASYNC: a private key whose signatures an offload engine makes --------


class _OffloadedKey:
    """Wraps the certificate key so that ``sign()`` can pause an async job.

    aioquic's TLS stack calls ``certificate_private_key.sign(data, *params)``
    for CertificateVerify (server, and client under client authentication)
    and picks signature algorithms with ``isinstance`` checks; the
    subclasses below are registered as virtual subclasses of the matching
    ``cryptography`` key type so those checks see the real kind of key.
    Everything but ``sign`` is the wrapped key's.  Inside an async job the
    signature goes through the job's engine (see quicconn/_asyncjob/job.py);
    outside one it is made right here.
    """

    def __init__(self, key: Any) -> None:
        self.wrapped_key = key

    def sign(self, data: bytes, *params: Any) -> bytes:
        key = self.wrapped_key
        try:
            return offload_sign(key, data, scheme_for(key, params))
        except AsyncSignError as exc:
            # The peer learns only that the handshake failed (internal_error
            # alert); the engine's reason is kept for the local error.
            raise AlertInternalError("private key operation failed") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped_key, name)


class _OffloadedRSAKey(_OffloadedKey):
    pass


class _OffloadedECKey(_OffloadedKey):
    pass


class _OffloadedEd25519Key(_OffloadedKey):
    pass


class _OffloadedEd448Key(_OffloadedKey):
    pass


rsa.RSAPrivateKey.register(_OffloadedRSAKey)
ec.EllipticCurvePrivateKey.register(_OffloadedECKey)
ed25519.Ed25519PrivateKey.register(_OffloadedEd25519Key)
ed448.Ed448PrivateKey.register(_OffloadedEd448Key)

_OFFLOADED_KINDS: tuple[tuple[type, type[_OffloadedKey]], ...] = (
    (rsa.RSAPrivateKey, _OffloadedRSAKey),
    (ec.EllipticCurvePrivateKey, _OffloadedECKey),
    (ed25519.Ed25519PrivateKey, _OffloadedEd25519Key),
    (ed448.Ed448PrivateKey, _OffloadedEd448Key),
)


def offloadable_key(key: Any) -> Any:
    """``key`` wrapped for MODE_ASYNC (unchanged if None or already wrapped)."""
    if key is None or isinstance(key, _OffloadedKey):
        return key
    for kind, wrapper in _OFFLOADED_KINDS:
        if isinstance(key, kind):
            return wrapper(key)
    return key  # a kind TLS 1.3 cannot use anyway: signed synchronously


def plain_key(key: Any) -> Any:
    """The key under an :func:`offloadable_key` wrapper."""
    return key.wrapped_key if isinstance(key, _OffloadedKey) else key


class CoreSink(Protocol):
    """Receives what a :class:`QuicCore` has to report, as plain calls."""

    def on_handshake_complete(
        self, alpn: str | None, session_resumed: bool, early_data_accepted: bool
    ) -> None: ...

    def on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None: ...

    def on_stream_reset(self, stream_id: int, error_code: int) -> None: ...

    def on_stop_sending(self, stream_id: int, error_code: int) -> None: ...

    def on_connection_id_issued(self, cid: bytes) -> None: ...

    def on_connection_id_retired(self, cid: bytes) -> None: ...

    def on_closing(self, info: ConnCloseInfo) -> None: ...

    def on_terminated(self) -> None: ...


def stateless_reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token for ``cid`` (RFC 9000 section 10.3.2).

    Derived from a server secret so that a server which lost a connection's
    state can still prove, with a reset, that it once issued ``cid``.
    """
    return hmac.new(key, cid, hashlib.sha256).digest()[:16]


class _AdaptedQuicConnection(QuicConnection):
    """``QuicConnection`` with quicconn's policies where aioquic has its own.

    * Receive credit is granted as the application consumes: the window
      stays ``max_stream_data`` (per stream) and ``max_data`` (per
      connection) ahead of what was *read*, updated once half a window was
      consumed.
    * A server's stateless reset tokens are derived from a listener secret
      (aioquic draws random ones, which no one could reproduce later).
    * Stream data sent before a Retry (0-RTT) is queued again after it.
    * A server accepts a first packet without a CRYPTO frame (see
      ``_payload_received``).
    * Initial and Handshake packets carrying CRYPTO repeat the ACK ranges
      the peer has not seen acknowledged (see ``_write_handshake``).
    * A 1-RTT packet with missing packets below it is acknowledged at once
      (see ``receive_datagram``).
    * 1-RTT packets are acknowledged within :data:`ACK_DELAY` (2 ms, well
      inside the 25 ms max_ack_delay advertised) rather than aioquic's 1 ms:
      half the ACKs on a fast path, less work at both ends.
    """

    def __init__(self, *, reset_key: bytes | None = None, **kwargs: Any) -> None:
        self._reset_key = reset_key
        self._reset_tokens_key: tuple[Any, ...] | None = None
        self._reset_tokens: frozenset[bytes] = frozenset()
        super().__init__(**kwargs)
        self.consumed_by_stream: dict[int, int] = {}
        self.consumed_total = 0
        #: Peer-opened streams the application is done with, by kind
        #: (key: unidirectional?); each lets the peer open one more.
        self.peer_streams_released = {False: 0, True: 0}
        self._stream_credit_base: dict[bool, int] = {}
        #: Peer-opened streams the application released that may still be
        #: live on the wire; each returns its slot once finished there too.
        self.app_released: set[int] = set()
        self._ack_delay = ACK_DELAY
        self._derive_reset_tokens()

    def set_stream_limits(self, bidi: int, uni: int) -> None:
        """The initial MAX_STREAMS values (before transport parameters go out)."""
        for limit, value in (
            (self._local_max_streams_bidi, bidi),
            (self._local_max_streams_uni, uni),
        ):
            limit.value = limit.sent = value

    def _derive_reset_tokens(self) -> None:
        if self._reset_key is None:
            return
        for host_cid in self._host_cids:
            host_cid.stateless_reset_token = stateless_reset_token(
                self._reset_key, host_cid.cid
            )

    def _replenish_connection_ids(self) -> None:
        super()._replenish_connection_ids()
        self._derive_reset_tokens()

    def _payload_received(
        self, context: Any, plain: bytes, crypto_frame_required: bool = False
    ) -> tuple[bool, bool]:
        """Process a packet's frames, without aioquic's CRYPTO requirement.

        RFC 9000 (section 17.2.2) requires a CRYPTO frame in the first packet
        a client *sends*.  When that packet is lost, the first to *arrive*
        can be a PING-only PTO probe (OpenSSL's client sends those), and
        aioquic would close the connection over it.  The server instead
        acknowledges the probe; the acknowledgement is what lets the client
        declare its ClientHello lost and send it again.
        """
        return super()._payload_received(context, plain)

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        """Receive, acknowledging at once a 1-RTT packet that skipped some.

        RFC 9000 (section 13.2.1) asks for an immediate ACK when a packet
        arrives with missing packets below it, so that the sender detects
        the loss a round trip sooner; aioquic waits for its ACK timer.
        """
        space = self._spaces.get(Epoch.ONE_RTT)
        if space is None:
            # No packet spaces yet (a server before its first packet):
            # nothing was received, so nothing can be missing below it.  The
            # 1-RTT space is kept across the call: a Retry makes new spaces,
            # but only before any 1-RTT packet, when there is nothing to do.
            super().receive_datagram(data, addr, now=now)
            return
        before = space.largest_received_packet
        super().receive_datagram(data, addr, now=now)
        if (
            before >= 0
            and space.ack_at is not None
            and space.ack_at > now
            and len(space.ack_queue) > 0
            and space.ack_queue[-1].start > before + 1
        ):
            # Strictly before now: aioquic lets pacing hold back an ACK whose
            # time is exactly now, and would then wait on it forever.
            space.ack_at = math.nextafter(now, -math.inf)

    def _write_handshake(self, builder: Any, epoch: Any, now: float) -> None:
        """Write Initial/Handshake packets, repeating our ACK in CRYPTO ones.

        aioquic acknowledges Initial and Handshake packets once; if that
        ACK-only packet is lost, its CRYPTO retransmissions carry no ACK, and
        a peer whose PTO probes are bare PINGs (OpenSSL's) never learns that
        its own flight (say, its Finished) was lost.  Packets that carry
        CRYPTO or a probe repeat the ranges the peer has not yet seen
        acknowledged (RFC 9000, section 13.2.4).
        """
        space = self._spaces[epoch]
        repeat = (
            space.ack_at is None
            and len(space.ack_queue) > 0
            and self._cryptos[epoch].send.is_valid()
            and (
                not self._crypto_streams[epoch].sender.buffer_is_empty
                or self._probe_pending
            )
        )
        if repeat:
            space.ack_at = now
        try:
            super()._write_handshake(builder, epoch, now)
        finally:
            if repeat and space.ack_at == now:
                space.ack_at = None  # not written (no room): no timer for it

    def _receive_retry_packet(
        self, header: Any, packet_without_tag: bytes, now: float
    ) -> None:
        retries = self._retry_count
        super()._receive_retry_packet(header, packet_without_tag, now)
        if self._retry_count != retries:
            self._requeue_stream_data()

    def _requeue_stream_data(self) -> None:
        """Mark all stream data sent before a Retry as unsent.

        aioquic restarts its packet spaces on Retry, forgetting the 0-RTT
        packets it had sent, so their stream data would otherwise never be
        retransmitted (the server drops 0-RTT sent before its Retry).
        """
        for stream in self._streams.values():
            sender = stream.sender
            if sender._buffer_stop > sender._buffer_start:
                sender._pending.add(sender._buffer_start, sender._buffer_stop)
                sender.buffer_is_empty = False
            if sender._buffer_fin is not None and not sender._acked_fin:
                sender._pending_eof = True
                sender.buffer_is_empty = False

    def peer_reset_tokens(self) -> frozenset[bytes]:
        """Every stateless reset token the peer gave us (cached: hot path)."""
        key = (
            self._peer_cid.stateless_reset_token,
            len(self._peer_cid_available),
            max(self._peer_cid_sequence_numbers, default=0),
        )
        if key != self._reset_tokens_key:
            self._reset_tokens_key = key
            self._reset_tokens = frozenset(
                cid.stateless_reset_token
                for cid in (self._peer_cid, *self._peer_cid_available)
                if cid.stateless_reset_token
            )
        return self._reset_tokens

    def enter_draining(self, reason: str, now: float) -> None:
        """Treat the connection as closed by the peer (RFC 9000 section 10.3.1)."""
        if self._close_event is None and self._state not in (
            QuicConnectionState.CLOSING,
            QuicConnectionState.DRAINING,
            QuicConnectionState.TERMINATED,
        ):
            self._close_event = quic_events.ConnectionTerminated(
                error_code=QuicErrorCode.NO_ERROR,
                frame_type=QuicFrameType.PADDING,
                reason_phrase=reason,
            )
            self._close_begin(is_initiator=False, now=now)

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if not stream.max_stream_data_local:
            return  # a send-only stream grants nothing
        window = self._configuration.max_stream_data
        target = self.consumed_by_stream.get(stream.stream_id, 0) + window
        if target - stream.max_stream_data_local >= window // 2:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_max_stream_data_delivery,
            handler_args=(stream,),
        )
        buf.push_uint_var(stream.stream_id)
        buf.push_uint_var(stream.max_stream_data_local)
        stream.max_stream_data_local_sent = stream.max_stream_data_local
        if self._quic_logger is not None:
            builder.quic_logger_frames.append(
                self._quic_logger.encode_max_stream_data_frame(
                    maximum=stream.max_stream_data_local, stream_id=stream.stream_id
                )
            )

    def _serialize_transport_parameters(self) -> bytes:
        # The stream counts announced here are the base of all later credit.
        self._stream_credit_base = {
            False: self._local_max_streams_bidi.value,
            True: self._local_max_streams_uni.value,
        }
        return bytes(super()._serialize_transport_parameters())

    def _limit_stream_credit(self) -> None:
        # aioquic lets the peer open a new stream as soon as it has discarded
        # one, whether or not the application ever accepted it: a peer could
        # then queue unbounded streams at a server that does not accept
        # them.  As in OpenSSL, credit comes back only for streams the
        # application released (QuicCore.release_stream) and that are
        # finished on the wire; aioquic's own
        # increments are overridden, and nothing announced is taken back.
        if self.app_released:
            streams = self._streams
            done = [
                sid
                for sid in self.app_released
                if sid not in streams or streams[sid].is_finished
            ]
            for sid in done:
                self.app_released.discard(sid)
                self.peer_streams_released[bool(sid & 2)] += 1
        for uni, limit in (
            (False, self._local_max_streams_bidi),
            (True, self._local_max_streams_uni),
        ):
            base = self._stream_credit_base.get(uni)
            if base is not None:
                allowed = base + self.peer_streams_released[uni]
                limit.value = max(limit.sent, allowed)

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        self._limit_stream_credit()
        max_data = self._local_max_data
        window = self._configuration.max_data
        target = self.consumed_total + window
        if target - max_data.value >= window // 2:
            max_data.value = target
        for limit in (
            max_data,
            self._local_max_streams_bidi,
            self._local_max_streams_uni,
        ):
            if limit is not max_data and (
                limit.sent - limit.used >= limit.value - limit.sent
            ):
                continue  # batch MAX_STREAMS until the peer has used half
            if limit.value == limit.sent:
                continue
            buf = builder.start_frame(
                limit.frame_type,
                capacity=_CONNECTION_LIMIT_FRAME_CAPACITY,
                handler=self._on_connection_limit_delivery,
                handler_args=(limit,),
            )
            buf.push_uint_var(limit.value)
            limit.sent = limit.value
            if self._quic_logger is not None:
                builder.quic_logger_frames.append(
                    self._quic_logger.encode_connection_limit_frame(
                        frame_type=limit.frame_type, maximum=limit.value
                    )
                )


class QuicCore:
    """One QUIC connection's protocol state, driven by the reactor.

    The reactor calls :meth:`receive_datagram`, :meth:`handle_timer` and
    :meth:`datagrams_to_send`; the objects layer calls the stream and close
    methods; :meth:`dispatch_events` reports progress to the sink.
    """

    def __init__(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None = None,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        reset_key: bytes | None = None,
        session_ticket: SessionTicket | None = None,
        session_ticket_fetcher: Callable[[bytes], SessionTicket | None] | None = None,
        session_ticket_handler: Callable[[SessionTicket], None] | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        configuration = build_configuration(settings, server_name)
        if session_ticket is not None:
            configuration.session_ticket = session_ticket
        self._quic = _AdaptedQuicConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            reset_key=reset_key,
            session_ticket_fetcher=session_ticket_fetcher,
            session_ticket_handler=session_ticket_handler,
        )
        self._stream_window = settings.max_stream_data
        self._quic.set_stream_limits(
            settings.max_streams_bidi, settings.max_streams_uni
        )
        self._closing_reported = False
        self._terminated_reported = False
        self.close_info: ConnCloseInfo | None = None
        self.handshake_complete = False
        self.alpn_protocol: str | None = None
        self.session_resumed = False
        self.early_data_attempted = session_ticket is not None and bool(
            session_ticket.max_early_data_size
        )
        self.early_data_accepted = False
        self.receive_errors = 0
        #: MODE_ASYNC: runs packet processing in async jobs (set by the
        #: connection; see quicconn/_asyncjob/job.py).  While it holds a paused
        #: job, nothing else may enter the aioquic connection.
        self.async_host: JobHost | None = None

    # -- identity ---------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self.settings.is_client

    @property
    def host_cid(self) -> bytes:
        return self._quic.host_cid

    @property
    def original_destination_connection_id(self) -> bytes:
        return self._quic.original_destination_connection_id

    def peer_address(self) -> Address | None:
        return self._quic.get_peer_address()

    # -- driving ----------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Start the client handshake towards ``addr``."""
        self._quic.connect(addr, now=now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram.  Never raises: bad input is logged and dropped."""
        host = self.async_host
        if host is not None and host.intercepts(self.handshake_complete):
            # MODE_ASYNC: inside a job (it may pause to sign), or queued
            # behind the paused one.
            host.run(lambda at: self._receive_now(data, addr, at), now)
            return
        self._receive_now(data, addr, now)

    def _receive_now(self, data: bytes, addr: Address, now: float) -> None:
        if (
            self.settings.is_client
            and len(data) >= _MIN_STATELESS_RESET_SIZE
            and not data[0] & 0x80
            and data[-16:] in self._quic.peer_reset_tokens()
        ):
            # A short-header datagram ending in a token the server gave us:
            # the server lost our state (RFC 9000 section 10.3.1).
            self._quic.enter_draining("stateless reset received", now)
            return
        try:
            self._quic.receive_datagram(data, addr, now=now)
        except Exception:
            self.receive_errors += 1
            logger.exception("dropped a datagram the QUIC core could not process")

    def received_a_packet(self) -> bool:
        """True once a packet from the peer was decrypted (or a close began).

        A server's first datagram can look like an Initial and still be
        junk: only a packet that decrypts proves a real client.  A job
        paused to sign counts too: signing follows a decrypted ClientHello,
        but aioquic records the packet only once its processing finished.
        """
        quic = self._quic
        return (
            self.async_held
            or quic._close_event is not None
            or any(
                space.largest_received_packet >= 0 for space in quic._spaces.values()
            )
        )

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.async_held:
            return []
        return self._quic.datagrams_to_send(now=now)

    def get_timer(self) -> float | None:
        if self.async_held:
            return None  # re-armed when the job resumes
        return self._quic.get_timer()

    def handle_timer(self, now: float) -> None:
        if self.async_held:
            return
        # aioquic declares a packet lost by time when ``sent + delay <= now``
        # but computes it as ``sent <= now - delay``; at exactly the deadline
        # float rounding can say no and re-arm the same deadline, forever on
        # a clock that advances to deadlines exactly (FakeClock).  A timer
        # fires a microsecond late instead.
        self._quic.handle_timer(now=now + TIMER_SLACK)

    # -- MODE_ASYNC --------------------------------------------------------

    def attach_async_host(self, host: JobHost) -> None:
        """Run packet processing in async jobs from ``host``."""
        self.async_host = host

    @property
    def async_held(self) -> bool:
        """True while MODE_ASYNC work is outstanding: a job paused inside
        this core, or datagrams waiting for a free job.  The core is then
        left alone: no timers, no output, no events."""
        host = self.async_host
        return host is not None and host.busy

    def resume_async(self, now: float) -> bool:
        """Resume a paused job whose engine finished, then queued datagrams.

        False if only another thread can resume it (the one it runs in).
        """
        host = self.async_host
        if host is None:
            return True
        outcome = host.resume(now)
        if outcome is Resumed.LOST:
            self.close(
                QuicErrorCode.INTERNAL_ERROR, "handshake abandoned", application=False
            )
        return outcome is not Resumed.ELSEWHERE

    def dispatch_events(self) -> None:
        """Report everything that happened since the last call to the sink."""
        if self.async_held:
            return
        quic = self._quic
        sink = self._sink
        event = quic.next_event()
        while event is not None:
            if isinstance(event, quic_events.StreamDataReceived):
                sink.on_stream_data(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, quic_events.StreamReset):
                self._credit_reset_stream(event.stream_id)
                sink.on_stream_reset(event.stream_id, event.error_code)
            elif isinstance(event, quic_events.StopSendingReceived):
                sink.on_stop_sending(event.stream_id, event.error_code)
            elif isinstance(event, quic_events.HandshakeCompleted):
                self.handshake_complete = True
                self.alpn_protocol = event.alpn_protocol
                self.session_resumed = event.session_resumed
                self.early_data_accepted = event.early_data_accepted
                sink.on_handshake_complete(
                    event.alpn_protocol,
                    event.session_resumed,
                    event.early_data_accepted,
                )
            elif isinstance(event, quic_events.ConnectionIdIssued):
                sink.on_connection_id_issued(event.connection_id)
            elif isinstance(event, quic_events.ConnectionIdRetired):
                sink.on_connection_id_retired(event.connection_id)
            event = quic.next_event()
        self._report_close_state()

    def _report_close_state(self) -> None:
        quic = self._quic
        if not self._closing_reported and quic._close_event is not None:
            self._closing_reported = True
            close = quic._close_event
            # Only a received CONNECTION_CLOSE puts aioquic in DRAINING.
            is_local = quic._state is not QuicConnectionState.DRAINING
            self.close_info = ConnCloseInfo(
                error_code=close.error_code,
                frame_type=close.frame_type,
                reason=close.reason_phrase,
                is_local=is_local,
                is_transport=close.frame_type is not None,
            )
            self._sink.on_closing(self.close_info)
        if (
            not self._terminated_reported
            and quic._state is QuicConnectionState.TERMINATED
        ):
            self._terminated_reported = True
            self._sink.on_terminated()

    # -- state ------------------------------------------------------------

    @property
    def is_closing(self) -> bool:
        """True once a close has begun, locally or by the peer."""
        return self._quic._close_event is not None

    @property
    def is_terminated(self) -> bool:
        """True once the terminating (closing/draining) period is over."""
        return self._quic._state is QuicConnectionState.TERMINATED

    def idle_timeout(self) -> float:
        """The idle timeout this endpoint asked for, in seconds."""
        return float(self._quic.configuration.idle_timeout)

    def set_idle_timeout(self, seconds: float) -> None:
        self._quic.configuration.idle_timeout = seconds

    def peer_idle_timeout(self) -> float | None:
        """The idle timeout the peer asked for, once known (seconds)."""
        value = self._quic._remote_max_idle_timeout
        return None if value is None else float(value)

    def peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter, if sent."""
        return self._quic._remote_max_datagram_frame_size

    def negotiated_idle_timeout(self) -> float | None:
        """The effective idle timeout: the smaller non-zero of both requests."""
        local = self.idle_timeout()
        peer = self.peer_idle_timeout()
        if peer is None or peer == 0:
            return local or None
        if local == 0:
            return peer
        return min(local, peer)

    # -- streams ----------------------------------------------------------

    def next_stream_id(self, unidirectional: bool) -> int:
        return self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)

    def local_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer lets us open now."""
        quic = self._quic
        if unidirectional:
            limit, next_id = (
                quic._remote_max_streams_uni,
                quic._local_next_stream_id_uni,
            )
        else:
            limit, next_id = (
                quic._remote_max_streams_bidi,
                quic._local_next_stream_id_bidi,
            )
        return max(0, limit - next_id // 4)

    def remote_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer may open now."""
        quic = self._quic
        limit = (
            quic._local_max_streams_uni
            if unidirectional
            else quic._local_max_streams_bidi
        )
        return max(0, limit.value - limit.used)

    def open_stream(self, unidirectional: bool) -> int:
        """Allocate the next local stream ID (the caller checked the limit)."""
        stream_id = self.next_stream_id(unidirectional)
        self._quic.send_stream_data(stream_id, b"", end_stream=False)
        return stream_id

    def send_credit(self, stream_id: int) -> int:
        """Bytes the peer's MAX_STREAM_DATA still lets this stream append.

        OpenSSL accepts a write only up to the stream's flow-control credit
        (``xso_sstream_append``); this is that figure.  0 for a stream the
        core has already discarded.
        """
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, int(stream.max_stream_data_remote - stream.sender._buffer_stop))

    def stream_discarded(self, stream_id: int) -> bool:
        """True once the core finished with a stream and dropped its state."""
        return stream_id not in self._quic._streams

    def send_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=fin)

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream but not yet acknowledged by the peer."""
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def send_fully_acked(self, stream_id: int) -> bool:
        """True when every byte (and the FIN, if any) written was acknowledged."""
        stream = self._quic._streams.get(stream_id)
        if stream is None:
            return True  # discarded: aioquic drops a stream once it is done
        return bool(stream.sender.is_finished) or (
            stream.sender._buffer_stop == stream.sender._buffer_start
            and stream.sender._buffer_fin is None
        )

    def all_sends_acked(self) -> bool:
        return all(self.send_fully_acked(sid) for sid in list(self._quic._streams))

    def consume(self, stream_id: int, nbytes: int) -> None:
        """Record that the application consumed ``nbytes`` of received data."""
        if nbytes <= 0:
            return
        quic = self._quic
        quic.consumed_by_stream[stream_id] = (
            quic.consumed_by_stream.get(stream_id, 0) + nbytes
        )
        quic.consumed_total += nbytes

    def release_stream(self, stream_id: int) -> None:
        """The application is done with a stream (freed, or rejected).

        For a stream the peer opened, the peer may open one more of its kind
        once this one is also finished on the wire (MAX_STREAMS goes out
        with a following packet), as OpenSSL does.
        """
        if bool(stream_id & 1) == self.is_client:  # peer-opened
            self._quic.app_released.add(stream_id)

    def forget_stream(self, stream_id: int) -> None:
        """Drop per-stream bookkeeping once the core discarded the stream."""
        self._quic.consumed_by_stream.pop(stream_id, None)

    def _credit_reset_stream(self, stream_id: int) -> None:
        # Bytes up to a reset stream's final size count against the
        # connection window but will never be read: credit them now.
        quic = self._quic
        stream = quic._streams.get(stream_id)
        if stream is None:
            return
        consumed = quic.consumed_by_stream.get(stream_id, 0)
        unread = stream.receiver.highest_offset - consumed
        if unread > 0:
            self.consume(stream_id, unread)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        with contextlib.suppress(ValueError):  # already discarded: nothing to stop
            self._quic.stop_stream(stream_id, error_code)

    # -- connection-wide --------------------------------------------------

    def close(self, error_code: int, reason: str, *, application: bool = True) -> None:
        """Begin closing: CONNECTION_CLOSE goes out with the next flush."""
        self._quic.close(
            error_code=error_code,
            frame_type=None if application else QuicFrameType.PADDING,
            reason_phrase=reason,
        )

    def request_key_update(self) -> None:
        self._quic.request_key_update()

    @property
    def version(self) -> int | None:
        """The QUIC version in use (after any version negotiation)."""
        version = self._quic._version
        return None if version is None else int(version)

    @property
    def cipher_suite(self) -> int | None:
        """The negotiated TLS cipher suite's IANA value, once known."""
        schedule = self._quic.tls.key_schedule
        suite = getattr(schedule, "cipher_suite", None)
        return None if suite is None else int(suite)

    def finish_qlog(self) -> None:
        """Write the qlog trace now if the connection was abandoned unclosed."""
        quic = self._quic
        trace = quic._quic_logger
        quic_logger = quic._configuration.quic_logger
        if trace is not None and quic_logger is not None:
            quic_logger.end_trace(trace)
            quic._quic_logger = None


class ServerGate:
    """Stateless server-side handling of datagrams for unknown connections.

    Answers unknown versions with Version Negotiation, performs Retry
    address validation (on by default), sends stateless resets for short
    header packets to unknown connection IDs, and otherwise tells the
    listener to create a connection.  Nothing here keeps per-client state.
    """

    #: Stateless resets sent per second at most (they are unauthenticated).
    RESET_RATE_LIMIT = 100

    def __init__(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> None:
        self._versions = [int(v) for v in settings.supported_versions]
        self._cid_length = settings.connection_id_length
        self._retry = QuicRetryTokenHandler() if validate_addresses else None
        self._reset_key = reset_key
        self._reset_window = 0.0
        self._resets_in_window = 0

    @property
    def validates_addresses(self) -> bool:
        return self._retry is not None

    def inspect(self, data: bytes, addr: Address, now: float) -> GateDecision:
        if len(data) >= 7 and data[0] & 0x80:
            version = int.from_bytes(data[1:5], "big")
            if version != 0 and version not in self._versions:
                # Only the version-independent header (RFC 8999) can be
                # read: the rest of the packet is in an unknown format.
                return self._negotiate_version(data)
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._cid_length
            )
        except ValueError:
            return GateDecision(GateAction.DROP, "unparseable header")
        if header.version is None:
            return self._reset_for(data, bytes(header.destination_cid), now)
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return GateDecision(GateAction.DROP, "version negotiation to a server")
        if header.packet_type != QuicPacketType.INITIAL:
            return GateDecision(
                GateAction.DROP, "not an Initial for an unknown connection"
            )
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return GateDecision(
                GateAction.DROP, "Initial in a datagram under 1200 bytes"
            )
        dcid = bytes(header.destination_cid)
        scid = bytes(header.source_cid)
        if self._retry is None:
            return GateDecision(
                GateAction.ACCEPT,
                "new connection",
                version=header.version,
                client_dcid=dcid,
                client_scid=scid,
                original_destination_cid=dcid,
            )
        if not header.token:
            retry_scid = os.urandom(self._cid_length)
            token = self._retry.create_token(
                address=addr,
                original_destination_connection_id=dcid,
                retry_source_connection_id=retry_scid,
                now=now,
            )
            reply = encode_quic_retry(
                version=header.version,
                source_cid=retry_scid,
                destination_cid=scid,
                original_destination_cid=dcid,
                retry_token=token,
            )
            return GateDecision(
                GateAction.REPLY, "retry", reply=reply, reply_kind=GateReply.RETRY
            )
        try:
            original_dcid = self._retry.validate_token(
                address=addr, destination_cid=dcid, token=header.token, now=now
            )
        except ValueError as exc:
            reply = initial_close(
                header.version, dcid, scid, QuicErrorCode.INVALID_TOKEN, str(exc)
            )
            return GateDecision(
                GateAction.REPLY,
                f"invalid token: {exc}",
                reply=reply,
                reply_kind=GateReply.INVALID_TOKEN,
            )
        return GateDecision(
            GateAction.ACCEPT,
            "new connection, address validated",
            version=header.version,
            client_dcid=dcid,
            client_scid=scid,
            original_destination_cid=original_dcid,
            retry_source_cid=dcid,
            address_validated=True,
        )

    def _negotiate_version(self, data: bytes) -> GateDecision:
        """Answer a long header of an unknown version (RFC 9000 section 6.1)."""
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            # A server may only answer datagrams at least as large as the
            # smallest Initial, so it cannot be used as an amplifier.
            return GateDecision(GateAction.DROP, "unknown version, short datagram")
        dcid_end = 6 + data[5]
        if dcid_end >= len(data):
            return GateDecision(GateAction.DROP, "unparseable long header")
        scid_end = dcid_end + 1 + data[dcid_end]
        if scid_end > len(data):
            return GateDecision(GateAction.DROP, "unparseable long header")
        reply = encode_quic_version_negotiation(
            source_cid=data[6:dcid_end],
            destination_cid=data[dcid_end + 1 : scid_end],
            supported_versions=self._versions,
        )
        return GateDecision(
            GateAction.REPLY,
            "version negotiation",
            reply=reply,
            reply_kind=GateReply.VERSION_NEGOTIATION,
        )

    def refuse(self, decision: GateDecision, reason: str) -> bytes:
        """An Initial CONNECTION_CLOSE(CONNECTION_REFUSED) for ``decision``."""
        return initial_close(
            decision.version,
            decision.client_dcid,
            decision.client_scid,
            QuicErrorCode.CONNECTION_REFUSED,
            reason,
        )

    def _reset_for(self, data: bytes, dcid: bytes, now: float) -> GateDecision:
        # The reset must be shorter than what triggered it, so two endpoints
        # can never reset each other forever (RFC 9000 section 10.3.3).
        size = min(len(data) - 1, 43)
        if size < _MIN_STATELESS_RESET_SIZE + 1:
            return GateDecision(GateAction.DROP, "short packet, too small to reset")
        if now - self._reset_window >= 1.0:
            self._reset_window = now
            self._resets_in_window = 0
        if self._resets_in_window >= self.RESET_RATE_LIMIT:
            return GateDecision(GateAction.DROP, "stateless reset rate limit")
        self._resets_in_window += 1
        unpredictable = bytearray(os.urandom(size - 16))
        unpredictable[0] = 0x40 | (unpredictable[0] & 0x3F)
        token = stateless_reset_token(self._reset_key, dcid)
        return GateDecision(
            GateAction.REPLY,
            "stateless reset",
            reply=bytes(unpredictable) + token,
            reply_kind=GateReply.STATELESS_RESET,
        )


def initial_close(
    version: int, client_dcid: bytes, client_scid: bytes, error_code: int, reason: str
) -> bytes:
    """A server Initial packet carrying only CONNECTION_CLOSE (transport).

    Protected with the Initial keys derived from the client's chosen
    destination connection ID, so the client can read it.
    """
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode("utf8")[:100]
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=1 + 8 + 8 + 8 + len(phrase)
    )
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return bytes(datagrams[0])


def encode_session_ticket(ticket: SessionTicket) -> bytes:
    """Serialise a TLS session ticket (no pickle: a file must not run code)."""
    fields = {
        "age_add": ticket.age_add,
        "cipher_suite": int(ticket.cipher_suite),
        "not_valid_after": ticket.not_valid_after.isoformat(),
        "not_valid_before": ticket.not_valid_before.isoformat(),
        "resumption_secret": ticket.resumption_secret.hex(),
        "server_name": ticket.server_name,
        "ticket": ticket.ticket.hex(),
        "max_early_data_size": ticket.max_early_data_size,
        "other_extensions": [[t, v.hex()] for t, v in ticket.other_extensions],
    }
    return json.dumps({"quicconn-session": 1, **fields}).encode()


def decode_session_ticket(data: bytes) -> SessionTicket:
    """The inverse of :func:`encode_session_ticket`; ValueError if malformed."""
    try:
        fields = json.loads(data)
        if fields.pop("quicconn-session") != 1:
            raise ValueError("unknown session format version")
        return SessionTicket(
            age_add=int(fields["age_add"]),
            cipher_suite=CipherSuite(int(fields["cipher_suite"])),
            not_valid_after=datetime.datetime.fromisoformat(fields["not_valid_after"]),
            not_valid_before=datetime.datetime.fromisoformat(
                fields["not_valid_before"]
            ),
            resumption_secret=bytes.fromhex(fields["resumption_secret"]),
            server_name=str(fields["server_name"]),
            ticket=bytes.fromhex(fields["ticket"]),
            max_early_data_size=fields["max_early_data_size"],
            other_extensions=[
                (int(t), bytes.fromhex(v)) for t, v in fields["other_extensions"]
            ],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a quicconn session: {exc}") from exc


def stream_data_event(stream_id: int, data: bytes, fin: bool) -> Any:
    """An aioquic StreamDataReceived event, for layers (aioquic.h3) that eat them."""
    return quic_events.StreamDataReceived(
        data=data, end_stream=fin, stream_id=stream_id
    )


def stream_reset_event(stream_id: int, error_code: int) -> Any:
    """An aioquic StreamReset event (see :func:`stream_data_event`)."""
    return quic_events.StreamReset(error_code=error_code, stream_id=stream_id)


def stop_sending_event(stream_id: int, error_code: int) -> Any:
    """An aioquic StopSendingReceived event (see :func:`stream_data_event`)."""
    return quic_events.StopSendingReceived(error_code=error_code, stream_id=stream_id)


def peek_destination_cid(data: bytes, host_cid_length: int) -> bytes | None:
    """The destination connection ID of a datagram's first packet, if parseable."""
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=host_cid_length)
    except ValueError:
        return None
    return bytes(header.destination_cid)


__all__ = [
    "CoreSink",
    "GateAction",
    "GateDecision",
    "QuicCore",
    "QuicErrorCode",
    "ServerGate",
    "SessionTicket",
    "decode_session_ticket",
    "encode_session_ticket",
    "is_verification_failure",
    "peek_destination_cid",
    "stop_sending_event",
    "stream_data_event",
    "stream_reset_event",
]
