"""An HTTP client for HTTP/3 and hq-interop on one quicconn connection.

:class:`HttpClient` fetches many paths from one server over one connection,
as many in parallel as the server's stream limit allows, saving each body to
a file (or memory) as it arrives.  It supports session resumption and 0-RTT
requests, and gives up with :class:`StallError` when the server stops
sending for longer than the stall timeout.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .._constants import CLIENT, VERIFY_NONE
from .._errors import WantReadError
from .._io.transport import enlarge_socket_buffers
from .._objects.connection import Connection, batched_output
from .._objects.context import Context
from .._objects.session import Session
from ._events import DataReceived, ResponseReceived, StreamAborted
from ._session import ALPN_H3, ALPN_HQ, H3Session, HqSession, HttpSession


class StallError(TimeoutError):
    """The server sent nothing for longer than the stall timeout."""


@dataclass
class Download:
    """One request and what became of it."""

    path: str
    output: Path | None = None
    stream_id: int | None = None
    status: int | None = None
    received: int = 0
    done: bool = False
    error: str | None = None
    body: bytearray = field(default_factory=bytearray)
    started: float = 0.0
    finished: float = 0.0
    _file: BinaryIO | None = None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and self.status in (None, 200)


ProgressCallback = Callable[[Download, int], None]


@dataclass
class ClientOptions:
    alpn: str = ALPN_H3
    cafile: str | None = None
    verify: bool = True
    keylog_file: str | None = None
    qlog_dir: str | None = None
    session: Session | None = None
    early_data: bool = False
    idle_timeout: float = 30.0
    stall_timeout: float = 10.0
    server_name: str | None = None
    #: Colon-separated TLS 1.3 suites (Context.set_ciphersuites), None: all.
    ciphersuites: str | None = None
    #: QUIC versions, most preferred first, and the version to start with
    #: (Context.set_quic_versions); None: v1 and v2, starting in v1.
    quic_versions: list[int] | None = None
    initial_version: int | None = None
    #: Update the 1-RTT keys as soon as the handshake completes.
    key_update: bool = False


class HttpClient:
    """Fetch paths from one server over one QUIC connection."""

    def __init__(
        self, host: str, port: int, options: ClientOptions | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.options = options or ClientOptions()
        if self.options.alpn not in (ALPN_H3, ALPN_HQ):
            raise ValueError(f"alpn must be {ALPN_H3!r} or {ALPN_HQ!r}")
        ctx = Context(CLIENT)
        if not self.options.verify:
            ctx.verify_mode = VERIFY_NONE
        elif self.options.cafile:
            ctx.load_verify_locations(self.options.cafile)
        else:
            ctx.load_default_verify_paths()
        ctx.set_alpn_protos([self.options.alpn])
        if self.options.ciphersuites:
            ctx.set_ciphersuites(self.options.ciphersuites)
        if self.options.quic_versions:
            ctx.set_quic_versions(
                self.options.quic_versions, initial=self.options.initial_version
            )
        ctx.idle_timeout = self.options.idle_timeout
        if self.options.keylog_file:
            ctx.keylog_filename = self.options.keylog_file
        if self.options.qlog_dir:
            ctx.qlog_dir = self.options.qlog_dir
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        enlarge_socket_buffers(self._socket)
        self.conn = Connection(ctx)
        self.conn.set_fd(self._socket)
        self.conn.set1_initial_peer_addr(address)
        self.conn.set1_host(self.options.server_name or host)
        self.conn.set_blocking_mode(False)
        self._zero_rtt = False
        if self.options.session is not None:
            self.conn.set_session(self.options.session)
            if self.options.early_data and self.options.session.get_max_early_data():
                self.conn.set_early_data_enabled(True)
                self._zero_rtt = True
        self.session: HttpSession | None = None
        self.handshake_seconds: float | None = None
        self._started = time.monotonic()

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}" if self.port != 443 else self.host

    def connect(self) -> None:
        """Complete the handshake (or, with 0-RTT, start it and return)."""
        self._started = time.monotonic()
        if self._zero_rtt:
            self._make_session()  # opening streams starts the handshake in 0-RTT
            return
        last_progress = time.monotonic()
        while True:
            try:
                self.conn.connect()
                break
            except WantReadError:
                self._wait(last_progress)
        self.handshake_seconds = time.monotonic() - self._started
        if self.options.key_update:
            self.conn.key_update()
        self._make_session()

    def _make_session(self) -> None:
        if self.session is None:
            cls = H3Session if self.options.alpn == ALPN_H3 else HqSession
            self.session = cls(self.conn)

    def _wait(self, last_progress: float) -> None:
        stall = self.options.stall_timeout
        if time.monotonic() - last_progress > stall:
            raise StallError(
                f"no response from {self.host}:{self.port} for {stall:g} s "
                "(the server stalled or is unreachable)"
            )
        timeout = self.conn.get_event_timeout()
        remaining = stall - (time.monotonic() - last_progress)
        timeout = remaining if timeout is None else min(timeout, remaining)
        with selectors.DefaultSelector() as selector:
            events = selectors.EVENT_READ
            if self.conn.net_write_desired():
                events |= selectors.EVENT_WRITE
            selector.register(self.conn.fileno(), events)
            selector.select(max(0.0, timeout))

    def fetch(
        self,
        paths: Iterable[str],
        output_dir: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Download]:
        """Download every path; returns them in order, each with its outcome."""
        if self.session is None:
            self.connect()
        session = self.session
        assert session is not None
        downloads = [
            Download(
                path, None if output_dir is None else output_dir / _file_name(path)
            )
            for path in paths
        ]
        waiting = deque(downloads)
        active: dict[int, Download] = {}
        last_progress = time.monotonic()
        while waiting or active:
            with batched_output(self.conn):  # the requests share packets
                while waiting and session.can_open_request():
                    download = waiting.popleft()
                    download.started = time.monotonic()
                    download.stream_id = session.send_request(
                        "GET", self.authority, download.path
                    )
                    active[download.stream_id] = download
            moved = False
            for event in session.handle_events():
                target = active.get(event.stream_id)
                if target is None:
                    continue
                moved = True
                self._apply(target, event, progress)
                if target.done:
                    del active[event.stream_id]
                    session.forget(event.stream_id)
            if self.handshake_seconds is None and self.conn.is_init_finished():
                self.handshake_seconds = time.monotonic() - self._started
            close = self.conn.get_conn_close_info()
            if close is not None:
                for download in [*active.values(), *waiting]:
                    download.error = f"connection {close}"
                    download.done = True
                    self._close_file(download)
                break
            if moved:
                last_progress = time.monotonic()
            elif waiting or active:
                self._wait(last_progress)
        return downloads

    def _apply(
        self, download: Download, event: object, progress: ProgressCallback | None
    ) -> None:
        if isinstance(event, ResponseReceived):
            download.status = event.status
        elif isinstance(event, DataReceived):
            if event.data:
                if download.output is not None:
                    if download._file is None:
                        download.output.parent.mkdir(parents=True, exist_ok=True)
                        download._file = download.output.open("wb")
                    download._file.write(event.data)
                else:
                    download.body += event.data
                download.received += len(event.data)
                if progress is not None:
                    progress(download, len(event.data))
            if event.ended:
                download.done = True
                download.finished = time.monotonic()
                if download.output is not None and download._file is None:
                    download.output.parent.mkdir(parents=True, exist_ok=True)
                    download.output.write_bytes(b"")
                self._close_file(download)
        elif isinstance(event, StreamAborted):
            download.error = (
                f"stream reset by the server (error 0x{event.error_code:x})"
            )
            download.done = True
            self._close_file(download)

    @staticmethod
    def _close_file(download: Download) -> None:
        if download._file is not None:
            download._file.close()
            download._file = None

    def new_session_ticket(self) -> Session | None:
        """The server's newest session ticket, for resuming later."""
        return self.conn.get1_session()

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection (waiting briefly for the close to finish)."""
        deadline = time.monotonic() + timeout
        try:
            while not self.conn.shutdown() and time.monotonic() < deadline:
                self._wait(time.monotonic())
        finally:
            self.conn.free()
            self._socket.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _file_name(path: str) -> str:
    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or "index.html"


__all__ = [
    "ClientOptions",
    "Download",
    "HttpClient",
    "ProgressCallback",
    "StallError",
]
