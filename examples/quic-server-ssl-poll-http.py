"""A port of OpenSSL's demos/guide/quic-server-ssl-poll-http.c to quicconn.

A nonblocking QUIC server that serves many connections from one thread
with ``quicconn.poll()`` (SSL_poll) alone: every object (the listener, each
connection, each stream) is an item with the events it waits for, and a
callback runs when poll() reports them.

The protocol is the tiny one the C demo speaks, with ALPN ``hq-interop``
(HTTP/0.9 over QUIC, as in the QUIC interop runner) or ``http/1.0``:

* a request ``GET /path`` (ended by a line break, or by the stream's FIN) on
  a bidirectional stream is answered on the same stream: the bytes, then FIN;
* a request on a unidirectional stream is answered on a new server-initiated
  unidirectional stream (as quic-multi-stream.c expects).

With ``--docroot DIR`` files are served from DIR (paths cannot escape it;
a missing file resets the stream with error code 1, an ``http/1.0`` client
gets a 404).  Without it, like the C demo, the body is made up: the file's
name repeated, as many bytes as the digits in the name say (12345 if none).
``http/1.0`` responses carry a status line and headers; ``hq-interop`` ones
are the bare body.

    python examples/quic-server-ssl-poll-http.py [--host H] [--docroot DIR] \\
        port server.crt server.key

It prints ``listening on HOST:PORT`` once ready (port 0 picks a free one).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import quicconn
from quicconn import (
    POLL_EVENT_EC,
    POLL_EVENT_ECD,
    POLL_EVENT_EL,
    POLL_EVENT_ER,
    POLL_EVENT_EW,
    POLL_EVENT_F,
    POLL_EVENT_IC,
    POLL_EVENT_ISB,
    POLL_EVENT_ISU,
    POLL_EVENT_OSU,
    POLL_EVENT_R,
    POLL_EVENT_W,
)

ALPNS = ["http/1.0", "hq-interop"]
MAX_REQUEST = 8192  # bytes: a request line longer than this resets the stream
NOT_FOUND = 1  # application error code for a missing file (hq-interop)
BAD_REQUEST = 2  # application error code for a request that cannot be parsed
CHUNK = 16384

POLL_ERROR = POLL_EVENT_F | POLL_EVENT_EL | POLL_EVENT_EC | POLL_EVENT_ECD
POLL_ERROR |= POLL_EVENT_ER | POLL_EVENT_EW
POLL_IN = POLL_EVENT_R | POLL_EVENT_IC | POLL_EVENT_ISB | POLL_EVENT_ISU
POLL_OUT = POLL_EVENT_W | POLL_EVENT_OSU


# ----------------------------------------------------------------------
# responses
# ----------------------------------------------------------------------


def made_up_body(name: str) -> bytes:
    """The C demo's response: the name repeated, size from its digits."""
    digits = re.search(r"\d+", name)
    size = int(digits.group()) if digits else 12345
    pattern = name.encode() or b"foo"
    return (pattern * (size // len(pattern) + 1))[:size]


def respond(request: bytes, docroot: str | None, alpn: str | None) -> bytes | int:
    """The response bytes for ``request``, or an error code to reset with."""
    line = request.split(b"\n", 1)[0].strip()
    parts = line.split()
    if len(parts) < 2 or parts[0].upper() != b"GET" or not parts[1].startswith(b"/"):
        return BAD_REQUEST
    path = unquote(parts[1].decode("latin-1")).split("?", 1)[0]
    if docroot is None:
        body = made_up_body(os.path.basename(path.rstrip("/")) or "index.html")
    else:
        body_or_none = read_file(docroot, path)
        if body_or_none is None:
            if alpn == "http/1.0":
                return b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            return NOT_FOUND
        body = body_or_none
    if alpn == "http/1.0":
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body
    return body


def read_file(docroot: str, path: str) -> bytes | None:
    """A file under ``docroot``; None if missing or outside it."""
    root = os.path.realpath(docroot)
    target = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if target != root and not target.startswith(root + os.sep):
        return None  # "../" and symlinks must not leave the document root
    if os.path.isdir(target):
        target = os.path.join(target, "index.html")
    try:
        with open(target, "rb") as fp:
            return fp.read()
    except OSError:
        return None


# ----------------------------------------------------------------------
# the poll manager: one entry per polled object
# ----------------------------------------------------------------------


@dataclass(eq=False)
class Entry:
    """An object to poll, the events it waits for, and what to do about them."""

    obj: quicconn.Listener | quicconn.Connection | quicconn.Stream
    events: int
    on_in: Callable[[Entry, int], None] | None = None
    on_out: Callable[[Entry, int], None] | None = None
    on_error: Callable[[Entry, int], None] | None = None


@dataclass(eq=False)
class ConnState:
    conn: quicconn.Connection
    entry: Entry | None = None
    replies: deque[bytes] = field(default_factory=deque)  # wait for a uni stream
    streams: set[Entry] = field(default_factory=set)


class Server:
    def __init__(self, listener: quicconn.Listener, docroot: str | None) -> None:
        self.listener = listener
        self.docroot = docroot
        self.entries: list[Entry] = []
        self.running = True
        self.add(Entry(listener, POLL_EVENT_IC | POLL_EVENT_EL, self.on_incoming))

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def remove(self, entry: Entry) -> None:
        if entry in self.entries:
            self.entries.remove(entry)

    def run(self) -> None:
        """The event loop: SSL_poll, then dispatch (run_quic_server in C)."""
        while self.running:
            entries = list(self.entries)
            revents = quicconn.poll([(e.obj, e.events) for e in entries], None)
            for entry, rev in zip(entries, revents, strict=True):
                if not rev or entry not in self.entries:
                    continue
                if rev & POLL_ERROR and entry.on_error is not None:
                    entry.on_error(entry, rev)
                elif rev & POLL_IN and entry.on_in is not None:
                    entry.on_in(entry, rev)
                elif rev & POLL_OUT and entry.on_out is not None:
                    entry.on_out(entry, rev)
                elif rev & POLL_ERROR:
                    self.running = False  # the listener failed

    # -- listener ---------------------------------------------------------

    def on_incoming(self, entry: Entry, rev: int) -> None:
        conn = self.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        if conn is None:
            return
        # A multi-stream server: no default stream, accept every stream.
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        conn.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
        conn.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
        state = ConnState(conn)
        state.entry = Entry(
            conn,
            POLL_EVENT_ISB | POLL_EVENT_ISU | POLL_EVENT_EC | POLL_EVENT_ECD,
            on_in=lambda e, r: self.on_new_stream(state, r),
            on_out=lambda e, r: self.on_can_open(state),
            on_error=lambda e, r: self.on_conn_error(state, r),
        )
        self.add(state.entry)

    # -- connections ------------------------------------------------------

    def on_new_stream(self, state: ConnState, rev: int) -> None:
        stream = state.conn.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
        if stream is None:
            return
        request = bytearray()
        entry = Entry(stream, POLL_EVENT_R | POLL_EVENT_ER)
        entry.on_in = lambda e, r: self.on_request_data(state, e, request)
        entry.on_error = lambda e, r: self.drop_stream(state, e)
        state.streams.add(entry)
        self.add(entry)

    def on_can_open(self, state: ConnState) -> None:
        """OSU: a unidirectional stream may be opened for a pending reply."""
        assert state.entry is not None
        while state.replies:
            try:
                stream = state.conn.new_stream(
                    quicconn.STREAM_FLAG_UNI | quicconn.STREAM_FLAG_NO_BLOCK
                )
            except quicconn.StreamCountLimitedError:
                return  # wait for the next OSU
            self.send_reply(state, stream, state.replies.popleft())
        state.entry.events &= ~POLL_EVENT_OSU

    def on_conn_error(self, state: ConnState, rev: int) -> None:
        assert state.entry is not None
        if rev & POLL_EVENT_ECD:
            # Terminated: release everything of this connection.
            for entry in list(state.streams):
                self.drop_stream(state, entry)
            self.remove(state.entry)
            state.conn.free()
        else:
            # Terminating: wait for the drain (ECD) without EC firing again.
            state.entry.events = POLL_EVENT_ECD

    # -- streams ----------------------------------------------------------

    def on_request_data(
        self, state: ConnState, entry: Entry, request: bytearray
    ) -> None:
        stream = entry.obj
        assert isinstance(stream, quicconn.Stream)
        fin = False
        try:
            while len(request) <= MAX_REQUEST:
                request += stream.read(4096)
        except quicconn.WantReadError:
            pass
        except quicconn.ZeroReturnError:
            fin = True
        complete = fin or b"\n" in request
        if not complete and len(request) <= MAX_REQUEST:
            return  # keep reading
        entry.events = 0  # the request is in: stop reading
        reply = respond(bytes(request), self.docroot, state.conn.get0_alpn_selected())
        if stream.get_stream_type() == quicconn.STREAM_TYPE_BIDI:
            if isinstance(reply, int):
                stream.stream_reset(reply)
                self.drop_stream(state, entry)
            else:
                self.remove(entry)
                state.streams.discard(entry)
                self.send_reply(state, stream, reply)
            return
        # A unidirectional request: answer on a new unidirectional stream.
        self.drop_stream(state, entry)
        if isinstance(reply, bytes):
            state.replies.append(reply)
            assert state.entry is not None
            state.entry.events |= POLL_EVENT_OSU

    def send_reply(
        self, state: ConnState, stream: quicconn.Stream, reply: bytes
    ) -> None:
        view = memoryview(reply)
        sent = 0
        entry = Entry(stream, POLL_EVENT_W | POLL_EVENT_EW)

        def on_writable(e: Entry, rev: int) -> None:
            nonlocal sent
            try:
                while sent < len(view):
                    sent += stream.write_ex2(
                        view[sent : sent + CHUNK],
                        quicconn.WRITE_FLAG_CONCLUDE
                        if sent + CHUNK >= len(view)
                        else 0,
                    )
            except quicconn.WantWriteError:
                return
            if not view:
                stream.stream_conclude()
            self.drop_stream(state, e)  # all written and concluded

        entry.on_out = on_writable
        entry.on_error = lambda e, r: self.drop_stream(state, e)
        state.streams.add(entry)
        self.add(entry)

    def drop_stream(self, state: ConnState, entry: Entry) -> None:
        self.remove(entry)
        state.streams.discard(entry)
        stream = entry.obj
        assert isinstance(stream, quicconn.Stream)
        stream.free()  # SSL_free: concluded data is still delivered


def main() -> int:
    parser = argparse.ArgumentParser(description="poll-driven QUIC hq-interop server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--docroot", help="serve files from here (default: made up)")
    parser.add_argument("port", type=int)
    parser.add_argument("certificate")
    parser.add_argument("key")
    args = parser.parse_args()

    ctx = quicconn.Context(quicconn.SERVER)  # SSL_CTX_new(OSSL_QUIC_server_method())
    ctx.load_cert_chain(args.certificate, args.key)
    ctx.set_alpn_protos(ALPNS)  # the demo's select_alpn callback
    listener = ctx.new_listener((args.host, args.port))  # SSL_new_listener + bind
    listener.set_blocking_mode(False)  # inherited by the connections
    listener.listen()  # SSL_listen
    host, port = listener.local_address()[:2]
    print(f"listening on {host}:{port}", flush=True)
    server = Server(listener, args.docroot)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        listener.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
