"""Requests to one server over one QUIC connection, from asyncio or trio tasks.

:class:`AsyncHttpClient` is what :class:`~quicconn.http.AsyncHTTP3Transport`
keeps per origin.  It runs the request/response flows that
:class:`~quicconn.http.HttpClient` runs (quicconn.http._exchange), awaiting
the event loop's driver where the blocking client sleeps in ``selectors``:

* the connection is driven by the driver of ``quicconn.asyncio`` or
  ``quicconn.trio`` (one per socket: the descriptor watched once, one
  timer), in explicit event-handling mode;
* after every tick that moved the connection, one watcher turns what arrived
  into HTTP events and routes them to the exchanges, and wakes the tasks
  waiting on those exchanges only: fifty requests in flight cost one pass
  per tick, not fifty;
* a task waits on its exchange (response head, body) or on the connection
  (a free request stream, room for its upload), with the phase's timeout.

Any number of tasks may send requests at once; each is a stream of the one
connection.  Writes are batched: what the tasks of one loop iteration write
goes out in one send pass.
"""

from __future__ import annotations

import asyncio
import math
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

from .._constants import SHUTDOWN_FLAG_NO_BLOCK
from .._errors import Error, WantReadError, WantWriteError
from .._objects.connection import Connection, batched_output, progress_key
from .._objects.convenience import client_connection
from .._objects.loop_driver import LoopDriver
from .._objects.surface import events_reactor
from .._quic.reactor import Reactor
from ..asyncio._connection import prepare
from ._events import Headers
from ._exchange import (
    Exchange,
    ExchangeRouter,
    Flow,
    Need,
    RequestError,
    StallError,
    Timeouts,
    WaitTimer,
    chunk_flow,
    request_flow,
)
from ._session import ALPN_H3, H3Session, HqSession, HttpSession
from .client import ClientOptions, http_context

T = TypeVar("T")

#: How long :meth:`AsyncHttpClient.aclose` waits for a graceful close.
CLOSE_TIMEOUT = 2.0


