"""HTTP/3 for httpx: ``httpx.Client(transport=HTTP3Transport())``.

A program that already uses httpx gets HTTP/3 by changing the line that
makes its client::

    client = httpx.Client(transport=quicconn.http.HTTP3Transport())

The transport keeps one QUIC connection (an :class:`HttpClient`) per
``host:port`` and sends every request to that server over it; response
bodies stream (``client.stream(...)``, ``iter_bytes()``), request bodies may
be generators, and HTTP/3 trailers are in ``response.extensions["trailers"]``
once the body has been read.

The asynchronous transport (``httpx.AsyncClient``) belongs on
``quicconn.asyncio`` (issue 14): it will drive the same
:class:`~quicconn.http.HttpSession` and
:class:`~quicconn.http.ExchangeRouter` from the event loop, and share this
module's translation of requests (:func:`h3_request_head`) and errors
(:func:`translated_errors`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from .._errors import Error, VerificationError
from ._events import Headers
from ._exchange import RequestError
from ._session import ALPN_H3
from .client import ClientOptions, HttpClient, Response, StallError

#: Connection-specific fields that HTTP/3 forbids (RFC 9114 section 4.2);
#: ``host`` travels as ``:authority``.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"host",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    }
)


def h3_request_head(request: httpx.Request) -> tuple[str, str, Headers]:
    """``(authority, path, headers)`` of an httpx request, for HTTP/3.

    Field names are lower-cased and connection-specific fields dropped; a
    ``te`` field survives only as ``te: trailers``.
    """
    url = request.url
    host = url.host
    if ":" in host:
        host = f"[{host}]"
    authority = host if url.port in (None, 443) else f"{host}:{url.port}"
    path = url.raw_path.decode("ascii")
    headers: Headers = []
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            continue
        if lower == b"te" and value.strip().lower() != b"trailers":
            continue
        headers.append((lower, value))
    return authority, path, headers


@contextmanager
def translated_errors(request: httpx.Request, connecting: bool) -> Iterator[None]:
    """Raise quicconn's failures as the httpx exceptions callers catch."""
    try:
        yield
    except StallError as exc:
        timeout = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        raise timeout(str(exc), request=request) from exc
    except VerificationError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except RequestError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (Error, OSError) as exc:
        failure = httpx.ConnectError if connecting else httpx.ReadError
        raise failure(str(exc), request=request) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with translated_errors(self._request, connecting=False):
            yield from self._response.iter_bytes()

    def close(self) -> None:
        self._response.close()


class HTTP3Transport(httpx.BaseTransport):
    """An httpx transport that speaks HTTP/3 over quicconn (a quicconn extension).

    ``verify`` is True (the system's CAs), False (no certificate check) or
    the path of a CA file; ``options`` sets anything else an
    :class:`HttpClient` takes (its ``alpn``, ``cafile`` and ``verify`` are
    replaced).  Timeouts come from httpx: the read timeout is the time the
    server may stay silent, the connect timeout bounds the handshake.
    Thread-safe (requests to one server take turns on its connection).
    """

    def __init__(
        self,
        verify: bool | str = True,
        *,
        options: ClientOptions | None = None,
    ) -> None:
        self._verify = verify
        self._options = options or ClientOptions()
        self._clients: dict[tuple[str, int], HttpClient] = {}
        self._lock = threading.Lock()

    def _client_for(self, host: str, port: int, timeout: float | None) -> HttpClient:
        with self._lock:
            return self._connected(host, port, timeout)

    def _connected(self, host: str, port: int, timeout: float | None) -> HttpClient:
        client = self._clients.get((host, port))
        if client is not None and not client.closed:
            return client
        if client is not None:
            client.close(timeout=0)
        options = ClientOptions(**vars(self._options))
        options.alpn = ALPN_H3
        options.verify = self._verify is not False
        options.cafile = self._verify if isinstance(self._verify, str) else None
        if timeout is not None:
            options.stall_timeout = timeout
        client = HttpClient(host, port, options)
        try:
            client.connect()
        except BaseException:
            client.close(timeout=0)
            raise
        self._clients[(host, port)] = client
        return client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            raise httpx.UnsupportedProtocol(
                f"HTTP/3 needs an https:// URL, not {request.url.scheme}://",
                request=request,
            )
        timeouts = request.extensions.get("timeout", {})
        authority, path, headers = h3_request_head(request)
        body = None
        if "content-length" in request.headers or (
            "transfer-encoding" in request.headers
        ):
            body = request.stream
        port = request.url.port or 443
        with translated_errors(request, connecting=True):
            client = self._client_for(request.url.host, port, timeouts.get("connect"))
        with translated_errors(request, connecting=False):
            response = client.request(
                request.method,
                path,
                headers,
                body,  # type: ignore[arg-type]
                authority=authority,
                timeout=timeouts.get("read"),
            )
        return httpx.Response(
            status_code=response.status or 200,
            headers=response.headers,
            stream=_ResponseStream(response, request),
            extensions={"http_version": b"HTTP/3", "trailers": response.trailers},
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()


__all__ = [
    "HOP_BY_HOP",
    "HTTP3Transport",
    "h3_request_head",
    "translated_errors",
]
