"""HTTP events a session reports, the same for HTTP/3 and hq-interop."""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Server side: a request's head arrived on ``stream_id``."""

    stream_id: int
    method: str
    path: str
    authority: str
    headers: Headers
    ended: bool


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Client side: a final response's head arrived (HTTP/3 only; hq has none).

    Interim (1xx) responses are not reported.
    """

    stream_id: int
    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class TrailersReceived:
    """A HEADERS section after the body (HTTP/3 trailers, RFC 9114 4.1).

    It ends the message: a :class:`DataReceived` with ``ended`` follows.
    """

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes on ``stream_id``; ``ended`` once the peer sent FIN."""

    stream_id: int
    data: bytes
    ended: bool


@dataclass(frozen=True, slots=True)
class StreamAborted:
    """The peer reset ``stream_id`` (or refused to read it)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StreamRefused:
    """This side gave up ``stream_id``: the peer's message was malformed
    (RFC 9114 section 4.1.2: ``error_code`` H3_MESSAGE_ERROR) or broke a
    limit (H3_EXCESSIVE_LOAD; a server answered 431 first).  The session
    has reset the stream and stopped reading it, and releases it itself."""

    stream_id: int
    error_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """An HTTP Datagram (RFC 9297) for the request stream ``stream_id``
    (HTTP/3 only; unreliable: see docs/datagrams.md)."""

    stream_id: int
    data: bytes


HttpEvent = (
    RequestReceived
    | ResponseReceived
    | TrailersReceived
    | DataReceived
    | StreamAborted
    | StreamRefused
    | DatagramReceived
)


__all__ = [
    "DataReceived",
    "DatagramReceived",
    "Headers",
    "HttpEvent",
    "RequestReceived",
    "ResponseReceived",
    "StreamAborted",
    "StreamRefused",
    "TrailersReceived",
]
