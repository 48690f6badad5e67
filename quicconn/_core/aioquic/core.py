"""The aioquic :class:`~quicconn._core.interface.Core`: one connection's state.

:class:`AioquicCore` wraps an :class:`~.connection.AdaptedQuicConnection`
so that:

* the layers above see plain method calls and a
  :class:`~quicconn._core.interface.CoreSink` instead of aioquic's event
  classes;
* a close becomes visible the moment it begins (aioquic reports it only when
  the terminating period ends), with whether it was local or remote;
* receive credit is granted as the *application* consumes data, not as it
  arrives (the policy itself is in :mod:`.connection`);
* nothing the core raises reaches the reactor, and nothing it raises is
  ignored either: a core that raised ends its connection at once with an
  error naming the exception (:func:`~quicconn._core.rules.core_failure_close`),
  so a bug never turns into datagrams dropped until the idle timeout;
* an unfinished handshake is abandoned after ``settings.handshake_timeout``
  without a datagram from the peer, and the probe timeout stops doubling at
  :func:`~quicconn._core.rules.max_probe_interval` (see
  docs/architecture.md, "The core adapter's policies");
* under MODE_ASYNC, packet processing runs in an async job that may pause
  to sign (quicconn/_asyncjob/job.py), and the core is left alone meanwhile.

Only aioquic's public API is used here; what it does not offer is asked of
the adapted connection.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aioquic.quic import events as quic_events
from aioquic.quic.packet import QuicErrorCode, QuicFrameType
from aioquic.tls import SessionTicket

from ..._asyncjob.job import JobHost, Resumed
from ..._errors import ConnCloseInfo
from ..interface import Address, CoreSink
from ..rules import (
    core_failure_close,
    handshake_deadline,
    handshake_timeout_close,
    idle_timeout_close,
    keep_alive_interval,
    max_probe_interval,
    negotiated_idle_timeout,
)
from ..settings import CoreSettings
from ..wire import split_run, trailing_reset_token
from .config import build_configuration
from .connection import AdaptedQuicConnection

logger = logging.getLogger("quicconn.core")

#: Added to the time a due timer is handled at (see ``AioquicCore.handle_timer``).
TIMER_SLACK = 1e-6


def _varint_size(value: int) -> int:
    """Bytes of a QUIC variable-length integer (RFC 9000, section 16)."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    return 4 if value < 0x40000000 else 8


