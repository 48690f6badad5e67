"""HTTP/3 for httpx: ``httpx.Client(transport=HTTP3Transport())`` and
``httpx.AsyncClient(transport=AsyncHTTP3Transport())``.

A program that already uses httpx gets HTTP/3 by changing the line that
makes its client::

    client = httpx.Client(transport=quicconn.http.HTTP3Transport())
    client = httpx.AsyncClient(transport=quicconn.http.AsyncHTTP3Transport())

Each transport keeps one QUIC connection per ``host:port`` and sends every
request to that server over it; response bodies stream
(``client.stream(...)``), request bodies may be generators, and HTTP/3
trailers are in ``response.extensions["trailers"]`` once the body has been
read.  The two share everything but the waiting: this module's translation
of requests (:func:`h3_request_head`), timeouts and errors
(:func:`translated_errors`), and the request/response flows of
quicconn.http._exchange, which :class:`HttpClient` runs blocking and
``AsyncHttpClient`` (quicconn.http._async_client) runs on the event loop's
driver.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx

from .._errors import Error, VerificationError
from ._async_client import AsyncHttpClient
from ._events import Headers
from ._exchange import Exchange, Need, RequestError, StallError, Timeouts
from ._session import ALPN_H3
from .client import ClientOptions, HttpClient, Response

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
    """Raise quicconn's failures as the httpx exceptions callers catch.

    A stall is the timeout of the phase it happened in (connect, pool,
    write, read); a certificate that does not verify and a server that
    cannot be reached are ``ConnectError``; a reset request or a connection
    that closed under it is ``RemoteProtocolError``.
    """
    try:
        yield
    except StallError as exc:
        timeout: type[httpx.TimeoutException] = httpx.ReadTimeout
        if connecting:
            timeout = httpx.ConnectTimeout
        elif exc.need is Need.STREAM:
            timeout = httpx.PoolTimeout
        elif exc.need is Need.SEND:
            timeout = httpx.WriteTimeout
        raise timeout(str(exc), request=request) from exc
    except VerificationError as exc:
        raise httpx.ConnectError(
            f"the certificate of {request.url.host} did not verify: {exc}",
            request=request,
        ) from exc
    except RequestError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (Error, OSError) as exc:
        failure = httpx.ConnectError if connecting else httpx.ReadError
        raise failure(str(exc) or type(exc).__name__, request=request) from exc


def check_scheme(request: httpx.Request) -> None:
    """HTTP/3 is for https:// URLs only."""
    if request.url.scheme != "https":
        raise httpx.UnsupportedProtocol(
            f"HTTP/3 needs an https:// URL, not {request.url.scheme}://",
            request=request,
        )


def request_timeouts(request: httpx.Request) -> tuple[float | None, Timeouts]:
    """httpx's timeouts for ``request``: the connect timeout, and the rest."""
    limits = request.extensions.get("timeout", {})
    return limits.get("connect"), Timeouts(
        pool=limits.get("pool"), write=limits.get("write"), read=limits.get("read")
    )


def has_body(request: httpx.Request) -> bool:
    """Whether the request carries a body (httpx says so in its headers)."""
    return "content-length" in request.headers or (
        "transfer-encoding" in request.headers
    )


def response_extensions(trailers: Headers) -> dict[str, object]:
    """``response.extensions`` of an HTTP/3 response: its version, and its
    trailers (a list that fills in once the body has been read)."""
    return {"http_version": b"HTTP/3", "trailers": trailers}


def client_options(options: ClientOptions, verify: bool | str) -> ClientOptions:
    """A transport's options for one connection: HTTP/3, and ``verify``."""
    chosen = ClientOptions(**vars(options))
    chosen.alpn = ALPN_H3
    chosen.verify = verify is not False
    chosen.cafile = verify if isinstance(verify, str) else None
    return chosen


