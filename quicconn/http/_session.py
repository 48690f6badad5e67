"""HTTP sessions on quicconn stream objects: HTTP/3 and hq-interop.

A session owns one quicconn :class:`~quicconn.Connection` and speaks HTTP
over its streams the way OpenSSL's nghttp3 demo sits on its stream API: the
connection runs in nonblocking mode with *explicit* event handling, the
session accepts incoming streams, reads whatever each stream has buffered,
feeds it to the HTTP state machine, and writes what that produces back with
partial writes (the unsent rest waits in a per-stream backlog).

Event loops drive a session like a connection: wait on :meth:`fileno` for
what :meth:`net_read_desired`/:meth:`net_write_desired` say, no longer than
:meth:`get_event_timeout`, then call :meth:`handle_events`, which returns the
:mod:`HTTP events <quicconn.http._events>` that happened.  :meth:`wait` does
that wait for blocking users, and the connection can sit in a
``quicconn.poll()`` set like any other.

HTTP/3 framing and QPACK come from the connection's core backend, as an
:class:`~quicconn._core.interface.H3Codec` (aioquic's ``H3Connection`` for
the aioquic core); the session gives it an
:class:`~quicconn._core.interface.H3Transport` over quicconn streams.
"""

from __future__ import annotations

import contextlib
import selectors
from collections import deque

from .._constants import (
    ACCEPT_STREAM_NO_BLOCK,
    DEFAULT_STREAM_MODE_NONE,
    INCOMING_STREAM_POLICY_ACCEPT,
    MODE_ENABLE_PARTIAL_WRITE,
    SHUTDOWN_FLAG_NO_BLOCK,
    SHUTDOWN_FLAG_NO_STREAM_FLUSH,
    STREAM_FLAG_UNI,
    STREAM_STATE_CONN_CLOSED,
    STREAM_STATE_FINISHED,
    STREAM_STATE_RESET_REMOTE,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
)
from .._core.interface import (
    H3DatagramReceived,
    H3DataReceived,
    H3Event,
    H3HeadersReceived,
    H3StreamError,
)
from .._errors import (
    ConnectionTerminatedError,
    Error,
    StreamResetError,
    WantWriteError,
)
from .._objects.connection import (
    Connection,
    channel_of,
    h3_codec,
    local_max_datagram_frame_size,
    peer_max_datagram_frame_size,
)
from .._objects.stream import Stream, abort_reading, free_stream, write_space
from ._events import (
    DatagramReceived,
    DataReceived,
    Headers,
    HttpEvent,
    RequestReceived,
    ResponseReceived,
    StreamAborted,
    StreamRefused,
    TrailersReceived,
)
from ._frames import FrameScanner, Verdict
from ._limits import HttpLimits

ALPN_H3 = "h3"
ALPN_HQ = "hq-interop"

#: HTTP/3 error codes (RFC 9114 section 8.1); hq-interop borrows them too.
H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E


