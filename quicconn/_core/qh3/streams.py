"""Stream bookkeeping and send accounting of a :class:`~.core.Qh3Core`.

The Rust core knows streams it opened and the bytes it holds; what quicconn
promises beyond that is kept here, in a :class:`StreamLedger`:

* **Streams opened beyond the peer's limit** (``STREAM_FLAG_ADVANCE``) get
  their ID at once; the core opens them, in order, when MAX_STREAMS
  allows, and their operations wait here until then.
* **Stream operations before the handshake completed** (0-RTT) are kept,
  to be replayed on a new core after a Retry or Version Negotiation.
* **Send credit and acknowledged bytes**: qh3 reports the peer's
  MAX_STREAM_DATA as events and does not say which stream's bytes were
  acknowledged; those are inferred from moments with nothing in flight
  (:meth:`StreamLedger.confirm_if_quiescent`).
* **Connection credit**: qh3 reports the peer's MAX_DATA as events but not
  how much of it is used.  Bytes are sent only while datagrams are built,
  so :meth:`StreamLedger.after_send` looks, then, at what each stream with
  unsent bytes still holds: what left was sent, and counts against
  MAX_DATA, unless the stream was reset since the last look (its unsent
  bytes were dropped and never count).
* **What the application holds unread**, which decides whether events (and
  with them flow-control credit) are taken from the core.
* **How many streams the peer opened and finished**, for the remote stream
  counts.

The ledger outlives a core replaced after a Retry; every method that needs
the core is given the current one (None before it exists).
"""

from __future__ import annotations

import logging
from typing import Any

from qh3._hazmat import QuicConnectionCore
from qh3.quic.packet import QuicTransportParameters

from ..interface import CoreSink
from ..settings import CoreSettings

logger = logging.getLogger("quicconn.core")

#: The core states in which streams can still be opened and written.
OPEN_STATES = frozenset({"first_flight", "connected"})

#: A stream operation: ("data", id, bytes, fin), ("reset", id, code),
#: ("stop", id, code).
StreamOp = tuple[Any, ...]


