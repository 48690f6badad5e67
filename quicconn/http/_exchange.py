"""Requests in flight: what has arrived for each, whatever drives the socket.

An :class:`Exchange` is one request's response as it arrives (head, body
chunks, trailers, end or failure); an :class:`ExchangeRouter` applies a
session's HTTP events to the exchanges they belong to.  Neither waits or
touches a socket: the blocking :class:`~quicconn.http.HttpClient` drives
them with ``selectors``, and an asyncio client (issue 14's
``quicconn.asyncio``) can drive the very same objects from its event loop,
awaiting the connection's descriptor instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ._events import (
    DataReceived,
    Headers,
    HttpEvent,
    ResponseReceived,
    StreamAborted,
    StreamRefused,
    TrailersReceived,
)
from ._session import HttpSession

#: A pulled body (``Response.iter_bytes``) stops reading its stream when this
#: much is buffered and unread (QUIC flow control then holds the server back)
#: and resumes below :data:`RESUME_BELOW`.
PAUSE_ABOVE = 1024 * 1024
RESUME_BELOW = 256 * 1024


class RequestError(Exception):
    """A request failed after it was sent: the server reset its stream, or
    the connection closed before the response was complete.

    ``error_code`` is the HTTP/3 (or QUIC) error code, when there is one.
    """

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


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
                    f"stream reset by the server (error 0x{event.error_code:x})",
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

    def add(self, exchange: Exchange) -> Exchange:
        self.active[exchange.stream_id] = exchange
        return exchange

    def dispatch(self, events: list[HttpEvent]) -> bool:
        """Apply ``events``; whether any belonged to an exchange."""
        moved = False
        for event in events:
            exchange = self.active.get(event.stream_id)
            if exchange is None:
                continue
            moved = True
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

    def release(self, exchange: Exchange) -> None:
        """Forget a finished exchange's stream (its unsent output still goes)."""
        if self.active.pop(exchange.stream_id, None) is not None:
            self.session.forget(exchange.stream_id)

    def cancel(self, exchange: Exchange, error_code: int) -> None:
        """Abandon an unfinished exchange: reset its stream."""
        if self.active.pop(exchange.stream_id, None) is not None:
            self.session.cancel(exchange.stream_id, error_code)
        exchange.fail(RequestError("the request was cancelled", error_code))

    def connection_closed(self, reason: str) -> None:
        """The connection is gone: every unfinished exchange failed."""
        for exchange in list(self.active.values()):
            exchange.fail(RequestError(f"connection {reason}"))
            if exchange.listener is not None:
                exchange.listener(exchange, None)
        self.active.clear()


__all__ = [
    "PAUSE_ABOVE",
    "RESUME_BELOW",
    "Exchange",
    "ExchangeRouter",
    "RequestError",
]
