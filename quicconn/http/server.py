"""A static file server over HTTP/3 and hq-interop, on one quicconn listener.

Every connection on the listener shares its socket and reactor, so the
server runs from one thread with one wait: ``poll`` on the listener's
descriptor until its event timeout, one ``listener.handle_events()``, then
each session turns what arrived into requests and the server writes
responses with back-pressure (a response only reads more of its file once
the stream took the previous chunk).
"""

from __future__ import annotations

import logging
import selectors
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .._constants import ACCEPT_CONNECTION_NO_BLOCK, SHUTDOWN_FLAG_NO_BLOCK
from .._errors import Error
from .._objects.connection import Connection, batched_output
from .._objects.listener import Listener
from ._events import HttpEvent, RequestReceived, StreamAborted, StreamRefused
from ._limits import ServerLimits
from ._paths import resolve_request_path
from ._session import H3_REQUEST_CANCELLED, HttpSession, session_for

logger = logging.getLogger("quicconn.http.server")

CHUNK_SIZE = 64 * 1024


@dataclass
class _Response:
    stream_id: int
    file: BinaryIO
    remaining: int


@dataclass
class ServerStats:
    """What a :class:`FileServer` has done so far (a quicconn extension)."""

    connections: int = 0
    requests: int = 0
    not_found: int = 0
    not_allowed: int = 0
    bytes_sent: int = 0


@dataclass
class _Client:
    conn: Connection
    session: HttpSession | None = None
    responses: dict[int, _Response] = field(default_factory=dict)