class StreamLedger:
    """One connection's streams as quicconn sees them; see the module docstring."""

    def __init__(self, settings: CoreSettings) -> None:
        self._settings = settings
        self._is_client = settings.is_client
        first = 0 if self._is_client else 1
        #: The next stream ID handed out, and the next the core opened, by
        #: kind (key: unidirectional?).
        self._next_local = {False: first, True: first + 2}
        self._next_native = {False: first, True: first + 2}
        #: Operations on streams the core has not opened yet (ADVANCE).
        self._deferred: dict[int, list[StreamOp]] = {}
        #: Stream operations before the handshake completed: replayed on a
        #: new core after a Retry or Version Negotiation.
        self._early_ops: list[StreamOp] | None = [] if self._is_client else None
        self._sent: dict[int, int] = {}
        #: Bytes (FINs) written since the last moment everything was
        #: acknowledged: see :meth:`confirm_if_quiescent`.
        self._unconfirmed: dict[int, int] = {}
        self._unconfirmed_fin: set[int] = set()
        #: Data or a FIN was handed to the core and may not have left yet:
        #: a quiet moment proves nothing until a flush sent datagrams and
        #: pacing held nothing back (see :meth:`flushed`).
        self._unflushed = False
        #: The pacing deadline the last paced flush ended with.
        self._paced_until = 0.0
        self._send_max: dict[int, int] = {}
        self._finished: set[int] = set()
        self._peer_finished = {False: 0, True: 0}
        self._peer_opened = {False: 0, True: 0}
        self._unread = 0
        self._unread_by_stream: dict[int, int] = {}
        self._max_unread = settings.max_data
        #: The peer's MAX_DATA as raised by its updates (the transport
        #: parameter is read when credit is asked for).
        self._conn_max = 0
        #: Bytes sent on all streams, which count against MAX_DATA.
        self._conn_sent = 0
        #: Bytes written and not yet sent, by stream, as of the last look
        #: (plus what was written since).
        self._unsent_at: dict[int, int] = {}
        #: Streams reset (by us, or by the core after the peer's
        #: STOP_SENDING) since the last look: their unsent bytes were dropped.
        self._dropped: set[int] = set()
        #: Streams whose sending ended (FIN or reset) or whose receiving was
        #: stopped, until they finish: those the core may drop next.
        self._ending: set[int] = set()

    # -- stream IDs ---------------------------------------------------------

    def is_peer_stream(self, stream_id: int) -> bool:
        return bool(stream_id & 1) == self._is_client

    def _saw_peer_stream(self, stream_id: int) -> None:
        if self.is_peer_stream(stream_id):
            uni = bool(stream_id & 2)
            count = stream_id // 4 + 1
            if count > self._peer_opened[uni]:
                self._peer_opened[uni] = count

    def local_streams_available(
        self, native: QuicConnectionCore | None, unidirectional: bool
    ) -> int:
        if native is None:
            return 0
        limit = native.stream_limits[1 if unidirectional else 0]
        return max(0, limit - self._next_local[unidirectional] // 4)

    def remote_streams_available(self, unidirectional: bool) -> int:
        settings = self._settings
        base = settings.max_streams_uni if unidirectional else settings.max_streams_bidi
        allowed = base + self._peer_finished[unidirectional]
        return max(0, allowed - self._peer_opened[unidirectional])

    def open_stream(
        self, native: QuicConnectionCore | None, unidirectional: bool
    ) -> int:
        stream_id = self._next_local[unidirectional]
        self._next_local[unidirectional] = stream_id + 4
        self._deferred.setdefault(stream_id, [])
        self._log(("open", stream_id))
        self.open_deferred(native)
        return stream_id

    def open_deferred(self, native: QuicConnectionCore | None) -> None:
        """Open, in order, the streams handed out that the peer now allows."""
        if native is None or not self._deferred or native.state not in OPEN_STATES:
            return
        limits = native.stream_limits
        for uni in (False, True):
            next_id = self._next_native[uni]
            while next_id < self._next_local[uni] and next_id // 4 < limits[int(uni)]:
                opened = native.open_stream(uni)
                if opened != next_id:
                    logger.error("qh3 opened stream %d, expected %d", opened, next_id)
                next_id += 4
                for op in self._deferred.pop(opened, ()):
                    _apply(native, op)
            self._next_native[uni] = next_id

    def _native_open(self, stream_id: int) -> bool:
        """Whether the core knows the stream (else its operations wait)."""
        if not self.is_peer_stream(stream_id):
            return stream_id < self._next_native[bool(stream_id & 2)]
        return True

    # -- operations ---------------------------------------------------------

    def _log(self, op: StreamOp) -> None:
        early = self._early_ops
        if early is not None:
            early.append(op)

    def _do(self, native: QuicConnectionCore | None, op: StreamOp) -> bool:
        """Apply ``op`` now, or keep it until its stream opens; False if the
        core refused it (the stream is gone)."""
        self._log(op)
        stream_id = op[1]
        if native is not None and self._native_open(stream_id):
            return _apply(native, op)
        self._deferred.setdefault(stream_id, []).append(op)
        return True

    def send_stream_data(
        self, native: QuicConnectionCore | None, stream_id: int, data: bytes, fin: bool
    ) -> None:
        if data:
            size = len(data)
            self._sent[stream_id] = self._sent.get(stream_id, 0) + size
            self._unconfirmed[stream_id] = self._unconfirmed.get(stream_id, 0) + size
            self._unsent_at[stream_id] = self._unsent_at.get(stream_id, 0) + size
        if fin:
            self._unconfirmed_fin.add(stream_id)
            self._ending.add(stream_id)
        if self._do(native, ("data", stream_id, data, fin)):
            self._unflushed = True

    def reset_stream(
        self, native: QuicConnectionCore | None, stream_id: int, error_code: int
    ) -> None:
        self._dropped.add(stream_id)
        self._ending.add(stream_id)
        self._do(native, ("reset", stream_id, error_code))

    def stop_sending(
        self, native: QuicConnectionCore | None, stream_id: int, error_code: int
    ) -> None:
        if stream_id in self._finished:
            return
        self._ending.add(stream_id)
        self._do(native, ("stop", stream_id, error_code))

    def handshake_completed(self) -> None:
        """No Retry can come any more: stop keeping operations to replay."""
        self._early_ops = None

    def restart(self) -> None:
        """A new core (Retry, Version Negotiation): the streams opened
        before are opened again on it, and their operations replayed."""
        self._next_native = {
            False: 0 if self._is_client else 1,
            True: 2 if self._is_client else 3,
        }
        self._deferred = {}
        for op in self._early_ops or ():
            self._deferred.setdefault(op[1], []).append(op)
        # Everything written goes out again on the new core.
        self._conn_sent = 0
        self._unsent_at = {sid: size for sid, size in self._sent.items() if size}

    # -- send accounting ----------------------------------------------------

    def send_credit(
        self, stream_id: int, parameters: QuicTransportParameters | None
    ) -> int:
        """Bytes the peer's limits still let the stream append."""
        if stream_id in self._finished:
            return 0
        initial = self._initial_send_limit(stream_id, parameters)
        limit = max(initial, self._send_max.get(stream_id, 0))
        return max(0, limit - self._sent.get(stream_id, 0))

    def connection_send_credit(self, parameters: QuicTransportParameters | None) -> int:
        """Bytes the peer's MAX_DATA still lets all streams append."""
        initial = 0 if parameters is None else parameters.initial_max_data or 0
        unsent = sum(self._unsent_at.values())
        return max(0, max(initial, self._conn_max) - self._conn_sent - unsent)

    def after_send(self, native: QuicConnectionCore | None) -> None:
        """Account for what the datagrams just built carried (see the
        module docstring: connection credit)."""
        for stream_id, before in list(self._unsent_at.items()):
            now = self._unsent(native, stream_id)
            if stream_id not in self._dropped and before > now:
                self._conn_sent += before - now
            if now:
                self._unsent_at[stream_id] = now
            else:
                del self._unsent_at[stream_id]
        # A reset stream stays marked while it holds bytes not yet dropped
        # (a reset waiting, with its data, for the stream to open).
        if self._dropped:
            self._dropped.intersection_update(self._unsent_at)

    def send_buffered_total(self, native: QuicConnectionCore | None) -> int:
        """Bytes written on all streams and not known to be acknowledged."""
        written = sum(self._unconfirmed.values())
        if not written or self.confirm_if_quiescent(native):
            return 0
        in_flight = 0 if native is None else int(native.bytes_in_flight)
        return min(written, self._unsent(native, None) + in_flight)

    def _initial_send_limit(
        self, stream_id: int, parameters: QuicTransportParameters | None
    ) -> int:
        if parameters is None:
            return 0
        if stream_id & 2:
            if self.is_peer_stream(stream_id):
                return 0
            return parameters.initial_max_stream_data_uni or 0
        if self.is_peer_stream(stream_id):
            return parameters.initial_max_stream_data_bidi_local or 0
        return parameters.initial_max_stream_data_bidi_remote or 0

    def _unsent(self, native: QuicConnectionCore | None, stream_id: int | None) -> int:
        """Bytes written and not yet sent (waiting here or in the core)."""
        queued = 0
        for sid, ops in self._deferred.items():
            if stream_id is None or sid == stream_id:
                queued += sum(len(op[2]) for op in ops if op[0] == "data")
        if native is None:
            return queued
        try:
            return queued + int(native.get_send_buffer_size(stream_id))
        except ValueError:
            return queued

    def flushed(self, native: QuicConnectionCore, now: float) -> None:
        """The core built the datagrams it could at ``now``.

        What was handed to it has left once a flush ends with no pacing
        timer, at or after the last pacing deadline: a FIN held back
        by pacing has no bytes in the send buffer or in flight to show it,
        and an earlier timer (a delayed ACK) can hide the pacing one once
        the packets before it are acknowledged.  (qh3 may also keep a
        pacing timer with nothing to send: it lapses, and the next flush
        clears the mark.)
        """
        timer = native.get_timer()
        if timer is not None and timer[0] == "pacing":
            self._paced_until = timer[1]
        elif now >= self._paced_until:
            self._unflushed = False

    def flush_due_at(self) -> float | None:
        """When a flush can prove that what was handed to the core has left:
        the last pacing deadline, while that is unproven (:meth:`flushed`).
        qh3 may drop a lapsed pacing timer with nothing left to send, and
        without a flush at or after it the mark would never clear (a
        blocking ``shutdown()`` then waited for good)."""
        return self._paced_until if self._unflushed and self._paced_until else None

    @property
    def has_ending_streams(self) -> bool:
        """Whether the core may soon drop a stream as finished (its sending
        ended or its receiving was stopped, and it has not finished)."""
        return bool(self._ending)

    @property
    def has_unconfirmed(self) -> bool:
        """True if bytes or FINs were written since the last quiet moment."""
        return bool(self._unconfirmed or self._unconfirmed_fin)

    def confirm_if_quiescent(self, native: QuicConnectionCore | None) -> bool:
        """If nothing is in flight and nothing waits to be sent, every byte
        (and FIN) written so far was acknowledged: forget them, and say so.

        qh3 does not tell which stream's bytes a peer acknowledged; a moment
        with no packet in flight is when that is certain for all of them,
        once the core built datagrams after the last write (a FIN has no
        bytes to count in its send buffer).  (Lost data awaiting
        retransmission goes out in the same flush, or is held by congestion
        or pacing, which keeps packets in flight or a pacing timer armed.)
        """
        if native is None:
            quiet = not self._deferred
        elif (
            self._unflushed
            or any(self._deferred.values())  # a FIN alone has no bytes
            or native.bytes_in_flight
            or self._unsent(native, None)
        ):
            quiet = False
        else:
            timer = native.get_timer()
            quiet = timer is None or timer[0] != "pacing"
        if quiet:
            self._unconfirmed.clear()
            self._unconfirmed_fin.clear()
        return quiet

    def send_buffered(self, native: QuicConnectionCore | None, stream_id: int) -> int:
        """Bytes written to the stream and not known to be acknowledged.

        The stream's bytes written since the connection last had nothing
        in flight (see :meth:`confirm_if_quiescent`), capped by what is
        unsent on it plus everything in flight.
        """
        if stream_id in self._finished:
            return 0
        written = self._unconfirmed.get(stream_id, 0)
        if not written or self.confirm_if_quiescent(native):
            return 0
        in_flight = 0 if native is None else int(native.bytes_in_flight)
        return min(written, self._unsent(native, stream_id) + in_flight)

    def send_fully_acked(
        self, native: QuicConnectionCore | None, stream_id: int
    ) -> bool:
        if stream_id in self._finished or self.confirm_if_quiescent(native):
            return True
        return (
            not self._unconfirmed.get(stream_id)
            and stream_id not in self._unconfirmed_fin
            and not self._unsent(native, stream_id)
        )

    def all_sends_acked(self, native: QuicConnectionCore | None) -> bool:
        if self.confirm_if_quiescent(native):
            return True
        return (
            not self._unconfirmed
            and not self._unconfirmed_fin
            and not self._unsent(native, None)
        )

    # -- receiving ----------------------------------------------------------

    @property
    def holds_enough(self) -> bool:
        """True while the application holds ``max_data`` unread bytes or
        more: events (and the credit taking them grants) wait in the core."""
        return self._unread >= self._max_unread

    def consume(self, stream_id: int, nbytes: int) -> None:
        if nbytes <= 0:
            return
        held = self._unread_by_stream.get(stream_id, 0)
        taken = min(held, nbytes)
        if taken:
            self._unread -= taken
            if held == taken:
                del self._unread_by_stream[stream_id]
            else:
                self._unread_by_stream[stream_id] = held - taken

    def report(self, sink: CoreSink, event: tuple[Any, ...]) -> bool:
        """Account for a stream event of the core and tell the sink what it
        must know; False if ``event`` is not about a stream."""
        kind = event[0]
        if kind == "stream_data":
            _, stream_id, data, fin = event
            if data:
                self._unread += len(data)
                self._unread_by_stream[stream_id] = self._unread_by_stream.get(
                    stream_id, 0
                ) + len(data)
            self._saw_peer_stream(stream_id)
            sink.on_stream_data(stream_id, data, fin)
        elif kind == "stream_reset":
            stream_id, code = event[1], event[2]
            self._unread -= self._unread_by_stream.pop(stream_id, 0)
            self._saw_peer_stream(stream_id)
            sink.on_stream_reset(stream_id, code)
        elif kind == "stop_sending":
            self._saw_peer_stream(event[1])
            self._dropped.add(event[1])  # the core reset it: unsent bytes go
            sink.on_stop_sending(event[1], event[2])
        elif kind == "stream_finished":
            stream_id = event[1]
            self._finished.add(stream_id)
            self._ending.discard(stream_id)
            if self.is_peer_stream(stream_id):
                self._peer_finished[bool(stream_id & 2)] += 1
        elif kind == "stream_credit":
            stream_id, maximum = event[1], event[2]
            if maximum > self._send_max.get(stream_id, 0):
                self._send_max[stream_id] = maximum
        elif kind == "connection_credit":
            self._conn_max = max(self._conn_max, event[1])
        else:
            return False
        return True

    # -- the end of a stream ------------------------------------------------

    def stream_discarded(self, stream_id: int) -> bool:
        return stream_id in self._finished

    def forget_stream(self, stream_id: int) -> None:
        self._finished.discard(stream_id)
        self._ending.discard(stream_id)
        self._unsent_at.pop(stream_id, None)
        self._sent.pop(stream_id, None)
        self._unconfirmed.pop(stream_id, None)
        self._unconfirmed_fin.discard(stream_id)
        self._send_max.pop(stream_id, None)
        self._unread -= self._unread_by_stream.pop(stream_id, 0)


def _apply(native: QuicConnectionCore, op: StreamOp) -> bool:
    """Hand one stream operation to the core; False if it refused it."""
    kind, stream_id = op[0], op[1]
    try:
        if kind == "data":
            native.send_stream(stream_id, op[2], op[3])
        elif kind == "reset":
            native.reset_stream(stream_id, op[2])
        elif kind == "stop":
            native.stop_sending(stream_id, op[2])
    except (ValueError, RuntimeError) as exc:
        logger.debug("stream %d: %s ignored: %s", stream_id, kind, exc)
        return False
    return True


__all__ = ["OPEN_STATES", "StreamLedger", "StreamOp"]