class HttpSession:
    """Common machinery: streams, backlogs, reading, waiting.

    A quicconn extension (OpenSSL leaves HTTP to nghttp3 or its caller).
    """

    #: The ALPN protocol this session speaks.
    alpn: str = ""
    #: Bytes of framing :meth:`send_body` adds to a body chunk, at most.
    framing_overhead: int = 0

    def __init__(self, conn: Connection, limits: HttpLimits | None = None) -> None:
        self.conn = conn
        self.is_client = not conn.is_server()
        #: What the peer is held to (:class:`~quicconn.http.HttpLimits`).
        self.limits = limits if limits is not None else HttpLimits()
        conn.set_blocking_mode(False)
        conn.set_value_uint(
            VALUE_CLASS_GENERIC,
            VALUE_EVENT_HANDLING_MODE,
            VALUE_EVENT_HANDLING_MODE_EXPLICIT,
        )
        conn.set_default_stream_mode(DEFAULT_STREAM_MODE_NONE)
        conn.set_incoming_stream_policy(INCOMING_STREAM_POLICY_ACCEPT)
        conn.set_mode(MODE_ENABLE_PARTIAL_WRITE)  # backlogs take the remainder
        self.streams: dict[int, Stream] = {}
        self._backlog: dict[int, deque[tuple[memoryview, bool]]] = {}
        self._finished_reading: set[int] = set()
        self._paused: set[int] = set()
        self._forget_when_flushed: set[int] = set()
        #: Streams this session refused by itself: released at the end of
        #: :meth:`process`.
        self._refused: set[int] = set()

    # -- event-loop surface ------------------------------------------------

    def fileno(self) -> int:
        return self.conn.fileno()

    def get_event_timeout(self) -> float | None:
        return self.conn.get_event_timeout()

    def net_read_desired(self) -> bool:
        return self.conn.net_read_desired()

    def net_write_desired(self) -> bool:
        return self.conn.net_write_desired()

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until the socket is ready, a timer is due, or ``timeout``."""
        deadline = self.conn.get_event_timeout()
        if deadline is not None:
            timeout = deadline if timeout is None else min(timeout, deadline)
        events = selectors.EVENT_READ
        if self.conn.net_write_desired():
            events |= selectors.EVENT_WRITE
        with selectors.DefaultSelector() as selector:
            selector.register(self.conn.fileno(), events)
            selector.select(timeout)

    def handle_events(self) -> list[HttpEvent]:
        """Tick the connection and return the HTTP events that resulted."""
        self.conn.handle_events()
        return self.process()

    def process(self) -> list[HttpEvent]:
        """Return HTTP events for data already received (no network I/O)."""
        events: list[HttpEvent] = []
        while True:
            try:
                stream = self.conn.accept_stream(ACCEPT_STREAM_NO_BLOCK)
            except ConnectionTerminatedError:
                break  # closed: what the streams hold can still be read
            if stream is None:
                break
            self.streams[stream.get_stream_id()] = stream
        for stream_id, stream in list(self.streams.items()):
            if stream_id in self._finished_reading or stream_id in self._paused:
                continue
            self._read_stream(stream_id, stream, events)
        self.flush()
        while self._refused:
            self.forget(self._refused.pop())
        return events

    def _read_stream(
        self, stream_id: int, stream: Stream, events: list[HttpEvent]
    ) -> None:
        if not stream.get_stream_type() & 1:  # send-only: nothing to read
            return
        if stream.pending():
            data = stream.read()
            ended = stream.get_stream_read_state() == STREAM_STATE_FINISHED
            self.on_stream_data(stream_id, data, ended, events)
            if ended:
                self._finished_reading.add(stream_id)
            return
        state = stream.get_stream_read_state()
        if state == STREAM_STATE_FINISHED:
            self._finished_reading.add(stream_id)
            self.on_stream_data(stream_id, b"", True, events)
        elif state == STREAM_STATE_RESET_REMOTE:
            self._finished_reading.add(stream_id)
            code = stream.get_stream_read_error_code() or 0
            self.on_stream_reset(stream_id, code, events)
        elif state == STREAM_STATE_CONN_CLOSED:
            self._finished_reading.add(stream_id)

    # -- writing with back-pressure -----------------------------------------

    def write(self, stream_id: int, data: bytes, end: bool) -> None:
        """Queue bytes for a stream; they go out as its send buffer allows."""
        queue = self._backlog.setdefault(stream_id, deque())
        queue.append((memoryview(data), end))
        self._flush_stream(stream_id)

    def backlog(self, stream_id: int) -> int:
        """Bytes accepted by :meth:`write` but not yet given to the stream."""
        return sum(len(chunk) for chunk, _ in self._backlog.get(stream_id, ()))

    def writable(self, stream_id: int) -> int:
        """Body bytes :meth:`send_body` could hand to the stream now, past
        its backlog: the peer's stream and connection credit, and room in
        the stream's and the connection's send buffers."""
        stream = self.streams.get(stream_id)
        if stream is None or self._backlog.get(stream_id):
            return 0
        return max(0, write_space(stream) - self.framing_overhead)

    def buffered(self) -> int:
        """Bytes this session holds for the peer: written to QUIC streams and
        not yet acknowledged, plus what waits in the backlogs."""
        waiting = sum(
            len(chunk) for queue in self._backlog.values() for chunk, _ in queue
        )
        return channel_of(self.conn).send_buffered() + waiting

    def flush(self) -> None:
        for stream_id in list(self._backlog):
            self._flush_stream(stream_id)

    def _flush_stream(self, stream_id: int) -> None:
        queue = self._backlog.get(stream_id)
        stream = self.streams.get(stream_id)
        if not queue or stream is None:
            return
        try:
            while queue:
                chunk, end = queue[0]
                if chunk:
                    sent = stream.write(chunk)
                    if sent < len(chunk):
                        queue[0] = (chunk[sent:], end)
                        return
                if end:
                    stream.stream_conclude()
                queue.popleft()
        except WantWriteError:
            return
        except (StreamResetError, ConnectionTerminatedError):
            queue.clear()  # the peer stopped reading: drop what is left
        if not queue:
            del self._backlog[stream_id]
            if stream_id in self._forget_when_flushed:
                self.forget(stream_id)

    def open_stream(self, unidirectional: bool = False) -> Stream:
        stream = self.conn.new_stream(STREAM_FLAG_UNI if unidirectional else 0)
        self.streams[stream.get_stream_id()] = stream
        return stream

    def can_open_request(self) -> bool:
        """Whether the peer's stream limit allows another request now."""
        try:
            available = self.conn.get_value_uint(
                VALUE_CLASS_GENERIC, VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL
            )
        except ValueError:
            # Not started yet (hq-interop in 0-RTT opens no stream before its
            # first request): the first new_stream() starts the handshake.
            return True
        return available > 0

    def pause_reading(self, stream_id: int, paused: bool = True) -> None:
        """Stop (or resume) reading a stream's data into HTTP events.

        While paused the bytes stay in the stream's receive buffer, so QUIC
        flow control stops the peer once that fills: a consumer that reads a
        body slowly holds the sender back instead of growing a buffer.
        """
        if paused:
            self._paused.add(stream_id)
        else:
            self._paused.discard(stream_id)

    def forget(self, stream_id: int) -> None:
        """Release a finished request's stream once its backlog is sent."""
        if stream_id in self._backlog:
            self._forget_when_flushed.add(stream_id)
            return
        self._forget_when_flushed.discard(stream_id)
        self._finished_reading.discard(stream_id)
        self._paused.discard(stream_id)
        self.forget_stream_state(stream_id)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.free()

    def cancel(self, stream_id: int, error_code: int) -> None:
        """Abandon a request stream: reset what we still send and stop
        reading it (RESET_STREAM and STOP_SENDING carry ``error_code``)."""
        self._backlog.pop(stream_id, None)
        self._forget_when_flushed.discard(stream_id)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            with contextlib.suppress(Error, ValueError):  # the connection is gone
                free_stream(stream, error_code)
        self.forget(stream_id)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Start closing the connection without blocking."""
        self.conn.shutdown(SHUTDOWN_FLAG_NO_BLOCK, error_code, reason)

    # -- protocol hooks -----------------------------------------------------

    def forget_stream_state(self, stream_id: int) -> None:
        """Drop what the protocol layer keeps about a finished stream."""

    def on_stream_data(
        self, stream_id: int, data: bytes, ended: bool, events: list[HttpEvent]
    ) -> None:
        raise NotImplementedError

    def on_stream_reset(
        self, stream_id: int, code: int, events: list[HttpEvent]
    ) -> None:
        events.append(StreamAborted(stream_id, code))

    def send_request(
        self,
        method: str,
        authority: str,
        path: str,
        headers: Headers | None = None,
        *,
        end_stream: bool = True,
    ) -> int:
        """Open a request stream and send the request head; its stream ID.

        ``end_stream=False`` leaves the stream open for a body
        (:meth:`send_body`) and perhaps trailers (:meth:`send_trailers`).
        """
        raise NotImplementedError

    def send_response_head(
        self, stream_id: int, status: int, headers: Headers | None = None
    ) -> None:
        raise NotImplementedError

    def send_body(self, stream_id: int, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        """Send trailing headers after the body, ending the stream."""
        raise ValueError(f"{self.alpn} has no trailers")

    def send_not_found(self, stream_id: int) -> None:
        """Answer a request for something that is not there (404)."""
        body = b"not found\n"
        self.send_response_head(
            stream_id, 404, [(b"content-length", str(len(body)).encode())]
        )
        self.send_body(stream_id, body, True)


class HqSession(HttpSession):
    """hq-interop: HTTP/0.9 over QUIC, one bidirectional stream per request.

    The request is ``GET /path\\r\\n`` and FIN; the response is the raw bytes
    and FIN.  There are no headers or status codes.
    """

    alpn = ALPN_HQ

    def __init__(self, conn: Connection, limits: HttpLimits | None = None) -> None:
        super().__init__(conn, limits)
        self._request_lines: dict[int, bytearray] = {}
        self._heads_done: set[int] = set()

    def send_request(
        self,
        method: str,
        authority: str,
        path: str,
        headers: Headers | None = None,
        *,
        end_stream: bool = True,
    ) -> int:
        if method != "GET" or not end_stream:
            raise ValueError("hq-interop only has GET, without a request body")
        if not path.startswith("/") or any(ch in path for ch in " \r\n"):
            raise ValueError(f"not a request path for hq-interop: {path!r}")
        stream = self.open_stream()
        stream_id = stream.get_stream_id()
        self.write(stream_id, f"GET {path}\r\n".encode("ascii"), True)
        return stream_id

    def send_response_head(
        self, stream_id: int, status: int, headers: Headers | None = None
    ) -> None:
        """Nothing: hq-interop responses have no head, only the body."""

    def send_body(self, stream_id: int, data: bytes, end: bool) -> None:
        self.write(stream_id, data, end)

    def send_not_found(self, stream_id: int) -> None:
        """Reset the stream: HTTP/0.9 has no status, and a body saying "not
        found" would be saved as if it were the file."""
        self._reject(stream_id)

    def on_stream_data(
        self, stream_id: int, data: bytes, ended: bool, events: list[HttpEvent]
    ) -> None:
        if self.is_client:
            events.append(DataReceived(stream_id, data, ended))
            return
        if stream_id in self._heads_done:
            return  # a request body: hq-interop has none, ignore it
        line = self._request_lines.setdefault(stream_id, bytearray())
        limit = self.limits.max_request_line
        line += data[: limit + 2 - len(line)]  # never more than the limit + CRLF
        end = line.find(b"\n")
        if (end < 0 and len(line) > limit) or end > limit + 1:
            self._refuse(stream_id)  # too long: nothing more is buffered
            return
        if end < 0 and not ended:
            return
        self._request_lines.pop(stream_id, None)
        self._heads_done.add(stream_id)
        words = bytes(line).split(b"\n", 1)[0].strip().split()
        if len(words) < 2 or words[0] != b"GET":
            self._refuse(stream_id)
            return
        path = words[1].decode("latin-1")
        events.append(RequestReceived(stream_id, "GET", path, "", [], True))

    def _refuse(self, stream_id: int) -> None:
        """Refuse a request no one above will see; release its stream."""
        self._reject(stream_id)
        self._refused.add(stream_id)

    def _reject(self, stream_id: int) -> None:
        """Refuse a request: reset the response, drop its request line."""
        self._request_lines.pop(stream_id, None)
        self._heads_done.add(stream_id)
        stream = self.streams.get(stream_id)
        if stream is not None:
            with contextlib.suppress(Error, ValueError):  # already reset
                stream.stream_reset(H3_REQUEST_REJECTED)

    def forget_stream_state(self, stream_id: int) -> None:
        self._request_lines.pop(stream_id, None)
        self._heads_done.discard(stream_id)


