"""A blocking, thread-per-stream QUIC echo server for tests.

Every stream a client opens is echoed: each chunk read is written back at
once, and the client's FIN is answered with a FIN.  Runs on a real UDP
socket; ``with EchoServer(pki) as server:`` starts it, leaving the block
closes the listener and joins every thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

import quicconn
from tests.support.certs import CertFiles
from tests.support.stream_scripts import ContextConfig, client_context, server_context


class EchoServer:
    def __init__(self, pki: CertFiles, config: ContextConfig | None = None) -> None:
        self.pki = pki
        self.config = config or ContextConfig()
        ctx = server_context(pki, self.config)
        self.listener = ctx.new_listener(
            ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
        )
        self.listener.listen()
        self.address = self.listener.local_address()
        self.errors: list[BaseException] = []
        self.streams_served = 0
        self._threads: list[threading.Thread] = []
        self._conns: list[quicconn.Connection] = []
        self._lock = threading.Lock()
        self._stopping = False

    def __enter__(self) -> EchoServer:
        self._spawn(self._accept_loop, "echo-accept")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is None and self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(quicconn.Error):
                conn.shutdown(
                    quicconn.SHUTDOWN_FLAG_RAPID
                    | quicconn.SHUTDOWN_FLAG_NO_STREAM_FLUSH
                )
        for thread in list(self._threads):
            thread.join(10)
        for conn in conns:
            conn.free()
        self.listener.free()

    def client(self) -> tuple[quicconn.Connection, socket.socket]:
        """A blocking, connected client with default stream mode NONE."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        conn = quicconn.Connection(client_context(self.pki, self.config))
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(self.address)
        conn.set1_host("127.0.0.1")
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        conn.connect()
        return conn, sock

    # -- server threads ---------------------------------------------------

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn = self.listener.accept_connection(
                    quicconn.ACCEPT_CONNECTION_NO_BLOCK
                )
                if conn is None:
                    quicconn.poll([(self.listener, quicconn.POLL_EVENT_IC)], 0.1)
                    continue
            except quicconn.Error:
                return
            conn.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
            conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
            with self._lock:
                self._conns.append(conn)
            self._spawn(self._connection, "echo-conn", conn)

    def _connection(self, conn: quicconn.Connection) -> None:
        try:
            conn.accept()
            while not self._stopping:
                stream = conn.accept_stream()
                if stream is None:
                    continue
                self._spawn(self._echo, f"echo-{stream.get_stream_id()}", stream)
        except quicconn.ConnectionTerminatedError:
            pass
        except BaseException as exc:
            if not self._stopping:
                self.errors.append(exc)

    def _echo(self, stream: quicconn.Stream) -> None:
        try:
            while True:
                try:
                    data = stream.read(65536)
                except quicconn.ZeroReturnError:
                    # Count before the FIN goes out: a client that saw the
                    # FIN may check the count at once.
                    with self._lock:
                        self.streams_served += 1
                    stream.stream_conclude()
                    break
                stream.write(data)
        except (quicconn.ConnectionTerminatedError, quicconn.StreamResetError):
            pass
        except BaseException as exc:
            if not self._stopping:
                self.errors.append(exc)
        finally:
            stream.free()
