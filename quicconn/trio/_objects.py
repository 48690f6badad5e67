"""QUIC connections, streams and listeners for trio.

:class:`Stream` is a :class:`trio.abc.HalfCloseableStream` (it passes
trio's own ``check_half_closeable_stream``); :class:`Listener` is a
:class:`trio.abc.Listener`, so :func:`trio.serve_listeners` runs a handler
per connection in a nursery.  As with quicconn.asyncio, each wraps a
nonblocking quicconn object in explicit event-handling mode, and the one
driver of its socket does the ticking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from .._constants import (
    ACCEPT_CONNECTION_NO_BLOCK,
    INCOMING_STREAM_POLICY_ACCEPT,
    MODE_ENABLE_PARTIAL_WRITE,
    SHUTDOWN_FLAG_NO_BLOCK,
    STREAM_FLAG_UNI,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_STREAM_WRITE_BUF_AVAIL,
    WRITE_FLAG_CONCLUDE,
)
from .._errors import (
    ConnectionTerminatedError,
    Error,
    StreamResetError,
    SyscallError,
    ZeroReturnError,
)
from .._io.transport import Address
from .._objects.connection import Connection as QuicConnection
from .._objects.connection import batched_output, progress_key
from .._objects.listener import Listener as QuicListener
from .._objects.stream import Stream as QuicStream
from .._objects.surface import events_reactor
from ._driver import TrioDriver, driver_for

if TYPE_CHECKING:
    from .._types import Buffer

T = TypeVar("T")

#: Failures after which a stream can no longer carry data: trio's "broken".
_BROKEN = (StreamResetError, ConnectionTerminatedError, SyscallError)


class Connection(trio.abc.AsyncResource):
    """A QUIC connection driven by the current ``trio.run``.

    Made by :func:`quicconn.trio.connect` or a :class:`Listener`; any
    number of tasks may use it and its streams.  ``aclose()`` (and
    ``async with``) closes it gracefully (``SSL_shutdown``) and frees it.
    """

    def __init__(self, quic: QuicConnection) -> None:
        if not isinstance(quic, QuicConnection):
            raise TypeError(f"Connection() wraps a quicconn.Connection, not {quic!r}")
        quic.set_blocking_mode(False)
        quic.set_value_uint(
            VALUE_CLASS_GENERIC,
            VALUE_EVENT_HANDLING_MODE,
            VALUE_EVENT_HANDLING_MODE_EXPLICIT,
        )
        quic.set_mode(MODE_ENABLE_PARTIAL_WRITE)
        quic.set_incoming_stream_policy(INCOMING_STREAM_POLICY_ACCEPT)
        #: The quicconn connection underneath (nonblocking, explicit events).
        self.quic = quic
        self._driver: TrioDriver = driver_for(events_reactor(quic))
        self._batching = batched_output(quic)
        self._batching.__enter__()
        self._closed = False

    def _key(self) -> object:
        return progress_key(self.quic)

    async def _complete(self, attempt: Callable[[], T | None]) -> T:
        was_closed = self._closed
        try:
            return await self._driver.complete(self._key, attempt)
        except ValueError as exc:
            if self._closed and not was_closed:  # closed while this call waited
                raise trio.ClosedResourceError("the connection was closed") from exc
            raise

    async def do_handshake(self) -> None:
        """Complete the handshake in this end's role (SSL_do_handshake)."""

        def attempt() -> bool:
            self.quic.do_handshake()
            return True

        await self._complete(attempt)

    async def open_stream(self, *, unidirectional: bool = False) -> Stream:
        """Open a stream (SSL_new_stream), waiting for the peer's credit."""
        flags = STREAM_FLAG_UNI if unidirectional else 0
        stream = await self._complete(lambda: self.quic.new_stream(flags))
        return Stream(self, stream)

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened (SSL_accept_stream)."""
        stream: QuicStream = await self._complete(self.quic.accept_stream)
        return Stream(self, stream)

    async def aclose(self, error_code: int = 0, reason: str = "") -> None:
        """Close gracefully (SSL_shutdown_ex), then free the connection.
        If cancelled, the connection is freed at once (no close is sent)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return

        def attempt() -> bool | None:
            flags = SHUTDOWN_FLAG_NO_BLOCK
            return self.quic.shutdown(flags, error_code, reason) or None

        try:
            await self._complete(attempt)
        except Error:
            pass  # already failed or closed: nothing more to say to the peer
        finally:
            self.abort()

    def abort(self) -> None:
        """Free the connection now, sending nothing (SSL_free)."""
        if not self._closed:
            self._closed = True
            try:
                self._batching.__exit__(None, None, None)
            finally:
                self.quic.free()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<quicconn.trio.Connection {self.quic!r}>"


