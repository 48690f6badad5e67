"""The streams of one connection: records, the accept queue, the default stream.

:class:`StreamRecord` is what a channel knows about one stream, whether or
not the application holds an object for it: the two parts' states (see
:mod:`.stream_state`), their error codes, and the receive buffer.

:class:`StreamMap` is the registry of a connection's streams and the home
of OpenSSL's stream rules that are not about a single stream: the accept
queue of peer-opened streams, the incoming stream policy
(``SSL_set_incoming_stream_policy``), and the default stream
(``SSL_set_default_stream_mode``: created by the first write, or bound to
the peer's first stream by the first read, unless inhibited).
"""

from __future__ import annotations

import enum
from collections import deque

from .._constants import (
    DEFAULT_STREAM_MODE_AUTO_BIDI,
    DEFAULT_STREAM_MODE_AUTO_UNI,
    DEFAULT_STREAM_MODE_NONE,
    INCOMING_STREAM_POLICY_ACCEPT,
    INCOMING_STREAM_POLICY_AUTO,
    INCOMING_STREAM_POLICY_REJECT,
    STREAM_TYPE_BIDI,
    STREAM_TYPE_NONE,
    STREAM_TYPE_READ,
    STREAM_TYPE_WRITE,
)
from .stream_state import (
    FIN_RECEIVED,
    FIN_SENT,
    RESET_SENT,
    RecvEvent,
    RecvState,
    SendEvent,
    SendState,
    next_recv_state,
    next_send_state,
)


def is_unidirectional(stream_id: int) -> bool:
    return bool(stream_id & 0x2)


def is_client_initiated(stream_id: int) -> bool:
    return not stream_id & 0x1


class Disposition(enum.Enum):
    """Whether the application has, or can still get, an object for a stream."""

    OPEN = "open"  #: held, queued for accept, or the default stream
    RELEASED = "released"  #: the application freed its object (SSL_free)
    REJECTED = "rejected"  #: refused by the incoming stream policy