class _H3Streams:
    """The :class:`~quicconn._core.interface.H3Transport` of an :class:`H3Session`:
    the stream operations its HTTP/3 codec needs, over the session's streams."""

    def __init__(self, session: H3Session) -> None:
        self._session = session

    def open_stream(self, unidirectional: bool) -> int:
        return self._session.open_stream(unidirectional).get_stream_id()

    def write(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._session.write(stream_id, data, fin)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        stream = self._session.streams.get(stream_id)
        if stream is not None:
            stream.stream_reset(error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        stream = self._session.streams.get(stream_id)
        if stream is not None:
            stream.free()

    def close(self, error_code: int, reason: str) -> None:
        self._session.protocol_error = (error_code, reason)
        self._session.conn.shutdown(
            SHUTDOWN_FLAG_NO_BLOCK | SHUTDOWN_FLAG_NO_STREAM_FLUSH,
            error_code,
            reason,
        )

    def peer_max_datagram_frame_size(self) -> int | None:
        return peer_max_datagram_frame_size(self._session.conn)

    def local_max_datagram_frame_size(self) -> int | None:
        return local_max_datagram_frame_size(self._session.conn)

    def send_datagram(self, data: bytes) -> None:
        self._session.conn.send_datagram(data)


class H3Session(HttpSession):
    """HTTP/3 (RFC 9114) with QPACK, using the core backend's codec."""

    alpn = ALPN_H3
    framing_overhead = 16  # a DATA frame's type and length

    def __init__(self, conn: Connection, limits: HttpLimits | None = None) -> None:
        super().__init__(conn, limits)
        #: (error code, reason) if the peer violated HTTP/3 and we closed.
        self.protocol_error: tuple[int, str] | None = None
        self._h3 = h3_codec(conn, _H3Streams(self), self.limits.max_field_section_size)
        #: Streams whose (final) head arrived: a later HEADERS is trailers.
        self._heads: set[int] = set()
        #: Frame boundaries of each stream, checked before the codec.
        self._scanners: dict[int, FrameScanner] = {}
        #: Body bytes still due by each message's content-length.
        self._expected: dict[int, int] = {}
        #: Requests sent with HEAD: their response has no content.
        self._head_requests: set[int] = set()
        #: Streams given up (a stream error): nothing more is fed.
        self._given_up: set[int] = set()

    def on_stream_data(
        self, stream_id: int, data: bytes, ended: bool, events: list[HttpEvent]
    ) -> None:
        if stream_id in self._given_up:
            return
        scanner = self._scanners.get(stream_id)
        if scanner is None:
            kind = "uni" if stream_id & 2 else "request"
            scanner = FrameScanner(kind, self.limits.max_field_section_size)
            self._scanners[stream_id] = scanner
        piece = scanner.scan(data, ended)
        if piece is not None:
            for event in self._h3.handle_stream_data(stream_id, piece.data, piece.fin):
                self._translate(event, events)
        if scanner.verdict is Verdict.TOO_LARGE:
            self._too_large(
                stream_id,
                "a HEADERS frame longer than the field-section limit "
                f"({self.limits.max_field_section_size} bytes)",
                events,
            )
        elif scanner.verdict is Verdict.CONNECTION_ERROR:
            code, reason = scanner.error
            _H3Streams(self).close(code, reason)

    def _too_large(self, stream_id: int, reason: str, events: list[HttpEvent]) -> None:
        """A field section over the limits: RFC 9114 sections 4.2.2, 10.5.1.

        A server answers a request head with 431 (Request Header Fields Too
        Large) and stops reading the request; anything else (a response, or
        trailers) is a stream error H3_EXCESSIVE_LOAD.
        """
        if self.is_client or stream_id in self._heads:
            self._stream_error(stream_id, H3_EXCESSIVE_LOAD, reason, events)
            return
        self._give_up(stream_id, H3_EXCESSIVE_LOAD)
        self.send_response_head(stream_id, 431, [(b"content-length", b"0")])
        self.send_body(stream_id, b"", True)
        events.append(StreamRefused(stream_id, H3_EXCESSIVE_LOAD, reason))

    def _stream_error(
        self, stream_id: int, code: int, reason: str, events: list[HttpEvent]
    ) -> None:
        """Abandon a stream (RFC 9114 section 8): reset it, stop reading it."""
        self._give_up(stream_id, code)
        self._backlog.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.get_stream_type() & 2:
            with contextlib.suppress(Error, ValueError):  # finished, or reset
                stream.stream_reset(code)
        events.append(StreamRefused(stream_id, code, reason))

    def _give_up(self, stream_id: int, code: int) -> None:
        """Feed nothing more of ``stream_id``; STOP_SENDING with ``code``."""
        self._given_up.add(stream_id)
        self._finished_reading.add(stream_id)
        self._scanners.pop(stream_id, None)
        self._h3.discard_stream(stream_id)
        stream = self.streams.get(stream_id)
        if stream is not None:
            abort_reading(stream, code)
        self._refused.add(stream_id)  # released once what we send is out

    def on_stream_reset(
        self, stream_id: int, code: int, events: list[HttpEvent]
    ) -> None:
        self._h3.handle_stream_reset(stream_id, code)
        events.append(StreamAborted(stream_id, code))

    def on_stop_sending(self, stream_id: int, code: int) -> None:
        self._h3.handle_stop_sending(stream_id, code)

    def process(self) -> list[HttpEvent]:
        """Return HTTP events for data (and HTTP datagrams) already received."""
        events = super().process()
        conn = self.conn
        while conn.get_datagram_queue_len():
            data = conn.recv_datagram()
            for event in self._h3.handle_datagram(data):
                self._translate(event, events)
        return events

    @property
    def peer_settings(self) -> dict[int, int] | None:
        """The peer's HTTP/3 SETTINGS (identifier: value, e.g. 0x6 for
        SETTINGS_MAX_FIELD_SECTION_SIZE); None until its control stream
        delivered them."""
        return self._h3.received_settings()

    def datagrams_allowed(self) -> bool:
        """Whether HTTP datagrams (RFC 9297) may be sent: DATAGRAM frames on
        both ends (``Context.set_max_datagram_frame_size``) and both sent
        SETTINGS_H3_DATAGRAM=1 (quicconn does when DATAGRAM frames are on)."""
        return self._h3.datagrams_allowed()

    def send_datagram(self, stream_id: int, data: bytes) -> None:
        """Send an HTTP datagram (RFC 9297) for request stream ``stream_id``.

        Unreliable, like the DATAGRAM frame that carries it (never
        retransmitted); ``ValueError`` if the peer did not agree to HTTP
        datagrams, if ``stream_id`` is not a request stream, or if it does
        not fit in one DATAGRAM frame (nothing is sent then).
        """
        if not self.datagrams_allowed():
            raise ValueError(
                "HTTP datagrams need DATAGRAM frames on both ends and the peer's "
                "SETTINGS_H3_DATAGRAM=1 (not received, or not sent yet)"
            )
        if stream_id % 4 != 0:
            raise ValueError(
                f"stream {stream_id} is not a request stream (client-initiated "
                "bidirectional): HTTP datagrams belong to one"
            )
        self._h3.send_datagram(stream_id, data)

    def _translate(self, event: H3Event, events: list[HttpEvent]) -> None:
        if event.stream_id in self._given_up:
            return
        if isinstance(event, H3StreamError):
            if event.error_code == H3_EXCESSIVE_LOAD:  # QPACK stopped at the limit
                self._too_large(event.stream_id, event.reason, events)
            else:
                self._stream_error(
                    event.stream_id, event.error_code, event.reason, events
                )
            return
        if isinstance(event, H3HeadersReceived):
            self._headers(event, events)
        elif isinstance(event, H3DataReceived):
            size, ended = len(event.data), event.stream_ended
            if not self._body_fits(event.stream_id, size, ended):
                self._stream_error(
                    event.stream_id,
                    H3_MESSAGE_ERROR,
                    "the body does not match the content-length",
                    events,
                )
                return
            events.append(DataReceived(event.stream_id, event.data, event.stream_ended))
        elif isinstance(event, H3DatagramReceived):
            events.append(DatagramReceived(event.stream_id, event.data))

    def _body_fits(self, stream_id: int, size: int, ended: bool) -> bool:
        """Whether ``size`` more body bytes (and the end, if ``ended``) agree
        with the message's content-length (RFC 9114 section 4.1.2)."""
        due = self._expected.get(stream_id)
        if due is None:
            return True
        due -= size
        self._expected[stream_id] = due
        return due >= 0 and not (ended and due)

    def _expect_body(self, stream_id: int, status: int | None, fields: Headers) -> bool:
        """Note what the head's content-length promises; False if malformed."""
        lengths = {value.strip() for name, value in fields if name == b"content-length"}
        if not lengths:
            return True
        if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            return False
        bodiless = stream_id in self._head_requests or status in (204, 304)
        if not bodiless:
            self._expected[stream_id] = int(lengths.pop())
        return True

    def _headers(self, event: H3HeadersReceived, events: list[HttpEvent]) -> None:
        limits = self.limits
        fields = event.headers
        if len(fields) > limits.max_header_fields:
            self._too_large(
                event.stream_id,
                f"{len(fields)} header fields (at most {limits.max_header_fields})",
                events,
            )
            return
        size = sum(len(name) + len(value) + 32 for name, value in fields)
        if size > limits.max_field_section_size:
            self._too_large(
                event.stream_id,
                f"a {size}-byte field section (at most "
                f"{limits.max_field_section_size})",
                events,
            )
            return
        pseudo = {k: v for k, v in event.headers if k.startswith(b":")}
        regular = [(k, v) for k, v in event.headers if not k.startswith(b":")]
        if event.stream_id not in self._heads:
            problem = _message_problem(pseudo, regular, request=not self.is_client)
            if problem is not None:
                self._stream_error(event.stream_id, H3_MESSAGE_ERROR, problem, events)
                return
        sid = event.stream_id
        if sid in self._heads:
            if event.stream_ended and not self._body_fits(sid, 0, True):
                self._stream_error(
                    sid, H3_MESSAGE_ERROR, "the body is shorter than its length", events
                )
                return
            events.append(TrailersReceived(sid, regular))
            if event.stream_ended:
                events.append(DataReceived(sid, b"", True))
            return
        status: int | None = None
        if self.is_client:
            try:
                status = int(pseudo.get(b":status", b"0"))
            except ValueError:
                status = 0
            if 100 <= status < 200:
                return  # interim response: the final one follows
        if not self._expect_body(sid, status, regular) or (
            event.stream_ended and not self._body_fits(sid, 0, True)
        ):
            problem = "a content-length the body does not match"
            self._stream_error(sid, H3_MESSAGE_ERROR, problem, events)
            return
        if self.is_client:
            self._heads.add(event.stream_id)
            events.append(ResponseReceived(event.stream_id, status or 0, regular))
            if event.stream_ended:
                events.append(DataReceived(event.stream_id, b"", True))
        else:
            self._heads.add(event.stream_id)
            events.append(
                RequestReceived(
                    event.stream_id,
                    pseudo.get(b":method", b"").decode("latin-1"),
                    pseudo.get(b":path", b"").decode("latin-1"),
                    pseudo.get(b":authority", b"").decode("latin-1"),
                    regular,
                    event.stream_ended,
                )
            )

    def forget_stream_state(self, stream_id: int) -> None:
        self._heads.discard(stream_id)
        self._given_up.discard(stream_id)
        self._expected.pop(stream_id, None)
        self._head_requests.discard(stream_id)
        self._scanners.pop(stream_id, None)
        self._h3.discard_stream(stream_id)

    def send_request(
        self,
        method: str,
        authority: str,
        path: str,
        headers: Headers | None = None,
        *,
        end_stream: bool = True,
    ) -> int:
        stream = self.open_stream()
        stream_id = stream.get_stream_id()
        if method == "HEAD":
            self._head_requests.add(stream_id)
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *(headers or []),
        ]
        if not any(name == b"user-agent" for name, _ in head):
            head.append((b"user-agent", b"quicconn"))
        self._h3.send_headers(stream_id, head, end_stream=end_stream)
        return stream_id

    def send_response_head(
        self, stream_id: int, status: int, headers: Headers | None = None
    ) -> None:
        head = [
            (b":status", str(status).encode()),
            (b"server", b"quicconn"),
            *(headers or []),
        ]
        self._h3.send_headers(stream_id, head, end_stream=False)

    def send_body(self, stream_id: int, data: bytes, end: bool) -> None:
        self._h3.send_data(stream_id, data, end)

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        self._h3.send_headers(stream_id, list(headers), end_stream=True)


#: Connection-specific fields, which make an HTTP/3 message malformed
#: (RFC 9114 section 4.2).
_CONNECTION_SPECIFIC = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)