class FileServer:
    """Serve the files below ``root`` to every connection of ``listener``.

    Requests are answered only with regular files under ``root``; anything
    else (``..``, absolute or encoded escapes, symlinks leading out, missing
    files, directories) is a 404.  Drive it with :meth:`serve_forever` or
    call :meth:`run_once` from your own loop.
    """

    def __init__(
        self,
        listener: Listener,
        root: str | Path,
        limits: ServerLimits | None = None,
    ) -> None:
        #: What the server spends on its clients (:class:`ServerLimits`).
        self.limits = limits if limits is not None else ServerLimits()
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"document root {str(root)!r} is not a directory")
        self.listener = listener
        listener.set_blocking_mode(False)
        listener.listen()
        self._clients: list[_Client] = []
        #: Where the next turn starts serving (turns rotate, so that no
        #: connection always comes first to the memory budget).
        self._turn = 0
        #: Bytes of responses in flight (see :meth:`buffered`), as counted
        #: at the start of this turn plus what the turn added.
        self._in_flight = 0
        self.stats = ServerStats()
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener.fileno(), selectors.EVENT_READ)

    # -- driving ------------------------------------------------------------

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (checked at least every 0.2 s)."""
        while stop is None or not stop.is_set():
            self.run_once(0.2)

    def run_once(self, timeout: float | None = None) -> None:
        """Wait for activity (up to ``timeout``), then handle everything due."""
        wait = self.listener.get_event_timeout()
        if timeout is not None:
            wait = timeout if wait is None else min(wait, timeout)
        events = selectors.EVENT_READ
        if self.listener.net_write_desired():
            events |= selectors.EVENT_WRITE
        self._selector.modify(self.listener.fileno(), events)
        self._selector.select(wait)
        self.listener.handle_events()
        self._accept_new()
        # Connections answering nothing now hold at most the tail of their
        # last answers: counting only the others keeps a turn's cost off
        # idle connections.
        self._in_flight = sum(
            c.session.buffered() for c in self._clients if c.responses and c.session
        )
        clients = self._clients
        self._turn = (self._turn + 1) % max(1, len(clients))
        for client in clients[self._turn :] + clients[: self._turn]:
            try:
                self._serve_client(client)
            except Error as exc:
                logger.warning("dropping %r: %s", client.conn, exc)
                self._drop(client)

    def buffered(self) -> int:
        """Bytes of responses in flight over all connections: written to
        QUIC streams and not yet acknowledged, or waiting to be written.
        The server reads no more file data while this reaches
        ``limits.max_memory`` (a quicconn extension)."""
        return sum(c.session.buffered() for c in self._clients if c.session)

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE sent, qlogs written)."""
        for client in self._clients:
            client.conn.shutdown(SHUTDOWN_FLAG_NO_BLOCK)
        if self._clients:
            self.listener.handle_events()  # the closes go out now
        for client in list(self._clients):
            self._drop(client)
        self._selector.close()

    # -- per connection -------------------------------------------------------

    def _accept_new(self) -> None:
        while True:
            conn = self.listener.accept_connection(ACCEPT_CONNECTION_NO_BLOCK)
            if conn is None:
                return
            conn.set_blocking_mode(False)
            self._clients.append(_Client(conn))
            self.stats.connections += 1

    def _serve_client(self, client: _Client) -> None:
        conn = client.conn
        if conn.get_conn_close_info() is not None:
            self._drop(client)
            return
        if client.session is None:
            if not conn.is_init_finished():
                return
            try:
                client.session = session_for(conn, self.limits.http)
            except ValueError as exc:
                logger.info("closing %r: %s", conn, exc)
                conn.shutdown(SHUTDOWN_FLAG_NO_BLOCK, 0x10, "no HTTP over this ALPN")
                return
        session = client.session
        with batched_output(conn):  # the answers share packets
            for event in session.process():
                self._handle(client, session, event)
            self._pump(client, session)

    def _handle(self, client: _Client, session: HttpSession, event: HttpEvent) -> None:
        if isinstance(event, RequestReceived):
            self.stats.requests += 1
            self._respond(client, session, event)
        elif isinstance(event, StreamAborted | StreamRefused):
            # The client cancelled, or sent what the session refused: stop
            # answering, and release the stream (its MAX_STREAMS credit comes
            # back only then).
            response = client.responses.pop(event.stream_id, None)
            if response is not None:
                response.file.close()
            session.cancel(event.stream_id, H3_REQUEST_CANCELLED)

    def _respond(
        self, client: _Client, session: HttpSession, request: RequestReceived
    ) -> None:
        if request.method not in ("GET", "HEAD"):
            self.stats.not_allowed += 1
            body = b"method not allowed: this server only serves files\n"
            session.send_response_head(
                request.stream_id,
                405,
                [
                    (b"allow", b"GET, HEAD"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            session.send_body(request.stream_id, body, True)
            session.forget(request.stream_id)  # released once sent
            logger.info("405 %s %s", request.method, request.path)
            return
        path = resolve_request_path(self.root, request.path)
        if path is None:
            self.stats.not_found += 1
            session.send_not_found(request.stream_id)
            session.forget(request.stream_id)
            logger.info("404 %s", request.path)
            return
        size = path.stat().st_size
        session.send_response_head(
            request.stream_id, 200, [(b"content-length", str(size).encode())]
        )
        if request.method == "HEAD" or size == 0:
            session.send_body(request.stream_id, b"", True)
            session.forget(request.stream_id)
            return
        client.responses[request.stream_id] = _Response(
            request.stream_id, path.open("rb"), size
        )

    def _pump(self, client: _Client, session: HttpSession) -> None:
        """Read on in the files of open responses, only as much as their
        streams take now (credit and send buffers) and the memory budget
        allows: nothing waits in memory for a peer that does not read."""
        budget = self.limits.max_memory
        for stream_id, response in list(client.responses.items()):
            while response.remaining:
                size = min(
                    CHUNK_SIZE,
                    response.remaining,
                    session.writable(stream_id),
                    budget - self._in_flight,
                )
                if size <= 0:
                    break
                chunk = response.file.read(size)
                if not chunk:  # the file shrank under us: end the response
                    response.remaining = 0
                    session.send_body(stream_id, b"", True)
                    break
                response.remaining -= len(chunk)
                self.stats.bytes_sent += len(chunk)
                self._in_flight += len(chunk)
                session.send_body(stream_id, chunk, response.remaining == 0)
            if not response.remaining:
                response.file.close()
                del client.responses[stream_id]
                session.forget(stream_id)

    def _drop(self, client: _Client) -> None:
        for response in client.responses.values():
            response.file.close()
        client.responses.clear()
        if client in self._clients:
            self._clients.remove(client)
        client.conn.free()


__all__ = [
    "CHUNK_SIZE",
    "FileServer",
    "ServerStats",
]
