"""``QuicConnection`` with quicconn's policies, and the only reader of its privates.

aioquic's ``QuicConnection`` does everything protocol-shaped (packets, TLS,
loss recovery, congestion control).  :class:`AdaptedQuicConnection`
overrides it where quicconn promises something else (docs/architecture.md,
"The core adapter's policies"), and answers, through plain methods, the
questions aioquic has no public API for.  Every private name of aioquic the
backend touches is in this module; :mod:`.core` and the rest use only public
ones, except :mod:`.mtu` (path MTU discovery, which aioquic lacks: its
base class), which lists its own.  The aioquic minor version is pinned in
``pyproject.toml`` because of them.

Private names of aioquic still reached: 45, and why each is needed.  (41
before the split; ``_configuration`` and ``_local_next_stream_id_bidi`` /
``_uni`` gave way to the public ``configuration`` and
``get_next_available_stream_id()``; the probe-backoff cap, the handshake
timeout, the handling of exceptions out of TLS and smaller TLS buffers added
five, QUIC-LB connection IDs and sealed session tickets one more.)  Besides
these, the HTTP/3 shim in :mod:`.h3` has to *provide* two that
``H3Connection`` reads,
``_quic_logger`` and ``_remote_max_datagram_frame_size``.

``QuicConnection`` attributes (25), and ``tls.Context._peer_certificate``
(the certificate whose purpose is checked):

* ``_ack_delay``: the 1-RTT ACK delay (policy: 2 ms, :data:`ACK_DELAY`).
* ``_close_event``, ``_state``: a close reported when it begins, local or
  remote (only a received CONNECTION_CLOSE leads to DRAINING); written by
  :meth:`~AdaptedQuicConnection.enter_draining` for a stateless reset.
* ``_spaces``: whether any packet was decrypted (a junk Initial must not
  take a server slot); the ACK state of the 1-RTT, Initial and Handshake
  spaces (immediate ACK of a packet with a gap; repeated handshake ACKs).
* ``_cryptos``, ``_crypto_streams``, ``_probe_pending``: whether a
  handshake packet about to be written carries CRYPTO or a probe, so that
  it repeats the ACK.
* ``_streams``: per-stream send credit and acknowledgement state, reset
  credit, and whether aioquic has discarded a stream (no public lookup).
* ``_local_max_data``, ``_local_max_streams_bidi``,
  ``_local_max_streams_uni``: credit granted as the application consumes,
  stream credit only for released streams, configurable initial limits.
* ``_remote_max_streams_bidi``, ``_remote_max_streams_uni``: how many
  streams the peer lets us open (SSL_VALUE_QUIC_STREAM_*_LOCAL_AVAIL).
* ``_remote_max_data``, ``_remote_max_data_used``: the peer's MAX_DATA and
  what counts against it, so that writes respect the connection's credit.
* ``_remote_max_idle_timeout``, ``_remote_max_datagram_frame_size``: the
  peer's transport parameters (the negotiated idle timeout; HTTP/3's
  SETTINGS_H3_DATAGRAM check).
* ``_version``: the version in use after negotiation (SSL_get_version's
  QUIC counterpart).
* ``_quic_logger``: the frames of the two rewritten limit writers go into
  the qlog trace; an abandoned connection's trace is ended.
* ``_host_cids``: derived stateless reset tokens for our connection IDs;
  the handshake's ID from a factory (QUIC-LB).
* ``_local_initial_source_connection_id``: that ID in the transport
  parameters as well.
* ``_peer_cid``, ``_peer_cid_available``, ``_peer_cid_sequence_numbers``:
  the reset tokens the server gave a client, and a cheap key for caching
  them.
* ``_retry_count``: whether a Retry was accepted (0-RTT data is queued
  again).
* ``_loss`` and its ``_pto_count``: the probe timeout stops doubling at
  quicconn's cap (:meth:`AdaptedQuicConnection.cap_probe_backoff`).
* ``_crypto_buffers``: TLS's output buffers, 16 KiB per epoch in aioquic;
  smaller where TLS writes little, and released when the handshake is over
  (half the memory of a half-open connection); the NewSessionTicket message
  the TLS layer just wrote, whose label a sealed ticket replaces.

Overridden private methods (10): ``_update_traffic_key`` (the server
certificate's purpose, checked before the client's Finished),
``_initialize`` (smaller TLS output buffers), ``_payload_received`` (a first
Initial without CRYPTO), ``_handle_crypto_frame`` (an exception out of TLS closes
the connection with an alert), ``_write_handshake`` (repeated ACKs),
``_receive_retry_packet`` (requeue after Retry), ``_replenish_connection_ids``
(derived reset tokens; no spare IDs when they are chosen),
``_serialize_transport_parameters`` (the base of stream credit),
``_write_stream_limits`` and ``_write_connection_limits`` (credit on
consume; rewritten, not extended).

Private methods called (4): ``_close_begin`` (draining on a stateless
reset), ``_close_end`` (an abandoned handshake ends at once, silently),
``_on_max_stream_data_delivery`` and ``_on_connection_limit_delivery``
(delivery handlers of the frames the rewritten writers send).

``QuicStreamSender`` internals (7): ``_buffer_start``, ``_buffer_stop``
and ``_buffer_fin`` (send credit, bytes not yet acknowledged, "everything
acknowledged"; aioquic exposes only ``is_finished`` and
``buffer_is_empty``), ``_pending``, ``_pending_eof`` and ``_acked_fin``
(stream data requeued after a Retry), ``_reset_error_code`` (a reset
stream's unsent bytes will never count against MAX_DATA).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable
from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic import events as quic_events
from aioquic.quic.connection import (
    QuicConnectionError,
    QuicConnectionState,
)
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.tls import Epoch, SessionTicket, State
from cryptography.hazmat.primitives.serialization import Encoding

from ..purpose import purpose_problem
from ..rules import tls_exception_close
from ..tickets import replace_ticket_label
from ..wire import stateless_reset_token
from .mtu import MtuDiscoveringConnection

#: TLS states in which the handshake is checking the peer's certificate.
_CHECKING_CERTIFICATE = frozenset(
    {
        State.CLIENT_EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE,
        State.CLIENT_EXPECT_CERTIFICATE,
        State.CLIENT_EXPECT_CERTIFICATE_VERIFY,
        State.SERVER_EXPECT_CERTIFICATE,
        State.SERVER_EXPECT_CERTIFICATE_VERIFY,
    }
)

logger = logging.getLogger("quicconn.core")

#: Frame capacities used when writing flow-control updates (type + 2 varints).
_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8
_CONNECTION_LIMIT_FRAME_CAPACITY = 1 + 8
#: TLS output buffer sizes (aioquic: 16 KiB for each of Initial, Handshake and
#: 1-RTT).  Only the Handshake flight can be large (a server's certificate
#: chain, or a client's under client authentication); a ClientHello, a
#: ServerHello and session tickets are a few hundred bytes.  Once the
#: handshake is over, TLS writes nothing more in the Initial and Handshake
#: epochs.
SMALL_CRYPTO_BUFFER = 4096
SPENT_CRYPTO_BUFFER = 64
#: How long 1-RTT acknowledgements may wait for more packets (aioquic: 1 ms;
#: Initial and Handshake packets are acknowledged at once either way).
ACK_DELAY = 0.002


class AdaptedQuicConnection(MtuDiscoveringConnection):
    """``QuicConnection`` with quicconn's policies where aioquic has its own.

    * Receive credit is granted as the application consumes: the window
      stays ``max_stream_data`` (per stream) and ``max_data`` (per
      connection) ahead of what was *read*, updated once half a window was
      consumed.
    * A server's stateless reset tokens are derived from a listener secret
      (aioquic draws random ones, which no one could reproduce later).
    * A server's connection ID can come from a factory (``cid_factory``:
      QUIC-LB IDs a load balancer or worker steering routes by); then no
      spare IDs are issued, as the QUIC-LB draft asks of plaintext IDs.
    * A server's NewSessionTicket can carry a label of the listener's
      choosing (``session_ticket_issuer``: a sealed, self-contained ticket).
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
    * Datagrams grow from 1200 bytes by path MTU discovery (:mod:`.mtu`).
    """

    def _update_traffic_key(
        self,
        direction: tls.Direction,
        epoch: tls.Epoch,
        cipher_suite: tls.CipherSuite,
        secret: bytes,
    ) -> None:
        # The server's Finished was verified and the client is about to
        # answer with its own: the last moment to refuse a certificate whose
        # purpose is not a TLS server's (aioquic checks the chain and the
        # name only; OpenSSL checks the purpose too).
        configuration = self.configuration
        if (
            configuration.is_client
            and configuration.verify_mode != ssl.CERT_NONE
            and direction == tls.Direction.DECRYPT
            and epoch == tls.Epoch.ONE_RTT
        ):
            certificate = self.tls._peer_certificate
            if certificate is not None:
                problem = purpose_problem(
                    certificate.public_bytes(Encoding.DER), "server"
                )
                if problem is not None:
                    raise tls.AlertUnsupportedCertificate(problem)
        super()._update_traffic_key(direction, epoch, cipher_suite, secret)

    def __init__(
        self,
        *,
        reset_key: bytes | None = None,
        cid_factory: Callable[[], bytes] | None = None,
        session_ticket_issuer: Callable[[SessionTicket], bytes | None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._reset_key = reset_key
        self._reset_tokens_key: tuple[Any, ...] | None = None
        self._reset_tokens: frozenset[bytes] = frozenset()
        self._cid_factory = cid_factory
        self._ticket_issuer = session_ticket_issuer
        if session_ticket_issuer is not None:
            kwargs["session_ticket_handler"] = self._issue_ticket
        super().__init__(**kwargs)
        if cid_factory is not None:
            chosen = cid_factory()
            self._host_cids[0].cid = chosen
            self.host_cid = chosen
            self._local_initial_source_connection_id = chosen
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

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        for epoch in (Epoch.INITIAL, Epoch.ONE_RTT):
            self._crypto_buffers[epoch] = Buffer(capacity=SMALL_CRYPTO_BUFFER)

    def release_handshake_buffers(self) -> None:
        """The handshake is over: TLS writes nothing more in the Initial
        and Handshake epochs, so their output buffers shrink (most of what
        an idle connection holds)."""
        for epoch in (Epoch.INITIAL, Epoch.HANDSHAKE):
            if epoch in self._crypto_buffers:
                self._crypto_buffers[epoch] = Buffer(capacity=SPENT_CRYPTO_BUFFER)

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
        if self._cid_factory is None:
            super()._replenish_connection_ids()
        self._derive_reset_tokens()

    def _issue_ticket(self, ticket: SessionTicket) -> None:
        """TLS issued ``ticket``: its label may be replaced before it is sent.

        The NewSessionTicket message is the one thing in the 1-RTT CRYPTO
        buffer when the TLS layer reports it (it is written first).
        """
        issuer = self._ticket_issuer
        assert issuer is not None
        label = issuer(ticket)
        if label is None:
            return
        buf = self._crypto_buffers[Epoch.ONE_RTT]
        try:
            message = replace_ticket_label(buf.data, label)
        except ValueError:
            logger.warning("session ticket sent unsealed: no NewSessionTicket found")
            return
        buf.seek(0)
        buf.push_bytes(message)

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

    def _handle_crypto_frame(self, context: Any, frame_type: int, buf: Any) -> None:
        """Handle CRYPTO, closing the connection if TLS raises.

        aioquic turns a TLS alert into CONNECTION_CLOSE, but any other
        exception out of its TLS code escapes the datagram, and the
        handshake then waits for the idle timeout: a server certificate
        whose DNS name is ``*`` makes the host name check raise inside its
        own error handler, for one.  Such an exception becomes a
        CONNECTION_CLOSE with a CRYPTO_ERROR naming it: bad_certificate
        while the peer's certificate was being checked, internal_error
        otherwise.
        """
        try:
            super()._handle_crypto_frame(context, frame_type, buf)
        except (QuicConnectionError, BufferReadError):
            raise
        except Exception as exc:
            code, reason = tls_exception_close(
                exc, checking_certificate=self.tls.state in _CHECKING_CERTIFICATE
            )
            raise QuicConnectionError(
                error_code=code, frame_type=frame_type, reason_phrase=reason
            ) from exc

    def cap_probe_backoff(self, max_interval: float | None) -> None:
        """Stop doubling the probe timeout once it reaches ``max_interval``.

        RFC 9002 doubles it after every probe left unanswered; under heavy
        loss that outgrows the idle timeout (see
        :data:`~quicconn._core.rules.PROBES_PER_TIMEOUT`).  Never below the
        un-backed-off probe timeout.  Called before each ``get_timer()``,
        which is where aioquic computes the loss-detection deadline.
        """
        loss = self._loss
        if max_interval is None or not loss._pto_count:
            return
        base = loss.get_probe_timeout(include_max_ack_delay=loss.handshake_confirmed)
        limit = max(base, max_interval)
        while loss._pto_count and base * (2**loss._pto_count) > limit:
            loss._pto_count -= 1

    def abandon(self, reason: str) -> None:
        """End the connection at once and send nothing (a handshake timeout,
        as an idle timeout ends a connection)."""
        if self._state is QuicConnectionState.TERMINATED:
            return
        if self._close_event is None:
            self._close_event = quic_events.ConnectionTerminated(
                error_code=QuicErrorCode.INTERNAL_ERROR,
                frame_type=QuicFrameType.PADDING,
                reason_phrase=reason,
            )
        self._close_end()

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
        window = self.configuration.max_stream_data
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
        # application released (:meth:`release_stream`) and that are
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
        window = self.configuration.max_data
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

    # -- what the core asks, answered from aioquic's private state ----------

    def negotiated_version(self) -> int | None:
        """The QUIC version in use (after any version negotiation)."""
        version = self._version
        return None if version is None else int(version)

    def peer_idle_timeout(self) -> float | None:
        """The idle timeout the peer asked for, once known (seconds)."""
        value = self._remote_max_idle_timeout
        return None if value is None else float(value)

    def peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter, if sent."""
        return self._remote_max_datagram_frame_size

    def any_packet_received(self) -> bool:
        """A packet from the peer was decrypted (or a close began)."""
        return self._close_event is not None or any(
            space.largest_received_packet >= 0 for space in self._spaces.values()
        )

    def close_started(self) -> quic_events.ConnectionTerminated | None:
        """The close that began, locally or by the peer; None before one.

        aioquic emits this event only when the closing or draining period
        ends; the core reports it as soon as it exists.
        """
        return self._close_event

    def closed_by_idle_timeout(self) -> bool:
        """The close is aioquic's idle timeout (handle_timer's own event:
        INTERNAL_ERROR in a PADDING frame, reason "Idle timeout")."""
        close = self._close_event
        return (
            close is not None
            and self._state is not QuicConnectionState.DRAINING
            and close.error_code == QuicErrorCode.INTERNAL_ERROR
            and close.frame_type == QuicFrameType.PADDING
            and close.reason_phrase == "Idle timeout"
        )

    def is_draining(self) -> bool:
        """Draining: only a received CONNECTION_CLOSE leads aioquic here."""
        return self._state is QuicConnectionState.DRAINING

    def is_terminated(self) -> bool:
        """The closing or draining period is over."""
        return self._state is QuicConnectionState.TERMINATED

    def local_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer lets us open now."""
        limit = (
            self._remote_max_streams_uni
            if unidirectional
            else self._remote_max_streams_bidi
        )
        next_id = self.get_next_available_stream_id(is_unidirectional=unidirectional)
        return max(0, limit - next_id // 4)

    def remote_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer may open now."""
        limit = (
            self._local_max_streams_uni
            if unidirectional
            else self._local_max_streams_bidi
        )
        return max(0, limit.value - limit.used)

    def stream_ids(self) -> list[int]:
        """The streams aioquic still keeps state for."""
        return list(self._streams)

    def has_stream(self, stream_id: int) -> bool:
        """False once aioquic finished with a stream and dropped its state."""
        return stream_id in self._streams

    def send_credit(self, stream_id: int) -> int:
        """Bytes the peer's MAX_STREAM_DATA still lets this stream append.

        OpenSSL accepts a write only up to the stream's flow-control credit
        (``xso_sstream_append``); this is that figure.  0 for a stream
        already discarded.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return max(0, int(stream.max_stream_data_remote - stream.sender._buffer_stop))

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream but not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def connection_send_credit(self) -> int:
        """Bytes the peer's MAX_DATA still lets all streams append: the limit
        minus what was sent (``_remote_max_data_used``) and what waits to
        be sent for the first time on streams not reset."""
        unsent = 0
        for stream in self._streams.values():
            sender = stream.sender
            if sender._reset_error_code is None:
                unsent += sender._buffer_stop - sender.highest_offset
        return max(0, int(self._remote_max_data - self._remote_max_data_used - unsent))

    def send_buffered_total(self) -> int:
        """Bytes written on all streams and not yet acknowledged."""
        return int(
            sum(
                stream.sender._buffer_stop - stream.sender._buffer_start
                for stream in self._streams.values()
            )
        )

    def send_fully_acked(self, stream_id: int) -> bool:
        """True when every byte (and the FIN, if any) written was acknowledged."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return True  # discarded: aioquic drops a stream once it is done
        return bool(stream.sender.is_finished) or (
            stream.sender._buffer_stop == stream.sender._buffer_start
            and stream.sender._buffer_fin is None
        )

    def consume(self, stream_id: int, nbytes: int) -> None:
        """Record that the application consumed ``nbytes`` of received data."""
        if nbytes <= 0:
            return
        self.consumed_by_stream[stream_id] = (
            self.consumed_by_stream.get(stream_id, 0) + nbytes
        )
        self.consumed_total += nbytes

    def credit_reset_stream(self, stream_id: int) -> None:
        """Credit the unread bytes of a stream the peer reset.

        Bytes up to a reset stream's final size count against the
        connection window but will never be read: they are credited now.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        consumed = self.consumed_by_stream.get(stream_id, 0)
        unread = stream.receiver.highest_offset - consumed
        if unread > 0:
            self.consume(stream_id, unread)

    def release_stream(self, stream_id: int) -> None:
        """The application is done with a stream (freed, or rejected).

        For a stream the peer opened, the peer may open one more of its kind
        once this one is also finished on the wire (MAX_STREAMS goes out
        with a following packet), as OpenSSL does.
        """
        if bool(stream_id & 1) == self.configuration.is_client:  # peer-opened
            self.app_released.add(stream_id)

    def forget_stream(self, stream_id: int) -> None:
        """Drop per-stream bookkeeping once aioquic discarded the stream."""
        self.consumed_by_stream.pop(stream_id, None)

    def finish_qlog(self) -> None:
        """Write the qlog trace now if the connection was abandoned unclosed."""
        trace = self._quic_logger
        quic_logger = self.configuration.quic_logger
        if trace is not None and quic_logger is not None:
            quic_logger.end_trace(trace)
            self._quic_logger = None


__all__ = [
    "ACK_DELAY",
    "SMALL_CRYPTO_BUFFER",
    "SPENT_CRYPTO_BUFFER",
    "AdaptedQuicConnection",
]