def _message_problem(
    pseudo: dict[bytes, bytes], fields: Headers, *, request: bool
) -> str | None:
    """Why a message head is malformed (RFC 9114 sections 4.2 and 4.3.1),
    or None.  Both codecs check unknown, repeated and misplaced pseudo-header
    fields, :method, :authority and :status; this adds what one of them
    lets through, so that every core refuses the same messages."""
    for name, value in fields:
        if name in _CONNECTION_SPECIFIC:
            return f"the connection-specific field {name.decode('latin-1')!r}"
        if name == b"te" and (not request or value.lower() != b"trailers"):
            return "a te field other than 'trailers' in a request"
    if not request or pseudo.get(b":method") == b"CONNECT":
        return None  # CONNECT has no :scheme or :path (section 4.4)
    if not pseudo.get(b":scheme"):
        return "the request has no :scheme"
    if not pseudo.get(b":path"):
        return "the request has no :path"
    return None


def session_for(conn: Connection, limits: HttpLimits | None = None) -> HttpSession:
    """The session matching the connection's negotiated ALPN."""
    alpn = conn.get0_alpn_selected()
    if alpn == ALPN_H3:
        return H3Session(conn, limits)
    if alpn == ALPN_HQ:
        return HqSession(conn, limits)
    raise ValueError(f"no HTTP mapping for ALPN {alpn!r} (expected h3 or hq-interop)")


__all__ = [
    "ALPN_H3",
    "ALPN_HQ",
    "H3Session",
    "HqSession",
    "HttpSession",
    "session_for",
]
