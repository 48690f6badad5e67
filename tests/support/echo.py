"""A one-thread, nonblocking echo server over a quicconn Listener.

Each connection echoes its default stream: everything read is written back,
and the peer's FIN is answered with FIN.  The connection is freed once the
peer closes it.  Accepted connections use explicit event handling, so the
per-connection calls never tick the shared reactor: one
``listener.handle_events()`` per loop turn does the I/O for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import quicconn


@dataclass
class _Echo:
    handshaken: bool = False
    fin: bool = False
    concluded: bool = False
    pending: bytearray = field(default_factory=bytearray)
    echoed: int = 0


class EchoServer:
    """Call :meth:`step` after every ``listener.handle_events()``."""

    def __init__(self, listener: quicconn.Listener) -> None:
        self.listener = listener
        listener.set_blocking_mode(False)
        listener.listen()
        self.conns: dict[quicconn.Connection, _Echo] = {}
        self.completed = 0
        self.bytes_echoed = 0
        self.errors: list[BaseException] = []

    def step(self) -> None:
        while True:
            conn = self.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            if conn is None:
                break
            conn.set_value_uint(
                quicconn.VALUE_CLASS_GENERIC,
                quicconn.VALUE_EVENT_HANDLING_MODE,
                quicconn.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
            )
            # What is pending grows between writes: a write that would
            # block must not have to be repeated with the same bytes.
            conn.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
            self.conns[conn] = _Echo()
        for conn, state in list(self.conns.items()):
            try:
                self._serve(conn, state)
            except quicconn.ConnectionTerminatedError:
                self._finish(conn, state)
            except (quicconn.Error, ValueError) as exc:
                self.errors.append(exc)
                self._finish(conn, state)

    def _serve(self, conn: quicconn.Connection, state: _Echo) -> None:
        if conn.get_conn_close_info() is not None:
            self._finish(conn, state)
            return
        if not state.handshaken:
            try:
                conn.accept()
            except quicconn.WantReadError:
                return
            state.handshaken = True
        while not state.fin:
            try:
                state.pending += conn.read()
            except quicconn.WantReadError:
                break
            except quicconn.ZeroReturnError:
                state.fin = True
        while state.pending:
            try:
                n = conn.write(state.pending)
            except quicconn.WantWriteError:
                break
            del state.pending[:n]
            state.echoed += n
        if state.fin and not state.pending and not state.concluded:
            conn.stream_conclude()
            state.concluded = True

    def _finish(self, conn: quicconn.Connection, state: _Echo) -> None:
        del self.conns[conn]
        if state.concluded:
            self.completed += 1
        self.bytes_echoed += state.echoed
        conn.free()
