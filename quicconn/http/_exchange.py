"""Requests in flight, and the one request/response logic of every client.

An :class:`Exchange` is one request's response as it arrives (head, body
chunks, trailers, end or failure); an :class:`ExchangeRouter` applies a
session's HTTP events to the exchanges they belong to.

What a client does with them (wait for a request stream under the server's
stream limit, send the head, feed the body with back-pressure, wait for the
response's head, hand out body chunks, cancel what is abandoned) is written
once, sans I/O, as *flows*: generators that do everything that needs no
waiting and ``yield`` a :class:`Wait` saying what they wait for.  Whoever
runs a flow does the waiting its own way and resumes it:

* the blocking :class:`~quicconn.http.HttpClient` ticks the connection and
  sleeps in ``selectors``;
* the asynchronous client under ``AsyncHTTP3Transport`` awaits the event
  loop's driver (``quicconn.asyncio`` or ``quicconn.trio``).

A flow that wants the next chunk of the request body yields
``Wait(Need.BODY)`` and is resumed with the chunk (None at the end), so a
synchronous iterable and an asynchronous one feed the same code.  Closing a
flow (``flow.close()``: the runner's wait was cancelled, timed out, or the
body raised) cancels its unfinished request: the stream is reset and
nothing else is touched.  :class:`WaitTimer` applies the per-phase
:class:`Timeouts` to the waits.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from .._errors import ConnCloseInfo
from ._events import (
    DataReceived,
    Headers,
    HttpEvent,
    ResponseReceived,
    StreamAborted,
    StreamRefused,
    TrailersReceived,
)
from ._session import H3Session, HttpSession

T = TypeVar("T")

#: H3_REQUEST_CANCELLED (RFC 9114 section 8.1): a response nobody reads.
H3_REQUEST_CANCELLED = 0x10C

#: A request body is written ahead of the stream by at most this much.
SEND_AHEAD = 256 * 1024

#: A pulled body (``Response.iter_bytes``) stops reading its stream when this
#: much is buffered and unread (QUIC flow control then holds the server back)
#: and resumes below :data:`RESUME_BELOW`.
PAUSE_ABOVE = 1024 * 1024
RESUME_BELOW = 256 * 1024


class StallError(TimeoutError):
    """The server sent nothing for longer than the stall timeout.

    ``need`` says what the request was waiting for (a :class:`Need`; None
    for the handshake and for :meth:`~quicconn.http.HttpClient.fetch`).
    """

    def __init__(self, message: str, need: Need | None = None) -> None:
        super().__init__(message)
        self.need = need


class RequestError(Exception):
    """A request failed after it was sent: the server reset its stream, or
    the connection closed before the response was complete.

    ``error_code`` is the HTTP/3 (or QUIC) error code, when there is one.
    """

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


#: HTTP/3's error codes (RFC 9114 section 8.1), for messages.
H3_ERROR_NAMES = {
    0x100: "H3_NO_ERROR",
    0x101: "H3_GENERAL_PROTOCOL_ERROR",
    0x102: "H3_INTERNAL_ERROR",
    0x103: "H3_STREAM_CREATION_ERROR",
    0x104: "H3_CLOSED_CRITICAL_STREAM",
    0x105: "H3_FRAME_UNEXPECTED",
    0x106: "H3_FRAME_ERROR",
    0x107: "H3_EXCESSIVE_LOAD",
    0x108: "H3_ID_ERROR",
    0x109: "H3_SETTINGS_ERROR",
    0x10A: "H3_MISSING_SETTINGS",
    0x10B: "H3_REQUEST_REJECTED",
    0x10C: "H3_REQUEST_CANCELLED",
    0x10D: "H3_REQUEST_INCOMPLETE",
    0x10E: "H3_MESSAGE_ERROR",
    0x10F: "H3_CONNECT_ERROR",
    0x110: "H3_VERSION_FALLBACK",
}


def describe_h3_error(code: int) -> str:
    """``"H3_REQUEST_REJECTED, 0x10b"`` (or just the number if unnamed)."""
    name = H3_ERROR_NAMES.get(code)
    return f"{name}, 0x{code:x}" if name else f"error 0x{code:x}"


def describe_close(close: ConnCloseInfo) -> str:
    """How a connection closed, with the HTTP/3 name of an application
    error code (``closed by the peer with application error 0x10c
    (H3_REQUEST_CANCELLED)``)."""
    name = None if close.is_transport else H3_ERROR_NAMES.get(close.error_code)
    return f"{close} ({name})" if name else str(close)


class Exchange:
    """One request's response, as far as it has arrived.

    ``listener``, if set, is called with each event once it is applied, and
    with None when the exchange fails without one (the connection closed);
    the download path writes bodies to files from it.  Without a listener,
    body chunks queue in :attr:`chunks` until the consumer takes them.
    """

    def __init__(
        self,
        stream_id: int,
        *,
        has_head: bool = True,
        listener: Callable[[Exchange, HttpEvent | None], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        #: hq-interop responses have no head: status and headers stay None/[].
        self.has_head = has_head
        self.status: int | None = None
        self.headers: Headers = []
        self.head_received = not has_head
        self.trailers: Headers = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        self.ended = False
        self.error: RequestError | None = None
        self.paused = False
        self.listener = listener

    @property
    def finished(self) -> bool:
        """The response ended or failed: nothing more will arrive."""
        return self.ended or self.error is not None

    def apply(self, event: HttpEvent) -> None:
        if isinstance(event, ResponseReceived):
            self.status = event.status
            self.headers = list(event.headers)
            self.head_received = True
        elif isinstance(event, TrailersReceived):
            self.trailers.extend(event.headers)  # in place: callers hold it
        elif isinstance(event, DataReceived):
            if event.data:
                self.received += len(event.data)
                if self.listener is None:
                    self.chunks.append(event.data)
                    self.buffered += len(event.data)
            if event.ended:
                self.ended = True
        elif isinstance(event, StreamAborted):
            self.fail(
                RequestError(
                    "stream reset by the server "
                    f"({describe_h3_error(event.error_code)})",
                    event.error_code,
                )
            )
        elif isinstance(event, StreamRefused):
            self.fail(
                RequestError(
                    f"response refused: {event.reason} (error 0x{event.error_code:x})",
                    event.error_code,
                )
            )
        if self.listener is not None:
            self.listener(self, event)

    def fail(self, error: RequestError) -> None:
        if not self.finished:
            self.error = error

    def take(self) -> bytes:
        """The oldest buffered body chunk (the caller checked there is one)."""
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        return chunk


class ExchangeRouter:
    """The exchanges of one session, and the routing of its events to them."""

    def __init__(self, session: HttpSession) -> None:
        self.session = session
        self.active: dict[int, Exchange] = {}
        #: Why the connection is gone, once it is (new requests fail with it).
        self.closed_reason: str | None = None
        #: A paused stream was resumed: its buffered data is only turned
        #: into events by the next ``session.process()``, which a runner
        #: driven by connection progress must then call itself.
        self.wants_processing = False

    def add(self, exchange: Exchange) -> Exchange:
        self.active[exchange.stream_id] = exchange
        return exchange

    def update(self, events: list[HttpEvent]) -> set[Exchange]:
        """Apply a session's events and notice a closed connection; the
        exchanges that moved (got events, or failed)."""
        moved = self.dispatch(events)
        if self.closed_reason is None:
            close = self.session.conn.get_conn_close_info()
            if close is not None:
                moved |= self.connection_closed(describe_close(close))
        return moved

    def dispatch(self, events: list[HttpEvent]) -> set[Exchange]:
        """Apply ``events``; the exchanges they belonged to."""
        moved: set[Exchange] = set()
        for event in events:
            exchange = self.active.get(event.stream_id)
            if exchange is None:
                continue
            moved.add(exchange)
            exchange.apply(event)
            if (
                exchange.listener is None
                and not exchange.paused
                and exchange.buffered > PAUSE_ABOVE
            ):
                exchange.paused = True
                self.session.pause_reading(exchange.stream_id)
            if exchange.finished and exchange.listener is not None:
                self.release(exchange)
        return moved

    def consumed(self, exchange: Exchange) -> None:
        """The consumer took chunks: resume reading below the low mark."""
        if exchange.paused and exchange.buffered < RESUME_BELOW:
            exchange.paused = False
            self.session.pause_reading(exchange.stream_id, False)
            self.wants_processing = True

    def release(self, exchange: Exchange) -> None:
        """Forget a finished exchange's stream (its unsent output still goes)."""
        if self.active.pop(exchange.stream_id, None) is not None:
            self.session.forget(exchange.stream_id)

    def cancel(self, exchange: Exchange, error_code: int) -> None:
        """Abandon an unfinished exchange: reset its stream."""
        if self.active.pop(exchange.stream_id, None) is not None:
            self.session.cancel(exchange.stream_id, error_code)
        exchange.fail(RequestError("the request was cancelled", error_code))

    def finish(self, exchange: Exchange) -> bool:
        """The consumer is done with a response: release its stream, or
        cancel the request (H3_REQUEST_CANCELLED) if the body is unfinished.
        Whether a reset was queued (the caller sends it soon)."""
        if exchange.finished:
            self.release(exchange)
            return False
        self.cancel(exchange, H3_REQUEST_CANCELLED)
        return self.closed_reason is None

    def connection_closed(self, reason: str) -> set[Exchange]:
        """The connection is gone: every unfinished exchange failed (they
        are returned)."""
        if self.closed_reason is None:
            self.closed_reason = f"connection {reason}"
        failed = set(self.active.values())
        for exchange in failed:
            exchange.fail(RequestError(self.closed_reason))
            if exchange.listener is not None:
                exchange.listener(exchange, None)
        self.active.clear()
        return failed

    def check_open(self) -> None:
        """Raise :class:`RequestError` if the connection is gone."""
        if self.closed_reason is not None:
            raise RequestError(self.closed_reason)
        close = self.session.conn.get_conn_close_info()
        if close is not None:
            raise RequestError(f"connection {describe_close(close)}")