def _check_verify(verify: object) -> None:
    if not isinstance(verify, bool | str):
        raise TypeError(
            "verify must be True (the system's CAs), False (no check) or the "
            f"path of a CA file, not {type(verify).__name__}"
        )


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
    replaced).  Timeouts come from httpx: the connect timeout bounds the
    handshake, the pool timeout a wait for a free request stream, the write
    timeout a wait for the server to take more of the body, the read timeout
    a wait for the response's head or its next bytes.  Thread-safe (requests
    to one server take turns on its connection).
    """

    def __init__(
        self,
        verify: bool | str = True,
        *,
        options: ClientOptions | None = None,
    ) -> None:
        _check_verify(verify)
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
        options = client_options(self._options, self._verify)
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
        check_scheme(request)
        connect_timeout, timeouts = request_timeouts(request)
        authority, path, headers = h3_request_head(request)
        body = request.stream if has_body(request) else None
        port = request.url.port or 443
        with translated_errors(request, connecting=True):
            client = self._client_for(request.url.host, port, connect_timeout)
        with translated_errors(request, connecting=False):
            response = client.request(
                request.method,
                path,
                headers,
                body,  # type: ignore[arg-type]
                authority=authority,
                timeout=timeouts,
            )
        return httpx.Response(
            status_code=response.status or 200,
            headers=response.headers,
            stream=_ResponseStream(response, request),
            extensions=response_extensions(response.trailers),
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()


class _AsyncResponseStream(httpx.AsyncByteStream):
    def __init__(
        self,
        client: AsyncHttpClient,
        exchange: Exchange,
        request: httpx.Request,
        timeouts: Timeouts,
    ) -> None:
        self._client = client
        self._exchange = exchange
        self._request = request
        self._timeouts = timeouts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        client, exchange, timeouts = self._client, self._exchange, self._timeouts
        with translated_errors(self._request, connecting=False):
            while (chunk := await client.next_chunk(exchange, timeouts)) is not None:
                yield chunk

    async def aclose(self) -> None:
        # No await: this runs in cancelled trio scopes too, and must not fail.
        self._client.finish(self._exchange)


class AsyncHTTP3Transport(httpx.AsyncBaseTransport):
    """The asynchronous httpx transport (``httpx.AsyncClient``): HTTP/3 over
    quicconn, on asyncio (uvloop included) or trio (a quicconn extension).

    ``verify`` and ``options`` as for :class:`HTTP3Transport`, and httpx's
    timeouts the same way.  One QUIC connection per ``host:port``, made by
    the first request and shared by every request after it: requests sent
    at once (``asyncio.gather``, a trio nursery) run as concurrent streams
    of that connection, as many as the server's stream limit allows (the
    rest wait for a stream, within the pool timeout).  Request and response
    bodies stream with back-pressure; a request whose task is cancelled has
    its stream reset (H3_REQUEST_CANCELLED) and nothing else is affected.
    Use it from the loop that made its first request; ``await
    transport.aclose()`` (or closing the ``AsyncClient``) closes every
    connection.
    """

    def __init__(
        self,
        verify: bool | str = True,
        *,
        options: ClientOptions | None = None,
    ) -> None:
        _check_verify(verify)
        self._options = client_options(options or ClientOptions(), verify)
        if self._options.early_data:
            raise ValueError(
                "AsyncHTTP3Transport does not send 0-RTT requests "
                "(options.early_data); resumption with options.session works"
            )
        self._clients: dict[tuple[str, int], AsyncHttpClient] = {}
        self._closed = False

    def _client_for(self, host: str, port: int) -> AsyncHttpClient:
        client = self._clients.get((host, port))
        if client is not None:
            if not client.closed and client.in_own_loop():
                return client
            # Closed, or made in another event loop (an earlier asyncio.run),
            # which cannot drive it from this one.
            client.abort()
        client = AsyncHttpClient(host, port, self._options)
        self._clients[(host, port)] = client
        return client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_scheme(request)
        if self._closed:
            raise RuntimeError("the AsyncHTTP3Transport was closed")
        connect_timeout, timeouts = request_timeouts(request)
        authority, path, headers = h3_request_head(request)
        body = None
        if has_body(request):
            if not isinstance(request.stream, httpx.AsyncByteStream):
                raise TypeError(
                    "AsyncHTTP3Transport needs an asynchronous request body "
                    "(httpx.AsyncClient gives one)"
                )
            body = aiter(request.stream)
        port = request.url.port or 443
        with translated_errors(request, connecting=True):
            client = self._client_for(request.url.host, port)
            await client.connect(connect_timeout)
        with translated_errors(request, connecting=False):
            exchange = await client.request(
                request.method,
                path,
                headers,
                body,
                authority=authority,
                timeouts=timeouts,
            )
        return httpx.Response(
            status_code=exchange.status or 200,
            headers=exchange.headers,
            stream=_AsyncResponseStream(client, exchange, request, timeouts),
            extensions=response_extensions(exchange.trailers),
        )

    async def aclose(self) -> None:
        """Close every connection gracefully (their requests fail)."""
        self._closed = True
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


__all__ = [
    "HOP_BY_HOP",
    "AsyncHTTP3Transport",
    "HTTP3Transport",
    "check_scheme",
    "client_options",
    "h3_request_head",
    "has_body",
    "request_timeouts",
    "response_extensions",
    "translated_errors",
]