class _Event(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> object: ...


class EventLoop:
    """What differs between asyncio and trio, for the client."""

    name = ""

    def token(self) -> object:
        """Identifies the running loop (a client is used from one)."""
        raise NotImplementedError

    def driver_for(self, reactor: Reactor | None) -> LoopDriver:
        raise NotImplementedError

    async def getaddrinfo(self, host: str, port: int, timeout: float | None) -> Any:
        """``getaddrinfo`` for UDP; TimeoutError after ``timeout`` seconds."""
        raise NotImplementedError

    def event(self) -> _Event:
        raise NotImplementedError


class _Asyncio(EventLoop):
    name = "asyncio"

    def token(self) -> object:
        return asyncio.get_running_loop()

    def driver_for(self, reactor: Reactor | None) -> LoopDriver:
        from ..asyncio._driver import driver_for

        return driver_for(reactor)

    async def getaddrinfo(self, host: str, port: int, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            return await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)

    def event(self) -> _Event:
        return asyncio.Event()


class _Trio(EventLoop):
    name = "trio"

    def token(self) -> object:
        import trio

        return trio.lowlevel.current_trio_token()

    def driver_for(self, reactor: Reactor | None) -> LoopDriver:
        from ..trio._driver import driver_for

        return driver_for(reactor)

    async def getaddrinfo(self, host: str, port: int, timeout: float | None) -> Any:
        import trio

        try:
            with trio.fail_after(math.inf if timeout is None else timeout):
                return await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except trio.TooSlowError:
            raise TimeoutError from None

    def event(self) -> _Event:
        import trio

        return trio.Event()


def current_loop() -> EventLoop:
    """The event loop this task runs in: asyncio (uvloop included) or trio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return _Asyncio()
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            return _Trio()
    raise RuntimeError(
        "quicconn's asynchronous HTTP/3 client runs in an asyncio (or uvloop) "
        "or trio task; no running event loop was found"
    )


class AsyncHttpClient:
    """Requests to one server over one QUIC connection, from the tasks of
    one asyncio or trio run.  Internal: :class:`AsyncHTTP3Transport` is the
    public face.  Create it inside the loop; :meth:`connect` is shared by
    every task that needs the connection (one handshake)."""

    def __init__(self, host: str, port: int, options: ClientOptions) -> None:
        self.host = host
        self.port = port
        self.options = options
        self.loop = current_loop()
        self.loop_token = self.loop.token()
        self._context = http_context(options)  # configuration errors: now
        self.quic: Connection | None = None
        self.session: HttpSession | None = None
        self._router: ExchangeRouter | None = None
        self._driver: LoopDriver | None = None
        self._batching: Any = None
        self._opening: _Event | None = None
        self._open_failure: str | None = None
        self._handshaking = 0
        self._closed = False

    def in_own_loop(self) -> bool:
        """Whether this task runs in the event loop the client was made in."""
        try:
            return current_loop().token() is self.loop_token
        except RuntimeError:
            return False

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port != 443 else host

    @property
    def closed(self) -> bool:
        """Closed, failed, or closing: no new request should come here."""
        if self._closed:
            return True
        router = self._router
        if router is not None and router.closed_reason is not None:
            return True
        quic = self.quic
        return quic is not None and quic.get_conn_close_info() is not None

    # -- connecting -------------------------------------------------------------

    async def connect(self, timeout: float | None) -> None:
        """Open the connection and complete its handshake, or join a task
        that is doing so.  ``timeout`` bounds this task's wait (name
        resolution and handshake)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.quic is None:
            self._check_usable()
            if self._opening is None:
                self._opening = self.loop.event()
                try:
                    await self._open(timeout)
                finally:
                    self._opening.set()
                    self._opening = None
            else:
                await self._opening.wait()
        if self._router is None:
            await self._handshake(timeout, deadline)

    def _check_usable(self) -> None:
        if self._open_failure is not None:
            raise ConnectionError(self._open_failure)
        if self._closed:
            raise RequestError(f"the connection to {self.peer} was closed")

    async def _open(self, timeout: float | None) -> None:
        name = self.options.server_name or self.host
        try:
            infos = await self.loop.getaddrinfo(self.host, self.port, timeout)
        except socket.gaierror as exc:
            self._open_failure = f"cannot resolve {self.host!r}: {exc.strerror}"
            raise ConnectionError(self._open_failure) from exc
        except TimeoutError:
            raise StallError(
                f"resolving {self.host!r} took longer than {timeout:g} s"
            ) from None
        if self._closed:
            return
        quic = client_connection(self._context, name, infos)
        try:
            if self.options.session is not None:
                quic.set_session(self.options.session)
            prepare(quic)  # nonblocking, explicit event handling
            self._driver = self.loop.driver_for(events_reactor(quic))
        except BaseException:
            quic.free()
            raise
        # What the tasks of one loop iteration write goes out in one send
        # pass, when the driver next dispatches.
        self._batching = batched_output(quic)
        self._batching.__enter__()
        self.quic = quic

    async def _handshake(self, timeout: float | None, deadline: float | None) -> None:
        quic, driver = self.quic, self._driver
        assert quic is not None and driver is not None
        self._handshaking += 1
        try:
            while self._router is None:
                self._check_usable()
                try:
                    quic.do_handshake()
                except (WantReadError, WantWriteError):
                    pass
                else:
                    self._start_session(quic, driver)
                    return
                driver.touch()
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StallError(
                            f"no response from {self.peer} for {timeout:g} s "
                            "(the server stalled or is unreachable)"
                        )
                await driver.wait(progress_key(quic), remaining)
        except BaseException as exc:
            # Failed, timed out or cancelled: a connection nobody else is
            # completing is given up (the next request opens a new one).
            if self._handshaking == 1 and self._router is None:
                if isinstance(exc, Exception) and self._open_failure is None:
                    self._open_failure = f"the handshake with {self.peer} failed: {exc}"
                self.abort()
            raise
        finally:
            self._handshaking -= 1

    def _start_session(self, quic: Connection, driver: LoopDriver) -> None:
        if self.options.key_update:
            quic.key_update()
        session: HttpSession
        session = H3Session(quic) if self.options.alpn == ALPN_H3 else HqSession(quic)
        self.session = session
        self._router = ExchangeRouter(session)
        driver.watch(progress_key(quic), self._on_progress)
        driver.touch()  # the session's control streams and SETTINGS

    # -- what the driver calls --------------------------------------------------

    def _on_progress(self) -> None:
        """The connection moved on: route what arrived, wake who it concerns."""
        router, session, driver = self._router, self.session, self._driver
        if router is None or session is None or driver is None or self._closed:
            return
        router.wants_processing = False
        try:
            moved = router.update(session.process())
        except (Error, ValueError) as exc:  # never escapes into the driver
            moved = router.connection_closed(f"failed: {exc}")
        for exchange in moved:
            driver.wake(exchange)
        if moved:
            driver.touch()  # reading granted flow-control credit: send it

    def _settle(self) -> None:
        """After a flow step: process a resumed stream's data, send output."""
        router, driver = self._router, self._driver
        if router is not None and router.wants_processing:
            self._on_progress()
        if driver is not None and not self._closed:
            driver.touch()

    # -- requests -----------------------------------------------------------------

    def _ready(self) -> tuple[ExchangeRouter, LoopDriver, Connection]:
        router, driver, quic = self._router, self._driver, self.quic
        if router is None or driver is None or quic is None:
            self._check_usable()
            raise RuntimeError("connect() first")
        return router, driver, quic

    async def _drive(
        self,
        flow: Flow[T],
        timeouts: Timeouts,
        body: AsyncIterator[bytes] | None = None,
    ) -> T:
        """Run one of the shared request flows, awaiting the driver."""
        _, driver, quic = self._ready()
        timer = WaitTimer(timeouts, self.peer)
        connection_key = progress_key(quic)
        try:
            wait = next(flow)
            while True:
                self._settle()
                if wait.need is Need.BODY:
                    wait = flow.send(await _next_chunk(body))
                    continue
                limit = timer.remaining(wait)
                key = wait.exchange if wait.exchange is not None else connection_key
                await driver.wait(key, limit)
                wait = flow.send(None)
        except StopIteration as done:
            self._settle()
            result: T = done.value
            return result
        except BaseException:
            flow.close()  # an unfinished request is cancelled: its stream reset
            self._settle()
            raise

    async def request(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: AsyncIterator[bytes] | None,
        *,
        authority: str | None = None,
        timeouts: Timeouts,
    ) -> Exchange:
        """Send a request; its exchange once the response's head arrived."""
        router, _, _ = self._ready()
        flow = request_flow(
            router,
            method,
            authority or self.authority,
            path,
            headers,
            with_body=body is not None,
        )
        return await self._drive(flow, timeouts, body)

    async def next_chunk(self, exchange: Exchange, timeouts: Timeouts) -> bytes | None:
        """The next chunk of a response's body; None at its end."""
        router, _, _ = self._ready()
        return await self._drive(chunk_flow(router, exchange), timeouts)

    def finish(self, exchange: Exchange) -> None:
        """Done with a response: release its stream, or cancel the request
        if its body is unfinished (the reset goes out at once)."""
        router = self._router
        if router is not None and not self._closed and router.finish(exchange):
            self._settle()

    # -- closing ------------------------------------------------------------------

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the connection gracefully (at most ``timeout`` seconds),
        then free it; requests still running fail."""
        quic, driver = self.quic, self._driver
        if self._closed or quic is None or driver is None or not self.in_own_loop():
            self.abort()  # (a loop that has ended cannot drive a close)
            return
        self._fail_requests("was closed by the client")
        deadline = time.monotonic() + timeout
        try:
            while not quic.shutdown(SHUTDOWN_FLAG_NO_BLOCK):
                driver.touch()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await driver.wait(progress_key(quic), remaining)
        finally:
            self.abort()

    def abort(self) -> None:
        """Free the connection now; requests still running fail."""
        if self._closed:
            return
        self._fail_requests("was closed by the client")
        self._closed = True
        quic, driver = self.quic, self._driver
        if quic is None:
            return
        if driver is not None:
            driver.unwatch(progress_key(quic), self._on_progress)
        try:
            if self._batching is not None:
                self._batching.__exit__(None, None, None)
        finally:
            quic.free()

    def _fail_requests(self, reason: str) -> None:
        router, driver = self._router, self._driver
        if router is None or driver is None:
            return
        for exchange in router.connection_closed(reason):
            driver.wake(exchange)


async def _next_chunk(body: AsyncIterator[bytes] | None) -> bytes | None:
    if body is None:
        return None
    try:
        return await body.__anext__()
    except StopAsyncIteration:
        return None


__all__ = [
    "CLOSE_TIMEOUT",
    "AsyncHttpClient",
    "EventLoop",
    "current_loop",
]
