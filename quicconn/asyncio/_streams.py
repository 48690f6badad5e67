"""A QUIC stream as an :class:`asyncio.StreamReader` / :class:`asyncio.StreamWriter`.

:class:`StreamTransport` is an :class:`asyncio.Transport` over one quicconn
stream, under asyncio's own :class:`asyncio.StreamReaderProtocol`, so the
pair behaves exactly as asyncio's streams do (``readline``, ``readexactly``,
``drain``, ``write_eof``, ``wait_closed``).  Incoming data is moved into the
reader when the stream's connection moves on, and no further while the
reader's buffer is over its limit (``pause_reading``): the rest stays in
quicconn, whose flow control then holds the peer back.  Writes go to
quicconn at once as far as credit allows; the rest is buffered here and
``drain()`` waits while that buffer is over the high-water mark.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from .._errors import (
    ConnectionTerminatedError,
    Error,
    StreamResetError,
    WantReadError,
    WantWriteError,
    ZeroReturnError,
)
from .._objects.connection import progress_key

if TYPE_CHECKING:
    from ._connection import Stream

#: Bytes buffered by the transport before ``drain()`` waits (asyncio's default).
HIGH_WATER = 64 * 1024


class StreamTransport(asyncio.Transport):
    """One QUIC stream as an asyncio transport; see the module docstring."""

    def __init__(self, stream: Stream, protocol: asyncio.StreamReaderProtocol) -> None:
        super().__init__({"stream_id": stream.stream_id})
        self._stream = stream
        self._quic = stream.quic
        self._driver = stream.connection._driver
        self._protocol = protocol
        self._key = progress_key(stream.connection.quic)
        kind = self._quic.get_stream_type()
        self._reading = bool(kind & 1)  # STREAM_TYPE_READ
        self._writable = bool(kind & 2)  # STREAM_TYPE_WRITE
        self._paused = False
        self._eof_received = False
        self._outgoing = bytearray()
        self._write_paused = False
        self._eof_pending = False
        self._concluded = False
        self._closing = False
        self._lost = False
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._driver.watch(self._key, self._on_progress)

    # -- reading --------------------------------------------------------------

    def _on_progress(self) -> None:
        if self._lost:
            return
        self._pull()
        self._push()
        if self._closing and self._concluded and not self._lost:
            # Everything written went to quicconn with the FIN: release the
            # stream (a receiving part still open gets STOP_SENDING).
            self._release()
            self._lose(None)

    def _release(self) -> None:
        with contextlib.suppress(Error, ValueError):
            self._quic.free()
        self._driver.touch()

    def _pull(self) -> None:
        if not self._reading or self._paused or self._eof_received:
            return
        protocol = self._protocol
        got = False
        while not self._paused:
            try:
                data = self._quic.read()
            except WantReadError:
                break
            except ZeroReturnError:
                self._eof_received = True
                protocol.eof_received()
                break
            except (StreamResetError, ConnectionTerminatedError) as exc:
                self._eof_received = True
                self._lose(exc)
                break
            except (Error, ValueError) as exc:  # ValueError: freed
                self._lose(exc)
                break
            got = True
            protocol.data_received(data)
        if got:
            self._driver.touch()  # the read granted credit: send it

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._pull()

    def is_reading(self) -> bool:
        return self._reading and not self._paused and not self._eof_received

    # -- writing ----------------------------------------------------------------

    def write(self, data: Any) -> None:
        if self._eof_pending or self._closing:
            raise RuntimeError(
                "cannot write to a QUIC stream after write_eof()/close()"
            )
        if self._lost:
            return
        self._outgoing += data
        self._push()

    def _push(self) -> None:
        outgoing = self._outgoing
        queued = False
        while outgoing:
            try:
                sent = self._quic.write(outgoing)
            except WantWriteError:
                break
            except (Error, ValueError) as exc:  # ValueError: freed
                self._lose(exc)
                return
            del outgoing[:sent]
            queued = True
        if not outgoing and self._eof_pending and not self._concluded:
            self._concluded = True
            queued = True
            if self._writable:
                try:
                    self._quic.stream_conclude()
                except (Error, ValueError) as exc:  # ValueError: freed
                    self._lose(exc)
                    return
        if queued:
            self._driver.touch()  # the driver sends what was queued
        size = len(outgoing)
        if not self._write_paused and size > self._high:
            self._write_paused = True
            self._protocol.pause_writing()
        elif self._write_paused and size <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._eof_pending:
            self._eof_pending = True
            self._push()

    def get_write_buffer_size(self) -> int:
        return len(self._outgoing)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._push()

    # -- closing ----------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Conclude the stream once the buffered data is written, as
        asyncio's transports flush before closing."""
        if self._closing:
            return
        self._closing = True
        self._eof_pending = True
        self._on_progress()

    def abort(self) -> None:
        """Reset the stream now (and stop reading it), dropping the buffer."""
        self._outgoing.clear()
        if not self._lost:
            self._release()
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if isinstance(exc, ValueError):  # the connection was freed under us
            exc = ConnectionAbortedError("the QUIC connection was closed")
        self._lost = True
        self._driver.unwatch(self._key, self._on_progress)
        protocol = self._protocol
        self._stream.connection._driver.loop.call_soon(protocol.connection_lost, exc)


def stream_pair(
    stream: Stream, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Wrap ``stream`` as asyncio's reader/writer pair."""
    loop = stream.connection._driver.loop
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = StreamTransport(stream, protocol)
    protocol.connection_made(transport)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    transport._on_progress()
    return reader, writer


__all__ = ["HIGH_WATER", "StreamTransport", "stream_pair"]
