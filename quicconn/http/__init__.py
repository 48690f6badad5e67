"""HTTP/3 and hq-interop on quicconn connections and streams.

A quicconn extension: OpenSSL leaves HTTP to nghttp3 and its callers.

* :class:`HttpClient` talks to one server over one connection: any request
  (:meth:`HttpClient.request`, a :class:`Response` with status, headers, a
  streamed body and trailers) or many downloads at once
  (:meth:`HttpClient.fetch`).
* :class:`HTTP3Transport` and :class:`AsyncHTTP3Transport` give httpx
  HTTP/3: ``httpx.Client(transport=quicconn.http.HTTP3Transport())``,
  ``httpx.AsyncClient(transport=quicconn.http.AsyncHTTP3Transport())`` on
  asyncio or trio (needs httpx: ``pip install 'quicconn[httpx]'``).
* :class:`FileServer` serves a directory over both protocols from a listener.
* :class:`H3Session` / :class:`HqSession` are the protocol layers, usable
  directly from your own event loop.
"""

from typing import TYPE_CHECKING

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
from ._exchange import Exchange, ExchangeRouter, RequestError, Timeouts
from ._limits import HttpLimits, ServerLimits
from ._paths import local_path, resolve_request_path
from ._session import ALPN_H3, ALPN_HQ, H3Session, HqSession, HttpSession, session_for
from .client import (
    ClientOptions,
    Download,
    HttpClient,
    ProgressCallback,
    Response,
    StallError,
    content_length,
)
from .server import FileServer, ServerStats

if TYPE_CHECKING:
    from .transport import AsyncHTTP3Transport, HTTP3Transport


def __getattr__(name: str) -> object:
    # The httpx transports are imported on first use, so that quicconn.http
    # works without httpx installed.
    if name in ("HTTP3Transport", "AsyncHTTP3Transport"):
        from . import transport

        return getattr(transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALPN_H3",
    "ALPN_HQ",
    "AsyncHTTP3Transport",
    "ClientOptions",
    "DataReceived",
    "DatagramReceived",
    "Download",
    "Exchange",
    "ExchangeRouter",
    "FileServer",
    "H3Session",
    "HTTP3Transport",
    "Headers",
    "HqSession",
    "HttpClient",
    "HttpEvent",
    "HttpLimits",
    "HttpSession",
    "ProgressCallback",
    "RequestError",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "ServerLimits",
    "ServerStats",
    "StallError",
    "StreamAborted",
    "StreamRefused",
    "Timeouts",
    "TrailersReceived",
    "content_length",
    "local_path",
    "resolve_request_path",
    "session_for",
]