class StreamRecord:
    """What a channel knows about one stream."""

    __slots__ = (
        "_chunks",
        "_first_offset",
        "buffered",
        "disposition",
        "is_local",
        "recv_state",
        "reset_received_code",
        "reset_sent_code",
        "send_state",
        "stop_received_code",
        "stop_sent_code",
        "stream_id",
    )

    def __init__(self, stream_id: int, is_client: bool) -> None:
        self.stream_id = stream_id
        self.is_local = is_client_initiated(stream_id) == is_client
        uni = is_unidirectional(stream_id)
        self.send_state: SendState | None = (
            None if uni and not self.is_local else SendState.READY
        )
        self.recv_state: RecvState | None = (
            None if uni and self.is_local else RecvState.RECV
        )
        self._chunks: deque[bytes] = deque()
        self._first_offset = 0
        self.buffered = 0
        #: RESET_STREAM received from the peer (its application error code).
        self.reset_received_code: int | None = None
        #: RESET_STREAM sent by us (stream_reset(), or released unconcluded).
        self.reset_sent_code: int | None = None
        #: STOP_SENDING received from the peer.
        self.stop_received_code: int | None = None
        #: STOP_SENDING sent by us.
        self.stop_sent_code: int | None = None
        self.disposition = Disposition.OPEN

    # -- what kind of stream ------------------------------------------------

    @property
    def can_read(self) -> bool:
        return self.recv_state is not None

    @property
    def can_write(self) -> bool:
        return self.send_state is not None

    @property
    def stream_type(self) -> int:
        return (STREAM_TYPE_READ if self.can_read else STREAM_TYPE_NONE) | (
            STREAM_TYPE_WRITE if self.can_write else STREAM_TYPE_NONE
        )

    @property
    def is_bidi(self) -> bool:
        return self.stream_type == STREAM_TYPE_BIDI

    @property
    def is_uni(self) -> bool:
        return is_unidirectional(self.stream_id)

    # -- the parts' states ------------------------------------------------

    def send_event(self, event: SendEvent) -> None:
        assert self.send_state is not None, "a receive-only stream has no send part"
        self.send_state = next_send_state(self.send_state, event)

    def recv_event(self, event: RecvEvent) -> None:
        assert self.recv_state is not None, "a send-only stream has no receive part"
        self.recv_state = next_recv_state(self.recv_state, event)

    @property
    def concluded(self) -> bool:
        """The FIN was sent (or queued) on the send part."""
        return self.send_state in FIN_SENT

    @property
    def fin_received(self) -> bool:
        return self.recv_state in FIN_RECEIVED

    @property
    def send_open(self) -> bool:
        """The send part can still take data (not concluded, reset or stopped)."""
        return (
            self.send_state is not None
            and self.send_state not in FIN_SENT
            and self.send_state not in RESET_SENT
            and self.stop_received_code is None
        )

    @property
    def receive_open(self) -> bool:
        """The receive part may still get data (no FIN, reset or STOP_SENDING)."""
        return self.recv_state is RecvState.RECV and self.stop_sent_code is None

    @property
    def released(self) -> bool:
        return self.disposition is not Disposition.OPEN

    # -- receive buffer ---------------------------------------------------

    def push(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
        if fin:
            self.recv_event(RecvEvent.FINAL_SIZE)
            self.recv_event(RecvEvent.ALL_DATA)
        elif data and self.recv_state is not RecvState.RECV:
            # RECV + DATA -> RECV is the table's one self-loop, taken for
            # every datagram of a transfer: only other states consult it.
            self.recv_event(RecvEvent.DATA)

    def take(self, limit: int) -> bytes:
        """Remove and return up to ``limit`` bytes (all if ``limit`` < 0)."""
        if limit < 0 or limit >= self.buffered:
            if self._first_offset == 0 and len(self._chunks) == 1:
                data = self._chunks.popleft()
            else:
                parts = list(self._chunks)
                if parts:
                    parts[0] = parts[0][self._first_offset :]
                data = b"".join(parts)
                self._chunks.clear()
            self._first_offset = 0
            self.buffered = 0
            return data
        out = bytearray()
        while len(out) < limit:
            chunk = self._chunks[0]
            start = self._first_offset
            end = start + limit - len(out)
            if end >= len(chunk):
                out += chunk[start:] if start else chunk
                self._chunks.popleft()
                self._first_offset = 0
            else:
                out += chunk[start:end]
                self._first_offset = end
        self.buffered -= len(out)
        return bytes(out)

    def take_into(self, buffer: memoryview) -> int:
        """Move as many bytes as fit into ``buffer``; return the count."""
        size = len(buffer)
        filled = 0
        while filled < size and self._chunks:
            chunk = self._chunks[0]
            start = self._first_offset
            n = min(size - filled, len(chunk) - start)
            buffer[filled : filled + n] = chunk[start : start + n]
            filled += n
            if start + n == len(chunk):
                self._chunks.popleft()
                self._first_offset = 0
            else:
                self._first_offset = start + n
        self.buffered -= filled
        return filled

    def peek(self, limit: int) -> bytes:
        if limit < 0 or limit > self.buffered:
            limit = self.buffered
        out = bytearray()
        offset = self._first_offset
        for chunk in self._chunks:
            if len(out) >= limit:
                break
            out += chunk[offset : offset + limit - len(out)]
            offset = 0
        return bytes(out)

    def discard(self) -> int:
        """Drop everything buffered; return how many bytes were dropped."""
        dropped = self.buffered
        self._chunks.clear()
        self._first_offset = 0
        self.buffered = 0
        return dropped


class DefaultStream(enum.Enum):
    """Where a connection is with its default stream."""

    PENDING = "pending"  #: none yet; the first read or write may make one
    BOUND = "bound"  #: the default stream exists
    INHIBITED = "inhibited"  #: new_stream()/accept_stream() ruled it out


_DEFAULT_STREAM_MODES = (
    DEFAULT_STREAM_MODE_NONE,
    DEFAULT_STREAM_MODE_AUTO_BIDI,
    DEFAULT_STREAM_MODE_AUTO_UNI,
)
_INCOMING_POLICIES = (
    INCOMING_STREAM_POLICY_AUTO,
    INCOMING_STREAM_POLICY_ACCEPT,
    INCOMING_STREAM_POLICY_REJECT,
)


class StreamMap:
    """A connection's streams, accept queue and default-stream rules."""

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.records: dict[int, StreamRecord] = {}
        self.accept_queue: deque[StreamRecord] = deque()
        #: Released (freed or rejected) streams, forgotten once the core is done.
        self.released: list[StreamRecord] = []
        self.default: StreamRecord | None = None
        self.default_state = DefaultStream.PENDING
        self.default_mode = DEFAULT_STREAM_MODE_AUTO_BIDI
        self.incoming_policy = INCOMING_STREAM_POLICY_AUTO
        self.incoming_error_code = 0

    def get(self, stream_id: int) -> StreamRecord | None:
        return self.records.get(stream_id)

    def add(self, stream_id: int) -> StreamRecord:
        record = StreamRecord(stream_id, self.is_client)
        self.records[stream_id] = record
        return record

    # -- policies ---------------------------------------------------------

    def set_default_mode(self, mode: int) -> None:
        """SSL_set_default_stream_mode: only before the default stream's fate."""
        if mode not in _DEFAULT_STREAM_MODES:
            raise ValueError(f"unknown default stream mode {mode!r}")
        if self.default_state is not DefaultStream.PENDING:
            raise ValueError(
                "too late to change the default stream mode: a default stream was "
                "created, or new_stream()/accept_stream() was used; set it first"
            )
        self.default_mode = mode

    def set_incoming_policy(self, policy: int, error_code: int) -> None:
        if policy not in _INCOMING_POLICIES:
            raise ValueError(f"unknown incoming stream policy {policy!r}")
        self.incoming_policy = policy
        self.incoming_error_code = error_code

    def effective_incoming_policy(self) -> int:
        """ACCEPT or REJECT: OpenSSL's AUTO resolved for now.

        AUTO accepts until a default stream exists or was inhibited (the
        first incoming stream may become it), and always when the
        application manages streams itself (mode NONE).
        """
        policy = self.incoming_policy
        if policy != INCOMING_STREAM_POLICY_AUTO:
            return policy
        if (
            self.default_mode == DEFAULT_STREAM_MODE_NONE
            or self.default_state is DefaultStream.PENDING
        ):
            return INCOMING_STREAM_POLICY_ACCEPT
        return INCOMING_STREAM_POLICY_REJECT

    # -- the default stream -----------------------------------------------

    def inhibit_default(self) -> None:
        """OpenSSL's "touch": no default stream is created automatically."""
        if self.default_state is DefaultStream.PENDING:
            self.default_state = DefaultStream.INHIBITED

    def default_possible(self) -> bool:
        """A default stream exists or may still be made."""
        return self.default_state is not DefaultStream.INHIBITED and (
            self.default_state is DefaultStream.BOUND
            or self.default_mode != DEFAULT_STREAM_MODE_NONE
        )

    def default_uni(self) -> bool:
        return self.default_mode == DEFAULT_STREAM_MODE_AUTO_UNI

    def bind_default(self, record: StreamRecord) -> None:
        if record in self.accept_queue:
            self.accept_queue.remove(record)
        self.default = record
        self.default_state = DefaultStream.BOUND

    def peer_first_stream(self) -> StreamRecord | None:
        """The peer's stream of ordinal 0 (bidi or uni), if it exists yet."""
        base = 0x1 if self.is_client else 0x0
        for stream_id in (base, base | 0x2):
            record = self.records.get(stream_id)
            if record is not None and record.disposition is not Disposition.REJECTED:
                return record
        return None

    # -- accept queue -----------------------------------------------------

    def pop_incoming(self, *, uni: bool, bidi: bool) -> StreamRecord | None:
        """The oldest queued peer stream of the kinds asked for (both if neither)."""
        for record in self.accept_queue:
            if (uni and not record.is_uni) or (bidi and record.is_uni):
                continue
            self.accept_queue.remove(record)
            return record
        return None

    # -- release ----------------------------------------------------------

    def mark_released(self, record: StreamRecord, disposition: Disposition) -> None:
        record.disposition = disposition
        self.released.append(record)

    def reap(self, discarded: list[StreamRecord]) -> None:
        """Forget released streams whose state the core has discarded."""
        gone = {id(r) for r in discarded}
        self.released = [r for r in self.released if id(r) not in gone]
        for record in discarded:
            self.records.pop(record.stream_id, None)


__all__ = [
    "DefaultStream",
    "Disposition",
    "StreamMap",
    "StreamRecord",
    "is_client_initiated",
    "is_unidirectional",
]