# -- flows: the request/response logic, sans I/O --------------------------------


class Need(enum.Enum):
    """What a flow waits for; each has its own timeout (:class:`Timeouts`)."""

    #: A request stream: the server's limit on concurrent streams is reached.
    STREAM = "stream"
    #: Room for more of the request body (QUIC flow control).
    SEND = "send"
    #: The response's head, or more of its body.
    RESPONSE = "response"
    #: The next chunk of the request body, from the caller (no timeout).
    BODY = "body"


@dataclass(frozen=True, slots=True)
class Wait:
    """What a flow yields: it can go on once ``need`` is met."""

    need: Need
    #: The exchange whose events end the wait; None: any progress of the
    #: connection (stream credit, flow-control credit) may.
    exchange: Exchange | None = None
    #: Changes when the flow made progress within one need (the bytes still
    #: to send): the need's timeout then starts again.
    mark: int = 0


#: A flow: yields waits, is resumed with None (or, after ``Need.BODY``, the
#: next body chunk, None at the end), returns its result.
Flow = Generator[Wait, bytes | None, T]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a request may wait for each thing, in seconds (None: no
    limit); httpx's pool, write and read timeouts.  A quicconn extension.

    Each limit counts from the moment the request started waiting for that
    thing (and again whenever the request body moved on), not from the
    start of the request.
    """

    #: A free request stream, when the server's stream limit is reached.
    pool: float | None = None
    #: The server taking more of the request body.
    write: float | None = None
    #: The response's head, and each next piece of its body.
    read: float | None = None

    @classmethod
    def every(cls, seconds: float | None) -> Timeouts:
        """The same limit for everything."""
        return cls(seconds, seconds, seconds)

    def of(self, need: Need) -> float | None:
        if need is Need.STREAM:
            return self.pool
        if need is Need.SEND:
            return self.write
        if need is Need.RESPONSE:
            return self.read
        return None


class WaitTimer:
    """Applies :class:`Timeouts` to the waits of one flow run.

    :meth:`remaining` is called with every wait before the runner sleeps;
    the time counts from the first of a run of equal waits.
    """

    def __init__(
        self,
        timeouts: Timeouts,
        peer: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeouts = timeouts
        self.peer = peer
        self._clock = clock
        self._last: Wait | None = None
        self._since = 0.0

    def remaining(self, wait: Wait) -> float | None:
        """Seconds the runner may sleep for ``wait`` (None: no limit);
        raises :class:`StallError` once its timeout has passed."""
        now = self._clock()
        if wait != self._last:
            self._last = wait
            self._since = now
        limit = self.timeouts.of(wait.need)
        if limit is None:
            return None
        left = limit - (now - self._since)
        if left <= 0:
            raise StallError(self._message(wait.need, limit), wait.need)
        return left

    def _message(self, need: Need, limit: float) -> str:
        if need is Need.STREAM:
            return (
                f"no request stream free on the connection to {self.peer} for "
                f"{limit:g} s (the server's limit on concurrent requests)"
            )
        if need is Need.SEND:
            return (
                f"{self.peer} took none of the request body for {limit:g} s "
                "(its flow control held the upload back)"
            )
        return (
            f"no response from {self.peer} for {limit:g} s "
            "(the server stalled or is unreachable)"
        )


def request_flow(
    router: ExchangeRouter,
    method: str,
    authority: str,
    path: str,
    headers: Headers,
    *,
    with_body: bool,
    trailers: Headers | None = None,
) -> Flow[Exchange]:
    """Send one request; return its exchange once the response's head has
    arrived.

    With ``with_body`` the body is asked for chunk by chunk
    (``Wait(Need.BODY)``) and written at most :data:`SEND_AHEAD` ahead of
    what the stream took; ``trailers`` follow it.  The rest of a body is not
    sent once the server answered or reset the request.  Closed before it
    returns, the flow cancels its request.
    """
    session = router.session
    h3 = isinstance(session, H3Session)
    if not h3 and (with_body or trailers or headers):
        raise ValueError(
            "hq-interop requests are a bare GET: no headers, body or trailers"
        )
    router.check_open()
    while not session.can_open_request():
        yield Wait(Need.STREAM)
        router.check_open()
    with_body = with_body or bool(trailers)
    stream_id = session.send_request(
        method.upper(), authority, path, list(headers), end_stream=not with_body
    )
    exchange = router.add(Exchange(stream_id, has_head=h3))
    try:
        if with_body:
            yield from _send_body(router, exchange, trailers)
        while not exchange.head_received and not exchange.finished:
            yield Wait(Need.RESPONSE, exchange)
    except BaseException:  # closed (GeneratorExit), or the body failed
        router.cancel(exchange, H3_REQUEST_CANCELLED)
        raise
    if exchange.error is not None and not exchange.head_received:
        router.release(exchange)
        raise exchange.error
    return exchange


def _send_body(
    router: ExchangeRouter, exchange: Exchange, trailers: Headers | None
) -> Flow[None]:
    session = router.session
    stream_id = exchange.stream_id
    while not exchange.finished:
        chunk = yield Wait(Need.BODY)
        if chunk is None:
            break
        if exchange.finished:
            return  # answered or reset already: the rest is not wanted
        if chunk:
            session.send_body(stream_id, bytes(chunk), False)
        while (left := session.backlog(stream_id)) > SEND_AHEAD:
            if exchange.finished:
                return
            yield Wait(Need.SEND, mark=left)
    if exchange.finished:
        return
    if trailers:
        session.send_trailers(stream_id, list(trailers))
    else:
        session.send_body(stream_id, b"", True)


def chunk_flow(router: ExchangeRouter, exchange: Exchange) -> Flow[bytes | None]:
    """The next chunk of a response's body; None at its end.

    Raises the exchange's error (a reset, a closed connection).  The stream
    is released at the end or the failure; closed while waiting, the flow
    takes nothing (the next call gets the data).
    """
    while True:
        if exchange.chunks:
            chunk = exchange.take()
            router.consumed(exchange)
            return chunk
        if exchange.error is not None:
            router.release(exchange)
            raise exchange.error
        if exchange.ended:
            router.release(exchange)
            return None
        yield Wait(Need.RESPONSE, exchange)


__all__ = [
    "H3_ERROR_NAMES",
    "H3_REQUEST_CANCELLED",
    "PAUSE_ABOVE",
    "RESUME_BELOW",
    "SEND_AHEAD",
    "Exchange",
    "ExchangeRouter",
    "Flow",
    "Need",
    "RequestError",
    "StallError",
    "Timeouts",
    "Wait",
    "WaitTimer",
    "chunk_flow",
    "describe_close",
    "describe_h3_error",
    "request_flow",
]
