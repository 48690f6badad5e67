"""``Channel``: one QUIC connection's protocol object (OpenSSL's QUIC_CHANNEL).

A channel owns what a connection *is*, apart from how the application calls
it: the core, the handshake and close state (an enum with a transition
table), the close record, the streams with their policies, the
all-acknowledged shutdown, early data and the MODE_ASYNC job host.  It is
the core's :class:`~quicconn._core.interface.CoreSink`: during a reactor
tick the core reports handshake progress, stream data, resets and closes,
and the channel files them.

Its operations are *attempts*: each either completes, returns None when it
cannot complete yet, or raises :class:`~.conditions.QuicFailure` when it
never will.  The objects layer wraps them in OpenSSL's call discipline
(tick and retry, ``Want*`` or a blocking wait; ``quicconn/_objects/call.py``)
and translates conditions into exceptions.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .._asyncjob.engine import AsyncEngine
from .._asyncjob.job import HostState, JobHost
from .._constants import (
    DEFAULT_STREAM_MODE_NONE,
    INCOMING_STREAM_POLICY_REJECT,
    POLL_EVENT_DGRAM,
    POLL_EVENT_EC,
    POLL_EVENT_ECD,
    POLL_EVENT_IS,
    POLL_EVENT_ISB,
    POLL_EVENT_ISU,
    POLL_EVENT_OS,
    POLL_EVENT_OSB,
    POLL_EVENT_OSU,
    POLL_EVENT_W,
    QUIC_ERR_CONNECTION_REFUSED,
    QUIC_LOCAL_ERR_IDLE_TIMEOUT,
    SHUTDOWN_FLAG_NO_STREAM_FLUSH,
    SHUTDOWN_FLAG_RAPID,
    SHUTDOWN_FLAG_WAIT_PEER,
)
from .._core.interface import Address, Capability, Core, CoreBackend, GateDecision
from .._core.rules import is_handshake_timeout, is_verification_failure
from .._core.settings import CoreSettings
from .._errors import ConnCloseInfo
from .conditions import Condition, QuicFailure
from .reactor import Reactor
from .stream_state import (
    RecvEvent,
    SendEvent,
    SendState,
    StreamStateError,
    poll_events,
)
from .streams import Disposition, StreamMap, StreamRecord

#: RFC 9000, section 20.1: a frame received in a state that does not allow it.
_STREAM_STATE_ERROR = 0x5
#: Received datagrams kept for the application; the oldest go first.
DATAGRAM_QUEUE_LIMIT = 1024


class ConnState(enum.Enum):
    """Lifecycle of a connection."""

    IDLE = "idle"  #: created, handshake not started
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSING = "closing"  #: a close began; the terminating period runs
    TERMINATED = "terminated"  #: fully closed; nothing more will be sent


class ConnEvent(enum.Enum):
    START = "handshake started"
    HANDSHAKE_DONE = "handshake completed"
    CLOSE_BEGAN = "close began"
    TERMINATED = "terminating period over"


_CONN_TRANSITIONS: dict[tuple[ConnState, ConnEvent], ConnState] = {
    (ConnState.IDLE, ConnEvent.START): ConnState.HANDSHAKING,
    (ConnState.HANDSHAKING, ConnEvent.HANDSHAKE_DONE): ConnState.ESTABLISHED,
    (ConnState.HANDSHAKING, ConnEvent.CLOSE_BEGAN): ConnState.CLOSING,
    (ConnState.ESTABLISHED, ConnEvent.CLOSE_BEGAN): ConnState.CLOSING,
    # A handshake that completes in the batch that also began a close.
    (ConnState.CLOSING, ConnEvent.HANDSHAKE_DONE): ConnState.CLOSING,
    (ConnState.HANDSHAKING, ConnEvent.TERMINATED): ConnState.TERMINATED,
    (ConnState.ESTABLISHED, ConnEvent.TERMINATED): ConnState.TERMINATED,
    (ConnState.CLOSING, ConnEvent.TERMINATED): ConnState.TERMINATED,
}


class EarlyData(enum.Enum):
    """A client's 0-RTT: off, allowed by the application, or used."""

    OFF = "off"
    ENABLED = "enabled"
    SENT = "sent"