class Stream(trio.abc.HalfCloseableStream):
    """A QUIC stream as a :class:`trio.abc.HalfCloseableStream`.

    ``send_eof()`` concludes the sending part (FIN); ``aclose()`` concludes
    it too and releases the stream (STOP_SENDING if the peer is still
    sending).  A peer's reset or STOP_SENDING, or a closed connection,
    raises :class:`trio.BrokenResourceError` (its ``__cause__`` is the
    quicconn error); an operation on a closed stream
    :class:`trio.ClosedResourceError`; concurrent sends (or receives)
    :class:`trio.BusyResourceError`.
    """

    def __init__(self, connection: Connection, quic: QuicStream) -> None:
        self.connection = connection
        #: The quicconn stream underneath.
        self.quic = quic
        quic.set_mode(MODE_ENABLE_PARTIAL_WRITE)
        self._sending = False
        self._receiving = False
        self._closed = False
        self._eof_sent = False
        self._broken: BaseException | None = None

    @property
    def stream_id(self) -> int:
        return self.quic.get_stream_id()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")

    async def send_all(self, data: Buffer) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_open()
            if self._eof_sent:
                raise trio.ClosedResourceError("send_eof() was called on this stream")
            if self._broken is not None:
                raise trio.BrokenResourceError("the stream is broken") from self._broken
            view = memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.checkpoint()
                return
            offset = 0
            while offset < len(view):
                chunk = view[offset:]

                def attempt(chunk: memoryview = chunk) -> int:
                    written: int = self.quic.write(chunk)
                    return written

                offset += await self._guarded(attempt)
        finally:
            self._sending = False

    async def _guarded(self, attempt: Callable[[], T | None]) -> T:
        """Run an attempt; quicconn's failures become trio's."""
        try:
            return await self.connection._complete(attempt)
        except trio.ClosedResourceError as exc:
            if self._closed:
                raise
            self._broken = exc  # the connection, not this stream, was closed
            raise trio.BrokenResourceError("the connection was closed") from exc
        except (Error, ValueError) as exc:
            if self._closed:  # closed by another task while this one waited
                raise trio.ClosedResourceError("the stream was closed") from exc
            if isinstance(exc, (*_BROKEN, ValueError)):  # ValueError: freed
                self._broken = exc
                raise trio.BrokenResourceError(str(exc)) from exc
            raise

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_open()
            avail = VALUE_STREAM_WRITE_BUF_AVAIL

            def attempt() -> bool | None:
                if self._eof_sent or self._broken is not None:
                    return True
                space = self.quic.get_value_uint(VALUE_CLASS_GENERIC, avail)
                return True if space > 0 else None

            await self._guarded(attempt)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_open()
            if not self._eof_sent:
                self._eof_sent = True

                def attempt() -> bool:
                    self.quic.write_ex2(b"", WRITE_FLAG_CONCLUDE)
                    return True

                await self._guarded(attempt)
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
                raise TypeError(f"max_bytes must be an int or None, not {max_bytes!r}")
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            self._check_open()
            n = -1 if max_bytes is None else max_bytes
            try:
                return await self._guarded(lambda: self.quic.read(n))
            except ZeroReturnError:
                return b""
        finally:
            self._receiving = False

    def reset(self, error_code: int = 0) -> None:
        """Abort sending with RESET_STREAM (SSL_stream_reset): the peer's
        next receive raises ``trio.BrokenResourceError`` whose cause is a
        :class:`quicconn.StreamResetError` carrying ``error_code``."""
        self._check_open()
        self.quic.stream_reset(error_code)
        self.connection._driver.touch()

    async def aclose(self) -> None:
        """Conclude what was sent and release the stream (SSL_free)."""
        if not self._closed:
            self._closed = True
            quic = self.quic
            try:
                if (
                    not self._eof_sent
                    and self._broken is None
                    and quic.get_stream_type() & 2
                ):
                    quic.stream_conclude()
                quic.free()
            except Error:
                pass  # the connection is gone: nothing left to release
            except ValueError:
                pass  # the connection was freed
            driver = self.connection._driver
            driver.touch()
            driver.wake(self.connection._key())  # tasks blocked on the stream
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<quicconn.trio.Stream {self.quic!r}>"


class Listener(trio.abc.Listener[Connection]):
    """A QUIC listener as a :class:`trio.abc.Listener` of connections.

    ``accept()`` returns the next connection with its handshake complete
    (a connection whose handshake fails is dropped).
    """

    def __init__(self, quic: QuicListener) -> None:
        quic.set_blocking_mode(False)
        quic.listen()
        #: The quicconn listener underneath.
        self.quic = quic
        self._driver = driver_for(events_reactor(quic))
        self._driver.add_condition(
            quic, lambda: quic.get_accept_connection_queue_len() > 0
        )
        self._closed = False

    def local_address(self) -> Address:
        return self.quic.local_address()

    async def accept(self) -> Connection:
        while True:
            conn = await self.accept_unfinished()
            try:
                await conn.do_handshake()
            except Error:
                conn.abort()
                continue
            return conn

    async def accept_unfinished(self) -> Connection:
        """The next connection, possibly mid-handshake (SSL_accept_connection)."""
        listener = self.quic

        def attempt() -> QuicConnection | None:
            if self._closed:
                raise trio.ClosedResourceError("the listener was closed")
            return listener.accept_connection(ACCEPT_CONNECTION_NO_BLOCK)

        quic = await self._driver.complete(lambda: listener, attempt)
        return Connection(quic)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._driver.remove_condition(self.quic)
            self.quic.free()
            self._driver.wake(self.quic)  # a task in accept() sees the close
        await trio.lowlevel.checkpoint()


__all__ = ["Connection", "Listener", "Stream"]
