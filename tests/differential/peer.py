"""The quicconn peer both clients of a differential scenario talk to.

A quicconn listener served by a thread of its own, so that a client's
blocking call can wait while the peer answers.  The scenario drives the
peer through commands (:meth:`Peer.call` and the helpers built on it),
each run on the peer's thread between two ticks, so that when a command
returns its datagrams are already in the client's socket buffer
(loopback delivers at once): the client's next call sees them.

The peer accepts one connection at a time, sets it to accept every
stream the client opens (no default stream), and reads everything that
arrives, keeping it per stream for the scenario to inspect.
"""

from __future__ import annotations

import os
import queue
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import quicconn
from quicconn._objects.connection import channel_of


@dataclass
class PeerStream:
    """What the peer knows about one stream of the connection."""

    stream: quicconn.Stream
    data: bytearray = field(default_factory=bytearray)
    fin: bool = False
    reset_code: int | None = None


class Peer:
    """A quicconn server in a thread; see the module docstring."""

    def __init__(
        self,
        certfile: str,
        keyfile: str,
        *,
        alpn: list[str],
        max_streams_bidi: int | None = None,
        max_streams_uni: int | None = None,
        max_stream_data: int | None = None,
        idle_timeout: float | None = None,
        datagram_frame_size: int | None = None,
        read_streams: bool = True,
    ) -> None:
        ctx = quicconn.Context(quicconn.SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        ctx.set_alpn_protos(alpn)
        if max_streams_bidi is not None:
            ctx.max_streams_bidi = max_streams_bidi
        if max_streams_uni is not None:
            ctx.max_streams_uni = max_streams_uni
        if max_stream_data is not None:
            ctx.max_stream_data = max_stream_data
        if idle_timeout is not None:
            ctx.idle_timeout = idle_timeout
        if datagram_frame_size is not None:
            ctx.set_max_datagram_frame_size(datagram_frame_size)
        self.read_streams = read_streams
        self.listener = ctx.new_listener(
            ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
        )
        self.listener.set_blocking_mode(False)
        self.listener.listen()
        self.address = self.listener.local_address()
        self.conn: quicconn.Connection | None = None
        self.established = False
        self.streams: dict[int, PeerStream] = {}
        self.datagrams: list[bytes] = []
        self._commands: queue.Queue[tuple[Callable[[Peer], Any], queue.Queue[Any]]]
        self._commands = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._running = True
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- the thread ---------------------------------------------------------

    def _serve(self) -> None:
        try:
            while self._running:
                self._pump()
                self._run_commands()
                timeout = self.listener.get_event_timeout()
                wait = 0.05 if timeout is None else min(timeout, 0.05)
                select.select([self.listener.fileno(), self._wake_r], [], [], wait)
        except BaseException as exc:  # reported to the next call
            self._failure = exc

    def _run_commands(self) -> None:
        if self._readable():
            os.read(self._wake_r, 4096)
        while True:
            try:
                func, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            self._pump()
            try:
                result: Any = ("ok", func(self))
            except BaseException as exc:
                result = ("exc", exc)
            self._pump()
            reply.put(result)

    def _readable(self) -> bool:
        ready, _, _ = select.select([self._wake_r], [], [], 0)
        return bool(ready)

    def _pump(self) -> None:
        """One tick, and everything it made possible: accept, read."""
        self.listener.handle_events()
        if self.conn is None:
            conn = self.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            if conn is None:
                return
            conn.set_blocking_mode(False)
            conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
            conn.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
            self.conn = conn
        conn = self.conn
        if not self.established:
            try:
                conn.accept()
            except quicconn.WantReadError:
                return
            except quicconn.Error:
                return
            self.established = True
        while True:
            try:
                stream = conn.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
            except quicconn.Error:
                break
            if stream is None:
                break
            self.streams[stream.get_stream_id()] = PeerStream(stream)
        if self.read_streams:
            for entry in self.streams.values():
                self._drain(entry)
        self._take_datagrams(conn)

    def _take_datagrams(self, conn: quicconn.Connection) -> None:
        recv = getattr(conn, "recv_datagram", None)
        if recv is None:
            return
        while True:
            try:
                self.datagrams.append(recv())
            except quicconn.Error:
                return

    def _drain(self, entry: PeerStream) -> None:
        stream = entry.stream
        if entry.fin or entry.reset_code is not None:
            return
        if not stream.get_stream_type() & quicconn.STREAM_TYPE_READ:
            return
        while True:
            try:
                entry.data += stream.read(-1)
            except quicconn.WantReadError:
                return
            except quicconn.ZeroReturnError:
                entry.fin = True
                return
            except quicconn.StreamResetError as exc:
                entry.reset_code = exc.error_code
                return
            except quicconn.Error:
                return

    # -- commands -----------------------------------------------------------

    def call(self, func: Callable[[Peer], Any], timeout: float = 10.0) -> Any:
        """Run ``func(peer)`` on the peer's thread, between two ticks."""
        if self._failure is not None:
            raise RuntimeError("the peer thread failed") from self._failure
        reply: queue.Queue[Any] = queue.Queue()
        self._commands.put((func, reply))
        os.write(self._wake_w, b"x")
        kind, value = reply.get(timeout=timeout)
        if kind == "exc":
            raise value
        return value

    def sync(self) -> None:
        """Let the peer process everything the client has sent so far."""
        self.call(lambda p: None)

    def wait_connection(self, timeout: float = 5.0) -> None:
        """Wait (on the client's side) until the peer completed a handshake."""
        deadline = timeout
        step = 0.01
        while deadline > 0:
            if self.call(lambda p: p.established):
                return
            threading.Event().wait(step)
            deadline -= step
        raise TimeoutError("the peer saw no handshake")

    def _stream(self, stream_id: int) -> quicconn.Stream:
        return self.streams[stream_id].stream

    def write(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        flags = quicconn.WRITE_FLAG_CONCLUDE if fin else 0
        self.call(lambda p: p._stream(stream_id).write_ex2(data, flags))

    def open_stream(
        self, uni: bool = False, data: bytes = b"", fin: bool = False
    ) -> int:
        def run(p: Peer) -> int:
            assert p.conn is not None
            flags = quicconn.STREAM_FLAG_UNI if uni else 0
            stream = p.conn.new_stream(flags)
            sid = stream.get_stream_id()
            p.streams[sid] = PeerStream(stream)
            if data or fin:
                stream.write_ex2(data, quicconn.WRITE_FLAG_CONCLUDE if fin else 0)
            return sid

        sid: int = self.call(run)
        return sid

    def reset(self, stream_id: int, code: int) -> None:
        self.call(lambda p: p._stream(stream_id).stream_reset(code))

    def stop_sending(self, stream_id: int, code: int) -> None:
        def run(p: Peer) -> None:
            assert p.conn is not None
            channel = channel_of(p.conn)
            core = channel.require_core()
            core.stop_sending(stream_id, code)
            channel.send_soon()

        self.call(run)

    def close(self, code: int, reason: str) -> None:
        def run(p: Peer) -> None:
            assert p.conn is not None
            p.conn.shutdown(
                quicconn.SHUTDOWN_FLAG_NO_BLOCK
                | quicconn.SHUTDOWN_FLAG_NO_STREAM_FLUSH,
                code,
                reason,
            )

        self.call(run)

    def received(self, stream_id: int) -> tuple[bytes, bool, int | None]:
        """What the peer got on a stream: data, FIN, reset code."""

        def run(p: Peer) -> tuple[bytes, bool, int | None]:
            entry = p.streams.get(stream_id)
            if entry is None:
                return b"", False, None
            return bytes(entry.data), entry.fin, entry.reset_code

        result: tuple[bytes, bool, int | None] = self.call(run)
        return result

    def freeze(self) -> None:
        """Stop answering (a blackhole): the socket stays open, unread."""
        self._running = False
        os.write(self._wake_w, b"x")
        self._thread.join(5)

    def stop(self) -> None:
        self.freeze()
        conn = self.conn
        if conn is not None:
            conn.free()
        self.listener.free()
        os.close(self._wake_r)
        os.close(self._wake_w)


class ClientPeer:
    """A quicconn client in a thread: the peer of the server scenarios.

    :meth:`start` begins a nonblocking handshake that the thread carries
    on; commands run on the thread, as :class:`Peer`'s do.
    """

    def __init__(
        self, cafile: str, address: tuple[str, int], *, alpn: list[str]
    ) -> None:
        import socket

        ctx = quicconn.Context(quicconn.CLIENT)
        ctx.load_verify_locations(cafile)
        ctx.set_alpn_protos(alpn)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(address)
        self.conn = quicconn.Connection(ctx)
        self.conn.set_fd(self.sock)
        self.conn.set1_host("localhost")
        self.conn.set_blocking_mode(False)
        self.connecting = False
        self.established = False
        self.received = bytearray()
        self.fin = False
        self._commands: queue.Queue[
            tuple[Callable[[ClientPeer], Any], queue.Queue[Any]]
        ]
        self._commands = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            self._pump()
            ready, _, _ = select.select([self._wake_r], [], [], 0)
            if ready:
                os.read(self._wake_r, 4096)
            while True:
                try:
                    func, reply = self._commands.get_nowait()
                except queue.Empty:
                    break
                try:
                    result: Any = ("ok", func(self))
                except BaseException as exc:
                    result = ("exc", exc)
                self._pump()
                reply.put(result)
            timeout = self.conn.get_event_timeout() if self.connecting else None
            wait = 0.05 if timeout is None else min(timeout, 0.05)
            select.select([self.sock, self._wake_r], [], [], wait)

    def _pump(self) -> None:
        if not self.connecting:
            return
        conn = self.conn
        if not self.established:
            try:
                conn.connect()
            except quicconn.WantReadError:
                return
            except quicconn.Error:
                return
            self.established = True
        conn.handle_events()
        if conn.get_stream_id() is None or self.fin:
            return
        while True:
            try:
                self.received += conn.read(-1)
            except quicconn.ZeroReturnError:
                self.fin = True
                return
            except quicconn.Error:
                return

    def call(self, func: Callable[[ClientPeer], Any], timeout: float = 10.0) -> Any:
        reply: queue.Queue[Any] = queue.Queue()
        self._commands.put((func, reply))
        os.write(self._wake_w, b"x")
        kind, value = reply.get(timeout=timeout)
        if kind == "exc":
            raise value
        return value

    def start(self) -> None:
        """Begin the handshake (the first flight goes out now)."""

        def run(p: ClientPeer) -> None:
            p.connecting = True
            try:
                p.conn.connect()
                p.established = True
            except quicconn.WantReadError:
                pass

        self.call(run)

    def wait_established(self, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if self.call(lambda p: p.established):
                return
            threading.Event().wait(0.01)
        raise TimeoutError("the client peer never completed its handshake")

    def write(self, data: bytes, fin: bool = False) -> None:
        flags = quicconn.WRITE_FLAG_CONCLUDE if fin else 0
        self.call(lambda p: p.conn.write_ex2(data, flags))

    def stop(self) -> None:
        self._running = False
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self.conn.free()
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


__all__ = ["ClientPeer", "Peer", "PeerStream"]
