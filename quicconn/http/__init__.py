"""HTTP/3 and hq-interop on quicconn connections and streams.

* :class:`HttpClient` fetches paths from a server over one connection.
* :class:`FileServer` serves a directory over both protocols from a listener.
* :class:`H3Session` / :class:`HqSession` are the protocol layers, usable
  directly from your own event loop.
"""

from ._events import (
    DatagramReceived,
    DataReceived,
    Headers,
    HttpEvent,
    RequestReceived,
    ResponseReceived,
    StreamAborted,
)
from ._paths import resolve_request_path
from ._session import ALPN_H3, ALPN_HQ, H3Session, HqSession, HttpSession, session_for
from .client import ClientOptions, Download, HttpClient, StallError
from .server import FileServer, ServerStats

__all__ = [
    "ALPN_H3",
    "ALPN_HQ",
    "ClientOptions",
    "DataReceived",
    "DatagramReceived",
    "Download",
    "FileServer",
    "H3Session",
    "Headers",
    "HqSession",
    "HttpClient",
    "HttpEvent",
    "HttpSession",
    "RequestReceived",
    "ResponseReceived",
    "ServerStats",
    "StallError",
    "StreamAborted",
    "resolve_request_path",
    "session_for",
]