class ChannelObserver(Protocol):
    """The listener's port, told about the channels it made."""

    def on_channel_established(self, channel: Channel) -> None:
        """The channel's handshake completed."""

    def on_channel_terminated(self, channel: Channel) -> None:
        """The channel's terminating period ended."""

    def on_channel_released(self, channel: Channel) -> None:
        """The application freed the channel's connection."""


@dataclass
class ChannelConfig:
    """What a channel is made from: its context's settings, copied."""

    backend: CoreBackend
    settings: CoreSettings
    #: Bytes a stream may hold written but unacknowledged.
    write_buffer_size: int
    #: Bytes all streams together may hold written but unacknowledged.
    connection_write_buffer_size: int = 4 * 1024 * 1024


class Channel:
    """One QUIC connection's protocol state; see the module docstring."""

    def __init__(self, config: ChannelConfig, *, is_client: bool) -> None:
        self.backend = config.backend
        self.settings = config.settings
        self.write_buffer_size = config.write_buffer_size
        self.connection_write_buffer_size = config.connection_write_buffer_size
        self.is_client = is_client
        self.reactor: Reactor | None = None
        self.core: Core | None = None
        self.state = ConnState.IDLE
        self.close_info: ConnCloseInfo | None = None
        self.streams = StreamMap(is_client)
        self.peer_addr: Address | None = None
        #: shutdown() began: send-side calls are refused, as in OpenSSL.
        self.shutdown_requested = False
        self.early_data = EarlyData.OFF
        #: MODE_ASYNC: the engine private-key operations go to, or None.
        self.async_engine: AsyncEngine | None = None
        self.async_host: JobHost | None = None
        #: Runs the application's async callback (set by the connection).
        self.on_async_ready: Callable[[], None] | None = None
        self.observer: ChannelObserver | None = None
        #: Depth of :meth:`batched_output` blocks: writes wait for the end.
        self._output_batching = 0
        #: Received DATAGRAM payloads not yet taken (RFC 9221), oldest first;
        #: bounded: when full, the oldest is dropped (they are unreliable).
        self.datagrams: deque[bytes] = deque()
        self.datagrams_dropped = 0

    # ==================================================================
    # lifecycle
    # ==================================================================

    def _advance(self, event: ConnEvent) -> None:
        # A pair the table lacks is a report that moves nothing (a core
        # reports each fact once, so only a late or repeated report lands
        # there); the state never moves backwards.
        self.state = _CONN_TRANSITIONS.get((self.state, event), self.state)

    @property
    def started(self) -> bool:
        return self.core is not None

    def require_core(self) -> Core:
        if self.core is None:
            raise ValueError("the handshake has not started: call connect() first")
        return self.core

    def require_reactor(self) -> Reactor:
        if self.reactor is None:
            raise ValueError("no transport: call set_fd() or set_transport() first")
        return self.reactor

    def start_client(
        self,
        *,
        server_name: str | None,
        session_ticket: Any | None,
        on_session_ticket: Callable[[Any], None],
    ) -> None:
        """Create the client core and send the first flight."""
        reactor = self.require_reactor()
        if self.peer_addr is None:
            raise ValueError(
                "no peer address: connect the socket, or call set1_initial_peer_addr()"
            )
        core = self.backend.new_client(
            self.settings,
            self,
            server_name=server_name,
            session_ticket=session_ticket,
            on_session_ticket=on_session_ticket,
        )
        self._adopt(core)
        reactor.add_core(core, core.host_cid, batched=self.receives_batches)
        core.connect(self.peer_addr, reactor.clock.now())
        reactor.mark_dirty(core)
        reactor.flush()

    def start_server(
        self,
        reactor: Reactor,
        decision: GateDecision,
        *,
        reset_key: bytes,
        fetch_ticket: Callable[[bytes], Any],
        store_ticket: Callable[[Any], bytes | None],
    ) -> None:
        """Create the server core for an Initial the gate accepted.

        The core is not yet routed: :meth:`receive_first` feeds it the
        Initial, and the port routes it if that proved a real client.
        """
        self.reactor = reactor
        core = self.backend.new_server(
            self.settings,
            self,
            decision,
            reset_key=reset_key,
            fetch_ticket=fetch_ticket,
            store_ticket=store_ticket,
        )
        self._adopt(core)

    def _adopt(self, core: Core) -> None:
        self.core = core
        self._advance(ConnEvent.START)
        async_engine = self.async_engine
        if async_engine is None or self.settings.private_key is None:
            return  # no engine, or no key to offload: signing stays synchronous
        reactor = self.require_reactor()
        host = JobHost(
            async_engine,
            notify_ready=lambda: reactor.post_async_ready(core),
            wake_app=self._wake_app,
            inline=reactor.async_inline,
        )
        core.attach_async_host(host)
        self.async_host = host

    def _wake_app(self) -> None:
        callback = self.on_async_ready
        if callback is not None:
            callback()

    @property
    def receives_batches(self) -> bool:
        """Whether the core processes runs of datagrams natively."""
        return Capability.BATCHED_RECEIVE in self.backend.capabilities

    def receive_first(self, data: bytes, addr: Address, now: float) -> bool:
        """Feed a server channel its first datagram; False if it was junk."""
        core = self.require_core()
        self.peer_addr = addr
        core.receive_datagram(data, addr, now)
        return core.received_a_packet()

    def refuse(self, reason: str) -> None:
        """Close a server connection with CONNECTION_REFUSED (RFC 9000,
        section 20.1): the server cannot take it after all."""
        core = self.require_core()
        core.close(QUIC_ERR_CONNECTION_REFUSED, reason, application=False)
        self.require_reactor().mark_dirty(core)

    def handshake_timed_out(self) -> bool:
        """Whether the handshake timeout ended this connection."""
        info = self.close_info
        return info is not None and is_handshake_timeout(info)

    def release(self) -> None:
        """The connection is freed (SSL_free): stop driving the core."""
        if self.async_host is not None:
            self.async_host.close()
        core = self.core
        if core is not None:
            core.finish_qlog()
            if self.reactor is not None:
                if core.is_closing and not core.is_terminated:
                    self.reactor.linger(core)  # its closing period runs on
                else:
                    self.reactor.remove_core(core)
        self.reactor = None
        observer = self.observer
        self.observer = None
        if observer is not None:
            observer.on_channel_released(self)

    # ==================================================================
    # the core sink (called by the reactor during a tick, lock held)
    # ==================================================================

    def on_handshake_complete(
        self, alpn: str | None, session_resumed: bool, early_data_accepted: bool
    ) -> None:
        self._advance(ConnEvent.HANDSHAKE_DONE)
        if self.observer is not None:
            self.observer.on_channel_established(self)

    def on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        record = self.streams.records.get(stream_id)
        if record is None:
            record = self._incoming_stream(stream_id)
        if (
            record.disposition is Disposition.REJECTED
            or record.stop_sent_code is not None
        ):
            self.consume(stream_id, len(data))  # dropped, but credited
            return
        try:
            record.push(data, fin)
        except StreamStateError as exc:
            self._stream_state_error(exc)

    def on_stream_reset(self, stream_id: int, error_code: int) -> None:
        record = self.streams.get(stream_id) or self._incoming_stream(stream_id)
        record.reset_received_code = error_code
        record.discard()  # the core already credited unread bytes
        try:
            record.recv_event(RecvEvent.RESET)
        except StreamStateError as exc:
            self._stream_state_error(exc)

    def on_stop_sending(self, stream_id: int, error_code: int) -> None:
        record = self.streams.get(stream_id) or self._incoming_stream(stream_id)
        record.stop_received_code = error_code
        # RFC 9000, section 3.5: the core answers with RESET_STREAM carrying
        # the peer's code, so the send part is reset locally (OpenSSL reports
        # RESET_LOCAL with that code).
        if record.reset_sent_code is None and record.send_state in (
            SendState.READY,
            SendState.SEND,
            SendState.DATA_SENT,
        ):
            record.reset_sent_code = error_code
            record.send_event(SendEvent.RESET)

    def on_connection_id_issued(self, cid: bytes) -> None:
        if self.reactor is not None and self.core is not None:
            self.reactor.add_cid(self.core, cid)

    def on_connection_id_retired(self, cid: bytes) -> None:
        if self.reactor is not None:
            self.reactor.remove_cid(cid)

    def on_closing(self, info: ConnCloseInfo) -> None:
        self.close_info = info
        self._advance(ConnEvent.CLOSE_BEGAN)

    def on_datagram_frame(self, data: bytes) -> None:
        if len(self.datagrams) >= DATAGRAM_QUEUE_LIMIT:
            self.datagrams.popleft()
            self.datagrams_dropped += 1
        self.datagrams.append(data)

    def on_terminated(self) -> None:
        self._advance(ConnEvent.TERMINATED)
        if self.observer is not None:
            self.observer.on_channel_terminated(self)

    def _stream_state_error(self, exc: StreamStateError) -> None:
        """A peer's stream event that the state table forbids: close."""
        self.require_core().close(_STREAM_STATE_ERROR, str(exc), application=False)

    def _incoming_stream(self, stream_id: int) -> StreamRecord:
        """Record a peer-opened stream and apply the incoming stream policy."""
        streams = self.streams
        record = streams.add(stream_id)
        if streams.effective_incoming_policy() != INCOMING_STREAM_POLICY_REJECT:
            streams.accept_queue.append(record)
            return record
        code = streams.incoming_error_code
        core = self.require_core()
        streams.mark_released(record, Disposition.REJECTED)
        core.release_stream(stream_id)
        if record.can_read:
            record.stop_sent_code = code
        core.stop_sending(stream_id, code)
        if record.can_write:
            core.reset_stream(stream_id, code)
            record.reset_sent_code = code
            record.send_event(SendEvent.RESET)
        return record

    # ==================================================================
    # failures
    # ==================================================================

    def socket_error(self) -> OSError | None:
        reactor = self.reactor
        return None if reactor is None else reactor.transport.fatal_error

    @property
    def terminating(self) -> bool:
        """Closing or closed, or the socket failed (OpenSSL's term_any)."""
        return self.close_info is not None or self.socket_error() is not None

    @property
    def terminated(self) -> bool:
        """Fully closed, or the socket failed: nothing will ever happen."""
        return self.state is ConnState.TERMINATED or self.socket_error() is not None

    def raise_if_failed(self) -> None:
        """Raise the failure that ended this connection, if any."""
        err = self.socket_error()
        if err is not None:
            raise QuicFailure(
                Condition.SOCKET_FAILED,
                f"the UDP socket failed: {err}",
                errno=err.errno,
            )
        info = self.close_info
        if info is None:
            return
        core = self.core
        if core is not None and not core.handshake_complete:
            raise self._handshake_failure(info)
        raise QuicFailure(
            Condition.CONNECTION_CLOSED, f"connection {info}", close_info=info
        )

    def _handshake_failure(self, info: ConnCloseInfo) -> QuicFailure:
        host = self.async_host
        if host is not None and host.failure is not None and info.is_local:
            return QuicFailure(
                Condition.CONNECTION_CLOSED,
                f"handshake failed: {host.failure}",
                close_info=info,
            )
        if is_verification_failure(info):
            hint = ""
            if not self.settings.has_trust_anchors():
                hint = (
                    " (no CA certificates are loaded: call "
                    "ctx.load_default_verify_paths() or ctx.load_verify_locations())"
                )
            return QuicFailure(
                Condition.VERIFICATION_FAILED,
                f"certificate verification failed: {info.reason}{hint}",
            )
        if is_handshake_timeout(info):
            return QuicFailure(
                Condition.CONNECTION_CLOSED,
                f"handshake timed out: nothing from {self.describe_peer()} for "
                f"the {self.settings.handshake_timeout:g} s handshake timeout",
                close_info=info,
            )
        if info.is_local and info.error_code == QUIC_LOCAL_ERR_IDLE_TIMEOUT:
            return QuicFailure(
                Condition.CONNECTION_CLOSED,
                f"handshake timed out: no answer from {self.describe_peer()} within "
                f"the {self.settings.idle_timeout:g} s idle timeout",
                close_info=info,
            )
        return QuicFailure(
            Condition.CONNECTION_CLOSED, f"handshake failed: {info}", close_info=info
        )

    def describe_peer(self) -> str:
        addr = self.peer_addr
        if addr is None and self.core is not None:
            addr = self.core.peer_address()
        return f"{addr[0]}:{addr[1]}" if addr else "the peer"

    def async_condition(self) -> Condition | None:
        """ASYNC_PENDING / ASYNC_NO_JOB while a job holds the call up."""
        host = self.async_host
        if host is None:
            return None
        if host.state is HostState.NO_JOB:
            return Condition.ASYNC_NO_JOB
        if host.waiting:
            return Condition.ASYNC_PENDING
        return None

    def check_mutation_allowed(self) -> None:
        """OpenSSL refuses send-side calls once closing or shutting down."""
        if self.terminating:
            self.raise_if_failed()
        if self.shutdown_requested:
            raise QuicFailure(
                Condition.CONNECTION_CLOSED,
                "the connection is shutting down (shutdown() was called)",
                close_info=self.close_info,
            )

    # ==================================================================
    # handshake and early data
    # ==================================================================

    def handshake_done(self) -> bool | None:
        """True once the handshake completed; None until then (an attempt)."""
        core = self.require_core()
        if core.handshake_complete and self.close_info is None:
            return True
        self.raise_if_failed()
        return None

    def early_data_possible(self) -> bool:
        core = self.core
        return (
            self.early_data is not EarlyData.OFF
            and core is not None
            and core.early_data_attempted
            and not core.handshake_complete
        )

    # ==================================================================
    # reading
    # ==================================================================

    def readable(self, record: StreamRecord) -> bool:
        """True if data is buffered; raise if none will ever come; else False.

        The order is OpenSSL's: buffered data first (even on a closed
        connection), then a reset, then the FIN, then a closed connection.
        """
        if not record.can_read:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} is send-only; it cannot be read",
            )
        if record.buffered:
            return True
        if record.reset_received_code is not None:
            record.recv_event(RecvEvent.APP_READ_RESET)
            raise QuicFailure(
                Condition.STREAM_RESET_BY_PEER,
                f"stream {record.stream_id} was reset by the peer "
                f"(error code {record.reset_received_code})",
                error_code=record.reset_received_code,
            )
        if record.fin_received:
            record.recv_event(RecvEvent.APP_READ_ALL)
            raise QuicFailure(
                Condition.STREAM_FINISHED,
                f"stream {record.stream_id}: the peer concluded it",
            )
        if record.stop_sent_code is not None:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id}: reading was stopped locally",
            )
        self.raise_if_failed()
        return False

    def take(self, record: StreamRecord, limit: int) -> bytes:
        data = record.take(limit)
        self.consume(record.stream_id, len(data))
        return data

    def take_into(self, record: StreamRecord, buffer: memoryview) -> int:
        count = record.take_into(buffer)
        self.consume(record.stream_id, count)
        return count

    def consume(self, stream_id: int, count: int) -> None:
        """The application consumed ``count`` bytes: credit flows back."""
        core = self.core
        if core is not None and count:
            core.consume(stream_id, count)
            if self.reactor is not None:
                self.reactor.mark_dirty(core)

    # ==================================================================
    # writing
    # ==================================================================

    def check_writable(self, record: StreamRecord) -> None:
        if not record.can_write:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} is receive-only; it cannot be written",
            )
        self.check_mutation_allowed()
        if record.stop_received_code is not None:
            raise QuicFailure(
                Condition.STREAM_STOPPED_BY_PEER,
                f"stream {record.stream_id}: the peer asked to stop sending "
                f"(STOP_SENDING, error code {record.stop_received_code})",
                error_code=record.stop_received_code,
            )
        if record.reset_sent_code is not None:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} was reset locally "
                f"(error code {record.reset_sent_code})",
            )
        if record.concluded:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} was already concluded",
            )

    def write_space(self, record: StreamRecord) -> int:
        """Bytes a write could append now: the peer's credit for the stream
        (MAX_STREAM_DATA) and for the connection (MAX_DATA, shared by every
        stream), capped by room in the stream's send buffer and in the
        connection's (what all its streams hold unacknowledged).

        OpenSSL looks at the stream's credit and buffer only; with the
        connection's too, a peer that opens many streams and grants no
        connection credit cannot make this side buffer a stream buffer's
        worth per stream (docs/api-mapping.md).
        """
        core = self.core
        if core is None:
            return 0
        sid = record.stream_id
        space = min(
            core.send_credit(sid),
            self.write_buffer_size - core.send_buffered(sid),
        )
        if space <= 0:
            return 0
        return max(
            0,
            min(
                space,
                core.connection_send_credit(),
                self.connection_write_buffer_size - core.send_buffered_total(),
            ),
        )

    def send_buffered(self) -> int:
        """Bytes all streams hold written and not yet acknowledged."""
        core = self.core
        return 0 if core is None else core.send_buffered_total()

    def append(
        self, record: StreamRecord, view: memoryview, offset: int, conclude: bool
    ) -> int:
        """Append what fits of ``view[offset:]``; the FIN with the last byte."""
        self.check_writable(record)
        total = len(view)
        count = min(self.write_space(record), total - offset)
        if count <= 0:
            return 0
        end = offset + count
        fin = conclude and end == total
        core = self.require_core()
        core.send_stream_data(record.stream_id, bytes(view[offset:end]), fin)
        record.send_event(SendEvent.CONCLUDE if fin else SendEvent.WRITE)
        self.send_soon()
        return count

    def conclude(self, record: StreamRecord) -> None:
        """Send the FIN after what is buffered (SSL_stream_conclude)."""
        if record.concluded and record.reset_sent_code is None:
            return  # only the first call has an effect
        self.check_writable(record)
        core = self.require_core()
        core.send_stream_data(record.stream_id, b"", True)
        record.send_event(SendEvent.CONCLUDE)
        self.send_soon()

    def reset(self, record: StreamRecord, error_code: int) -> None:
        """Reset the sending part (SSL_stream_reset)."""
        if not record.can_write:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} is receive-only; it cannot be reset",
            )
        if record.stop_received_code is not None:
            raise QuicFailure(
                Condition.STREAM_STOPPED_BY_PEER,
                f"stream {record.stream_id} was already reset after the peer's "
                f"STOP_SENDING (error code {record.stop_received_code})",
                error_code=record.stop_received_code,
            )
        if record.reset_sent_code is not None:
            # OpenSSL 3.5 fails a second reset (SSL_ERROR_SSL), whether the
            # first was the application's or the answer to STOP_SENDING.
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} was already reset "
                f"(error code {record.reset_sent_code})",
            )
        if record.concluded:
            raise QuicFailure(
                Condition.STREAM_UNUSABLE,
                f"stream {record.stream_id} was concluded; a finished stream "
                "cannot be reset",
            )
        if self.terminating:
            return  # nothing can be sent any more
        core = self.require_core()
        core.reset_stream(record.stream_id, error_code)
        record.reset_sent_code = error_code
        record.send_event(SendEvent.RESET)
        self.send_soon()

    def refresh_send_state(self, record: StreamRecord) -> None:
        """Move a concluded send part to DATA_RECVD once the core says the
        peer acknowledged everything (the FIN included)."""
        core = self.core
        if (
            record.send_state is SendState.DATA_SENT
            and core is not None
            and core.send_fully_acked(record.stream_id)
        ):
            record.send_event(SendEvent.ALL_ACKED)

    def send_soon(self) -> None:
        """Send what a call queued: now, as OpenSSL's SSL_write does, or at
        the end of the enclosing :meth:`batched_output` block."""
        reactor = self.require_reactor()
        reactor.mark_dirty(self.require_core())
        if not self._output_batching:
            reactor.flush()

    @contextlib.contextmanager
    def batched_output(self) -> Iterator[None]:
        """Hold back the sending writes do until the block ends.

        For the HTTP layer, which answers many requests (or sends many) per
        tick: one send pass at the end packs their frames into few, full
        packets instead of one small packet per write.
        """
        self._output_batching += 1
        try:
            yield
        finally:
            self._output_batching -= 1
            reactor = self.reactor
            if not self._output_batching and reactor is not None and not reactor.closed:
                with reactor.lock:
                    reactor.flush()

    # ==================================================================
    # DATAGRAM frames (RFC 9221)
    # ==================================================================

    def datagrams_enabled(self) -> bool:
        return self.settings.max_datagram_frame_size is not None

    def max_datagram_payload(self) -> int:
        core = self.core
        if core is None or not self.datagrams_enabled() or self.terminating:
            return 0
        return core.max_datagram_payload()

    def send_datagram(self, data: bytes) -> None:
        """Queue one DATAGRAM frame: sent once, never retransmitted."""
        self.check_mutation_allowed()
        limit = self.max_datagram_payload()
        if limit == 0:
            raise ValueError(
                "the peer does not accept DATAGRAM frames (it sent no "
                "max_datagram_frame_size transport parameter)"
            )
        if len(data) > limit:
            raise ValueError(
                f"a {len(data)}-byte datagram exceeds the {limit} bytes that the "
                "peer's max_datagram_frame_size and one packet allow "
                "(get_max_datagram_size()); nothing was sent"
            )
        self.require_core().send_datagram_frame(data)
        self.send_soon()

    def take_datagram(self) -> bytes | None:
        """The oldest received datagram; None if none (an attempt)."""
        if self.datagrams:
            return self.datagrams.popleft()
        self.raise_if_failed()
        return None

    # ==================================================================
    # opening, accepting and releasing streams
    # ==================================================================

    def open_stream(self, uni: bool, *, advance: bool) -> StreamRecord | None:
        """Allocate a local stream; None while the peer's limit forbids it."""
        self.check_mutation_allowed()
        core = self.require_core()
        if not advance and core.local_streams_available(uni) <= 0:
            return None
        return self.streams.add(core.open_stream(uni))

    def stream_count_limited(self, uni: bool) -> QuicFailure:
        kind = "unidirectional" if uni else "bidirectional"
        return QuicFailure(
            Condition.STREAM_COUNT_LIMITED,
            f"the peer's limit on {kind} streams (MAX_STREAMS) is reached; "
            f"retry when poll() reports POLL_EVENT_OS{'U' if uni else 'B'}, "
            "or use blocking mode",
        )

    def accept_stream(self, *, uni: bool, bidi: bool) -> StreamRecord | None:
        record = self.streams.pop_incoming(uni=uni, bidi=bidi)
        if record is None:
            self.raise_if_failed()
        return record

    def default_for_read(self) -> StreamRecord | None:
        """The default stream; binds the peer's first stream if read comes first.

        OpenSSL waits for the stream of ordinal 0 the peer opens (either
        direction), takes it out of the accept queue and makes it the
        default stream.  None while there is none yet.
        """
        streams = self.streams
        if streams.default is not None:
            return streams.default
        if not streams.default_possible():
            raise self.no_default_stream("accept_stream()")
        record = streams.peer_first_stream()
        if record is None:
            self.raise_if_failed()
            return None
        streams.bind_default(record)
        return record

    def default_for_write(self) -> StreamRecord | None:
        """The default stream; creates a local one if write comes first.

        None while the peer's stream limit forbids creating it.
        """
        streams = self.streams
        if streams.default is not None:
            return streams.default
        if not streams.default_possible():
            raise self.no_default_stream("new_stream()")
        record = self.open_stream(streams.default_uni(), advance=False)
        if record is not None:
            streams.bind_default(record)
        return record

    def no_default_stream(self, hint: str) -> QuicFailure:
        if self.streams.default_mode == DEFAULT_STREAM_MODE_NONE:
            why = "the default stream mode is DEFAULT_STREAM_MODE_NONE"
        else:
            why = "new_stream()/accept_stream() was used, which inhibits it"
        return QuicFailure(
            Condition.NO_DEFAULT_STREAM, f"no default stream ({why}): use {hint}"
        )

    def release_stream(self, record: StreamRecord, error_code: int = 0) -> None:
        """SSL_free on a stream: reset the send part, stop the receive part.

        As OpenSSL: a send part not yet concluded is reset with code 0; a
        receive part still expecting data (no FIN, no reset) gets
        STOP_SENDING with code 0 (``error_code`` instead, for the HTTP
        layer's cancelled requests).  Data left unread is dropped and its
        flow-control credit returned.  The record is forgotten once the
        core discarded the stream.
        """
        if record.released:
            return
        self.streams.mark_released(record, Disposition.RELEASED)
        core = self.core
        if core is None:
            return
        core.release_stream(record.stream_id)
        if self.terminating:
            return
        if record.send_open:
            core.reset_stream(record.stream_id, error_code)
            record.reset_sent_code = error_code
            record.send_event(SendEvent.RESET)
        if record.receive_open:
            record.stop_sent_code = error_code
            core.stop_sending(record.stream_id, error_code)
        self.consume(record.stream_id, record.discard())
        self.send_soon()

    def stop_sending(self, record: StreamRecord, error_code: int) -> None:
        """Abort reading: STOP_SENDING with ``error_code``; what is buffered
        is dropped and credited, and whatever arrives later too."""
        if not record.can_read or not record.receive_open:
            return
        record.stop_sent_code = error_code
        core = self.core
        if core is None or self.terminating:
            return
        core.stop_sending(record.stream_id, error_code)
        self.consume(record.stream_id, record.discard())
        self.send_soon()

    def reap_streams(self) -> None:
        """Forget released streams whose state the core has discarded."""
        core = self.core
        if core is None or not self.streams.released:
            return
        gone = [r for r in self.streams.released if core.stream_discarded(r.stream_id)]
        for record in gone:
            core.forget_stream(record.stream_id)
        self.streams.reap(gone)

    # ==================================================================
    # closing
    # ==================================================================

    def shutdown_step(self, flags: int, error_code: int, reason: str) -> bool | None:
        """Move a shutdown on; True once it is complete, else None (an attempt),
        or False when the call should return without waiting (RAPID).

        Unless ``SHUTDOWN_FLAG_NO_STREAM_FLUSH``, the close waits until the
        peer acknowledged all stream data; ``SHUTDOWN_FLAG_WAIT_PEER`` waits
        for the peer to close instead; ``SHUTDOWN_FLAG_RAPID`` does not wait
        for the terminating period once CONNECTION_CLOSE went out.
        """
        core = self.require_core()
        reactor = self.require_reactor()
        if not flags & SHUTDOWN_FLAG_WAIT_PEER:
            self.shutdown_requested = True
        if core.is_terminated or self.socket_error() is not None:
            return True
        if core.async_held:
            return None  # MODE_ASYNC: let the paused job finish first
        if not core.is_closing:
            if flags & SHUTDOWN_FLAG_WAIT_PEER:
                return None
            if not flags & SHUTDOWN_FLAG_NO_STREAM_FLUSH and not core.all_sends_acked():
                return None
            core.close(error_code, reason)
            reactor.mark_dirty(core)
            reactor.flush()
        # After CONNECTION_CLOSE went out, RAPID does not wait for the
        # terminating period (and a peer's close needs no answer); the
        # connection is not terminated yet, so OpenSSL returns 0 (False),
        # and 0 again on every call until the terminating period ended.
        if flags & SHUTDOWN_FLAG_RAPID and core.is_closing:
            return False
        return None

    def key_update(self) -> None:
        core = self.require_core()
        if not core.handshake_complete:
            raise QuicFailure(
                Condition.WRONG_STATE, "key_update() needs a completed handshake"
            )
        self.raise_if_failed()
        core.request_key_update()
        self.send_soon()

    # ==================================================================
    # polling
    # ==================================================================

    def stream_poll_events(self, record: StreamRecord) -> int:
        """R/ER/W/EW of one of this connection's streams (lock held)."""
        failed = self.terminating
        space = 0
        if record.send_open and not failed and not self.shutdown_requested:
            space = self.write_space(record)
        return poll_events(record, failed, space)

    def poll_events(self, events: int) -> int:
        """``SSL_poll`` bits of the connection (lock held).

        Connection bits (EC, ECD, ISB, ISU, OSB, OSU) plus the stream bits of
        the default stream, if any.  Before the connection starts only W
        can be reported, as in OpenSSL.
        """
        core = self.core
        if core is None:
            return events & POLL_EVENT_W
        revents = 0
        default = self.streams.default
        if default is not None:
            revents |= self.stream_poll_events(default)
        if self.terminating:
            revents |= POLL_EVENT_EC
            if self.terminated:
                revents |= POLL_EVENT_ECD
        if events & POLL_EVENT_DGRAM and self.datagrams:
            revents |= POLL_EVENT_DGRAM
        if events & POLL_EVENT_IS:
            for queued in self.streams.accept_queue:
                revents |= POLL_EVENT_ISU if queued.is_uni else POLL_EVENT_ISB
        if (
            events & POLL_EVENT_OS
            and not self.terminating
            and not self.shutdown_requested
        ):
            if core.local_streams_available(False) > 0:
                revents |= POLL_EVENT_OSB
            if core.local_streams_available(True) > 0:
                revents |= POLL_EVENT_OSU
        return revents & events


__all__ = [
    "DATAGRAM_QUEUE_LIMIT",
    "Channel",
    "ChannelConfig",
    "ChannelObserver",
    "ConnEvent",
    "ConnState",
    "EarlyData",
]