class AioquicCore:
    """One QUIC connection's protocol state, driven by the reactor.

    The reactor calls :meth:`receive_datagram`, :meth:`handle_timer` and
    :meth:`datagrams_to_send`; the objects layer calls the stream and close
    methods; :meth:`dispatch_events` reports progress to the sink.  Made by
    :class:`~.backend.AioquicBackend`.
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
        session_ticket_issuer: Callable[[SessionTicket], bytes | None] | None = None,
    ) -> None:
        self._is_client = settings.is_client
        self._sink = sink
        configuration = build_configuration(settings, server_name)
        if session_ticket is not None:
            configuration.session_ticket = session_ticket
        self._quic = AdaptedQuicConnection(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            reset_key=reset_key,
            session_ticket_fetcher=session_ticket_fetcher,
            session_ticket_handler=session_ticket_handler,
            session_ticket_issuer=session_ticket_issuer,
            cid_factory=None if settings.is_client else settings.server_cid_factory,
            pmtu_ceiling=settings.max_datagram_size,
        )
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
        #: MODE_ASYNC: runs packet processing in async jobs (see
        #: :meth:`attach_async_host`).  While it holds a paused job, nothing
        #: else may enter the aioquic connection.
        self._async_host: JobHost | None = None
        #: Keep-alive (settings.keep_alive): when the peer was last heard
        #: from, and when we last pinged; the PING is due a keep-alive
        #: interval after the later of the two.
        self._keep_alive = settings.keep_alive
        self._last_receipt = 0.0
        self._last_ping = 0.0
        self._pings = 0
        #: Until the handshake completes: when the peer was last heard from
        #: (or the client started); None before either.
        self._heard_at: float | None = None
        self._handshake_timeout = settings.handshake_timeout
        #: Why the connection ended, when quicconn ended it rather than
        #: aioquic (handshake timeout, the core raising).
        self._ended: ConnCloseInfo | None = None
        #: The core raised: it is closing, and takes no more datagrams.
        self._failed = False
        #: The core raised again while closing after a failure: it is left
        #: alone from now on (no timers, no output), and counts as terminated.
        self._broken = False

    # -- identity ---------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self._is_client

    @property
    def host_cid(self) -> bytes:
        return self._quic.host_cid

    def peer_address(self) -> Address | None:
        return self._quic.get_peer_address()

    # -- driving ----------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Start the client handshake towards ``addr``."""
        self._heard_at = now
        self._quic.connect(addr, now=now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram.  Never raises: bad input is logged and dropped."""
        host = self._async_host
        if host is not None and host.intercepts(self.handshake_complete):
            # MODE_ASYNC: inside a job (it may pause to sign), or queued
            # behind the paused one.
            host.run(lambda at: self._receive_now(data, addr, at), now)
            return
        self._receive_now(data, addr, now)

    def receive_datagrams(
        self, datagrams: list[bytes], addr: Address, now: float
    ) -> None:
        """Feed datagrams from ``addr`` in order (aioquic takes one at a
        time: no Capability.BATCHED_RECEIVE)."""
        for data in datagrams:
            self.receive_datagram(data, addr, now)

    def receive_coalesced(
        self, data: bytes, segment_size: int, addr: Address, now: float
    ) -> None:
        """Feed a GRO run datagram by datagram (aioquic takes one at a time)."""
        for datagram in split_run(data, segment_size):
            self.receive_datagram(datagram, addr, now)

    def _receive_now(self, data: bytes, addr: Address, now: float) -> None:
        if self._broken or self._failed:
            return  # a core that raised is only trusted to close
        self._last_receipt = now
        self._heard_at = now
        if self._is_client:
            token = trailing_reset_token(data)
            if token is not None and token in self._quic.peer_reset_tokens():
                # A short-header datagram ending in a token the server gave
                # us: the server lost our state (RFC 9000 section 10.3.1).
                self._quic.enter_draining("stateless reset received", now)
                return
        try:
            self._quic.receive_datagram(data, addr, now=now)
        except Exception as exc:
            self._fail(exc, "processing a datagram")

    def _fail(self, exc: Exception, doing: str) -> None:
        """The core raised: end the connection, naming the exception.

        CONNECTION_CLOSE(INTERNAL_ERROR) goes out if the core can still
        send it; if it raises again on the way, it is abandoned at once.
        """
        if self._failed:
            logger.error("the QUIC core failed again %s: %r", doing, exc)
            self._broken = True
            return
        logger.error("the QUIC core failed %s; closing", doing, exc_info=exc)
        self._failed = True
        self._ended = core_failure_close(exc, doing)
        try:
            self._quic.close(
                error_code=QuicErrorCode.INTERNAL_ERROR,
                frame_type=QuicFrameType.PADDING,
                reason_phrase=self._ended.reason,
            )
        except Exception:
            self._broken = True

    def received_a_packet(self) -> bool:
        """True once a packet from the peer was decrypted (or a close began).

        A server's first datagram can look like an Initial and still be
        junk: only a packet that decrypts proves a real client.  A job
        paused to sign counts too: signing follows a decrypted ClientHello,
        but aioquic records the packet only once its processing finished.
        """
        return self.async_held or self._quic.any_packet_received()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.async_held or self._broken:
            return []
        try:
            return self._quic.datagrams_to_send(now=now)
        except Exception as exc:
            self._fail(exc, "building a datagram")
        if self._broken:
            return []
        try:  # the CONNECTION_CLOSE, if the core can still build it
            return self._quic.datagrams_to_send(now=now)
        except Exception as exc:
            self._fail(exc, "building a datagram")
            return []

    def get_timer(self) -> float | None:
        if self.async_held or self._broken:
            return None  # re-armed when the job resumes
        quic = self._quic
        quic.cap_probe_backoff(
            max_probe_interval(
                self.negotiated_idle_timeout(),
                self._handshake_timeout,
                self.handshake_complete,
            )
        )
        timer = quic.get_timer()
        for deadline in (self._keep_alive_at(), self._handshake_deadline()):
            if deadline is not None and (timer is None or deadline < timer):
                timer = deadline
        return timer

    def _handshake_deadline(self) -> float | None:
        if self._heard_at is None or self.is_closing:
            return None
        return handshake_deadline(
            self._heard_at, self._handshake_timeout, self.handshake_complete
        )

    def _keep_alive_at(self) -> float | None:
        """When a keep-alive PING is due, or None (OpenSSL's ping deadline)."""
        if not self._keep_alive or not self.handshake_complete or self.is_closing:
            return None
        interval = keep_alive_interval(self.negotiated_idle_timeout())
        if interval is None:
            return None
        return max(self._last_receipt, self._last_ping) + interval

    def handle_timer(self, now: float) -> None:
        if self.async_held or self._broken:
            return
        abandon_at = self._handshake_deadline()
        if abandon_at is not None and abandon_at <= now:
            # Nothing sent: a half-open connection's peer may not exist.
            self._ended = handshake_timeout_close(self._handshake_timeout)
            self._quic.abandon(self._ended.reason)
            return
        ping_at = self._keep_alive_at()
        if ping_at is not None and ping_at <= now:
            self._pings += 1
            self._quic.send_ping(self._pings)
            self._last_ping = now
        # aioquic declares a packet lost by time when ``sent + delay <= now``
        # but computes it as ``sent <= now - delay``; at exactly the deadline
        # float rounding can say no and re-arm the same deadline, forever on
        # a clock that advances to deadlines exactly (FakeClock).  A timer
        # fires a microsecond late instead.
        try:
            self._quic.handle_timer(now=now + TIMER_SLACK)
        except Exception as exc:
            self._fail(exc, "handling its timer")

    # -- MODE_ASYNC --------------------------------------------------------

    def attach_async_host(self, host: JobHost) -> None:
        """Run packet processing in async jobs from ``host`` (MODE_ASYNC)."""
        self._async_host = host

    @property
    def async_held(self) -> bool:
        """True while MODE_ASYNC work is outstanding: a job paused inside
        this core, or datagrams waiting for a free job.  The core is then
        left alone: no timers, no output, no events."""
        host = self._async_host
        return host is not None and host.busy

    def resume_async(self, now: float) -> bool:
        """Resume a paused job whose engine finished, then queued datagrams.

        False if only another thread can resume it (the one it runs in).
        """
        host = self._async_host
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
                quic.credit_reset_stream(event.stream_id)
                sink.on_stream_reset(event.stream_id, event.error_code)
            elif isinstance(event, quic_events.StopSendingReceived):
                sink.on_stop_sending(event.stream_id, event.error_code)
            elif isinstance(event, quic_events.DatagramFrameReceived):
                sink.on_datagram_frame(event.data)
            elif isinstance(event, quic_events.HandshakeCompleted):
                quic.release_handshake_buffers()
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
        if not self._closing_reported and self.is_closing:
            self._closing_reported = True
            close = quic.close_started()
            if self._ended is not None:
                # quicconn ended it (handshake timeout, the core raising).
                self.close_info = self._ended
            elif close is None or quic.closed_by_idle_timeout():
                self.close_info = idle_timeout_close()
            else:
                self.close_info = ConnCloseInfo(
                    error_code=close.error_code,
                    frame_type=close.frame_type,
                    reason=close.reason_phrase,
                    is_local=not quic.is_draining(),
                    is_transport=close.frame_type is not None,
                )
            self._sink.on_closing(self.close_info)
        if not self._terminated_reported and self.is_terminated:
            self._terminated_reported = True
            self._sink.on_terminated()

    # -- state ------------------------------------------------------------

    @property
    def is_closing(self) -> bool:
        """True once a close has begun, locally or by the peer."""
        return self._broken or self._quic.close_started() is not None

    @property
    def is_terminated(self) -> bool:
        """True once the terminating (closing/draining) period is over."""
        return self._broken or self._quic.is_terminated()

    @property
    def version(self) -> int | None:
        """The QUIC version in use (after any version negotiation)."""
        return self._quic.negotiated_version()

    @property
    def cipher_suite(self) -> int | None:
        """The negotiated TLS cipher suite's IANA value, once known."""
        schedule = self._quic.tls.key_schedule
        suite = getattr(schedule, "cipher_suite", None)
        return None if suite is None else int(suite)

    def idle_timeout(self) -> float:
        """The idle timeout this endpoint asked for, in seconds."""
        return float(self._quic.configuration.idle_timeout)

    def peer_idle_timeout(self) -> float | None:
        """The idle timeout the peer asked for, once known (seconds)."""
        return self._quic.peer_idle_timeout()

    def peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter, if sent."""
        return self._quic.peer_max_datagram_frame_size()

    def max_datagram_payload(self) -> int:
        """The largest DATAGRAM payload that fits the peer's limit and one
        1-RTT packet (aioquic would hold a larger one at the head of its
        queue forever, so the channel refuses it instead)."""
        quic = self._quic
        peer = quic.peer_max_datagram_frame_size()
        if peer is None or not self.handshake_complete:
            return 0
        # The frame: type (1 byte) and a length varint, then the payload.
        frame_limit = peer - 1 - _varint_size(peer)
        # One short-header packet: flags, the longest connection ID (20),
        # the longest packet number (4), the AEAD tag (16); then the frame's
        # type and a 2-byte length.
        # The packet size is what path MTU discovery validated: a fallback
        # drops queued frames that no longer fit (.mtu).
        packet_limit = quic.path_mtu() - (1 + 20 + 4 + 16) - 3
        return max(0, min(frame_limit, packet_limit))

    def path_mtu(self) -> int:
        """The datagram size packets are built to now (path MTU discovery)."""
        return self._quic.path_mtu()

    def send_datagram_frame(self, data: bytes) -> None:
        """Queue a DATAGRAM frame; aioquic sends it once, never again."""
        self._quic.send_datagram_frame(data)

    def negotiated_idle_timeout(self) -> float | None:
        """The effective idle timeout: the smaller non-zero of both requests."""
        return negotiated_idle_timeout(self.idle_timeout(), self.peer_idle_timeout())

    # -- streams ----------------------------------------------------------

    def local_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer lets us open now."""
        return self._quic.local_streams_available(unidirectional)

    def remote_streams_available(self, unidirectional: bool) -> int:
        """How many more streams of this kind the peer may open now."""
        return self._quic.remote_streams_available(unidirectional)

    def open_stream(self, unidirectional: bool) -> int:
        """Allocate the next local stream ID (the caller checked the limit)."""
        quic = self._quic
        stream_id = quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        quic.send_stream_data(stream_id, b"", end_stream=False)
        return stream_id

    def send_credit(self, stream_id: int) -> int:
        """Bytes the peer's MAX_STREAM_DATA still lets this stream append."""
        return self._quic.send_credit(stream_id)

    def stream_discarded(self, stream_id: int) -> bool:
        """True once the core finished with a stream and dropped its state."""
        return not self._quic.has_stream(stream_id)

    def send_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=fin)

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream but not yet acknowledged by the peer."""
        return self._quic.send_buffered(stream_id)

    def connection_send_credit(self) -> int:
        return self._quic.connection_send_credit()

    def send_buffered_total(self) -> int:
        return self._quic.send_buffered_total()

    def send_fully_acked(self, stream_id: int) -> bool:
        """True when every byte (and the FIN, if any) written was acknowledged."""
        return self._quic.send_fully_acked(stream_id)

    def all_sends_acked(self) -> bool:
        quic = self._quic
        return all(quic.send_fully_acked(sid) for sid in quic.stream_ids())

    def consume(self, stream_id: int, nbytes: int) -> None:
        """Record that the application consumed ``nbytes`` of received data."""
        self._quic.consume(stream_id, nbytes)

    def release_stream(self, stream_id: int) -> None:
        """The application is done with a stream (freed, or rejected)."""
        self._quic.release_stream(stream_id)

    def forget_stream(self, stream_id: int) -> None:
        """Drop per-stream bookkeeping once the core discarded the stream."""
        self._quic.forget_stream(stream_id)

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

    def finish_qlog(self) -> None:
        """Write the qlog trace now if the connection was abandoned unclosed."""
        self._quic.finish_qlog()


__all__ = ["TIMER_SLACK", "AioquicCore"]
