"""``Connection`` and ``Stream`` for asyncio: awaitable QUIC objects.

Each wraps a quicconn object (``.quic``) that is nonblocking and in
explicit event-handling mode: its calls never tick the reactor and never
block; the driver (one per socket) ticks, and a call that raised
``Want*`` waits for its connection to move on, then tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._constants import (
    INCOMING_STREAM_POLICY_ACCEPT,
    MODE_ENABLE_PARTIAL_WRITE,
    SHUTDOWN_FLAG_NO_BLOCK,
    STREAM_FLAG_UNI,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    WRITE_FLAG_CONCLUDE,
)
from .._errors import ZeroReturnError
from .._objects.connection import Connection as QuicConnection
from .._objects.connection import batched_output, progress_key
from .._objects.stream import Stream as QuicStream
from .._objects.surface import events_reactor
from ._driver import AsyncioDriver, driver_for

if TYPE_CHECKING:
    from .._types import Buffer

T = TypeVar("T")


def prepare(conn: QuicConnection) -> None:
    """Make a quicconn connection fit for a driver: nonblocking, explicit."""
    conn.set_blocking_mode(False)
    conn.set_value_uint(
        VALUE_CLASS_GENERIC,
        VALUE_EVENT_HANDLING_MODE,
        VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    )
    # Writes take what fits and the driver waits for the rest.
    conn.set_mode(MODE_ENABLE_PARTIAL_WRITE)
    # Any number of accept_stream() calls: OpenSSL's AUTO policy rejects
    # peer streams once a first accept_stream() inhibited the default one.
    conn.set_incoming_stream_policy(INCOMING_STREAM_POLICY_ACCEPT)


class Connection:
    """A QUIC connection driven by the running asyncio loop.

    Made by :func:`quicconn.asyncio.connect` or handed to a
    :func:`~quicconn.asyncio.start_server` handler; or wrap a quicconn
    :class:`~quicconn.Connection` (set up, not yet used) yourself.  Any
    number of tasks may use it and its streams at once.  ``async with``
    closes it gracefully on exit (``SSL_shutdown``), then frees it.
    """

    def __init__(self, quic: QuicConnection) -> None:
        if not isinstance(quic, QuicConnection):
            raise TypeError(f"Connection() wraps a quicconn.Connection, not {quic!r}")
        prepare(quic)
        #: The quicconn connection underneath (nonblocking, explicit events).
        self.quic = quic
        self._driver: AsyncioDriver = driver_for(events_reactor(quic))
        self._closed = False
        # Writes only queue their frames; the driver's next dispatch (soon
        # after, in this loop iteration) sends them together: a task writing
        # small pieces fills packets instead of sending one per write.
        self._batching = batched_output(quic)
        self._batching.__enter__()

    def _key(self) -> object:
        return progress_key(self.quic)

    async def _complete(self, attempt: Callable[[], T | None]) -> T:
        was_closed = self._closed
        try:
            return await self._driver.complete(self._key, attempt)
        except ValueError as exc:
            if self._closed and not was_closed:  # closed while this call waited
                raise ConnectionAbortedError("the QUIC connection was closed") from exc
            raise

    # -- handshake ------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Complete the handshake (SSL_do_handshake), in this end's role."""

        def attempt() -> bool:
            self.quic.do_handshake()
            return True

        await self._complete(attempt)

    # -- the default stream -----------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes of the default stream (all buffered if
        ``n`` < 0, at least one); ``b""`` once the peer concluded it."""
        try:
            return await self._complete(lambda: self.quic.read(n))
        except ZeroReturnError:
            return b""

    async def write(self, data: Buffer, *, end: bool = False) -> None:
        """Write all of ``data`` to the default stream; ``end=True``
        concludes it after the last byte (SSL_write_ex2)."""
        await _write_all(self, self.quic, data, end)

    # -- streams --------------------------------------------------------------

    async def open_stream(self, *, unidirectional: bool = False) -> Stream:
        """Open a stream (SSL_new_stream), waiting for the peer's credit."""
        flags = STREAM_FLAG_UNI if unidirectional else 0
        stream = await self._complete(lambda: self.quic.new_stream(flags))
        return Stream(self, stream)

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened (SSL_accept_stream)."""

        stream: QuicStream = await self._complete(self.quic.accept_stream)
        return Stream(self, stream)

    async def create_stream(
        self, *, unidirectional: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream as an asyncio reader/writer pair."""
        stream = await self.open_stream(unidirectional=unidirectional)
        return stream.as_streams()

    # -- closing --------------------------------------------------------------

    async def aclose(
        self, error_code: int = 0, reason: str = "", flags: int = 0
    ) -> None:
        """Close gracefully (SSL_shutdown_ex), then free the connection.

        Waits for the peer to acknowledge stream data, sends
        CONNECTION_CLOSE and waits out the closing period, as OpenSSL's
        default; ``flags`` as :meth:`quicconn.Connection.shutdown`
        (``SHUTDOWN_FLAG_RAPID`` skips the closing period).
        """
        if self._closed:
            return
        flags |= SHUTDOWN_FLAG_NO_BLOCK

        def attempt() -> bool | None:
            return self.quic.shutdown(flags, error_code, reason) or None

        try:
            await self._complete(attempt)
        finally:
            self.abort()

    def abort(self) -> None:
        """Free the connection now, sending nothing (SSL_free)."""
        if not self._closed:
            self._closed = True
            try:
                self._batching.__exit__(None, None, None)  # sends what is queued
            finally:
                self.quic.free()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` or :meth:`abort` ran."""
        return self._closed

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.aclose()
        except Exception:
            self.abort()
            if exc_info[0] is None:
                raise

    def __repr__(self) -> str:
        return f"<quicconn.asyncio.Connection {self.quic!r}>"


class Stream:
    """A QUIC stream of an asyncio :class:`Connection`.

    ``read()`` returns ``b""`` at the peer's FIN; a peer reset raises
    :class:`quicconn.StreamResetError`.  :meth:`as_streams` gives the
    stream as an :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter`
    pair.
    """

    def __init__(self, connection: Connection, quic: QuicStream) -> None:
        #: The quicconn stream underneath.
        self.quic = quic
        self.connection = connection
        quic.set_mode(MODE_ENABLE_PARTIAL_WRITE)
        self._write_lock: asyncio.Lock | None = None

    @property
    def stream_id(self) -> int:
        """The QUIC stream ID."""
        return self.quic.get_stream_id()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if ``n`` < 0, at least one);
        ``b""`` once the peer concluded the stream."""
        try:
            return await self.connection._complete(lambda: self.quic.read(n))
        except ZeroReturnError:
            return b""

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` at an
        early FIN."""
        parts = bytearray()
        while len(parts) < n:
            chunk = await self.read(n - len(parts))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(parts), n)
            parts += chunk
        return bytes(parts)

    async def write(self, data: Buffer, *, end: bool = False) -> None:
        """Write all of ``data`` (waiting for credit); ``end=True``
        concludes the stream after it (SSL_write_ex2)."""
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = asyncio.Lock()
        async with lock:
            await _write_all(self.connection, self.quic, data, end)

    async def write_eof(self) -> None:
        """Conclude the stream: FIN after what was written (SSL_stream_conclude)."""
        await self.write(b"", end=True)

    def reset(self, error_code: int = 0) -> None:
        """Abort sending with RESET_STREAM (SSL_stream_reset)."""
        self.quic.stream_reset(error_code)
        self.connection._driver.touch()

    def close(self) -> None:
        """Release the stream (SSL_free on a stream): an unconcluded sending
        part is reset, an unfinished receiving part stopped."""
        self.quic.free()
        self.connection._driver.touch()

    def as_streams(
        self, *, limit: int = 2**16
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """This stream as an asyncio reader/writer pair (``limit`` as in
        :func:`asyncio.open_connection`).  Use the pair, not this object,
        from then on."""
        from ._streams import stream_pair

        return stream_pair(self, limit)

    def __repr__(self) -> str:
        return f"<quicconn.asyncio.Stream {self.quic!r}>"


async def _write_all(
    connection: Connection, target: Any, data: Buffer, conclude: bool
) -> None:
    """Write every byte of ``data`` to ``target`` (a connection's default
    stream or a stream object), partial writes included."""
    view = memoryview(data).cast("B")
    total = len(view)
    offset = 0
    flags = WRITE_FLAG_CONCLUDE if conclude else 0
    complete = connection._complete
    if total == 0:
        if conclude:
            await complete(lambda: target.write_ex2(b"", flags))
        return
    while offset < total:
        chunk = view[offset:]

        def attempt(chunk: memoryview = chunk) -> int:
            written: int = target.write_ex2(chunk, flags)
            return written

        offset += await complete(attempt)


__all__ = ["Connection", "Stream", "prepare"]
