"""HTTP/3 servers on quicconn for the HTTP client tests, each in a thread.

``serve_files`` runs quicconn's :class:`~quicconn.http.FileServer`;
:class:`EchoServer` is a small server on quicconn's sessions whose paths
choose what it does, so that each client behaviour has a server that
provokes it:

* anything else: once the request's body has ended, answer 200 with the
  body echoed, the request's trailers as ``x-request-*`` headers, and a
  trailer of its own (``x-sha256`` of the body);
* ``/reset``: reset the request stream (H3_REQUEST_REJECTED) at once;
* ``/silent``: never answer;
* ``/stall``: send the response head, then nothing;
* ``/paused``: never read the request body (flow control stops the
  client), never answer;
* ``/close``: close the connection (application error 0x101);
* ``/barrier?n=N``: answer only once N such requests are waiting at the
  same time, on any connections (a client that does not send them
  concurrently never gets an answer);
* ``/bytes?n=N&seed=S``: N pseudo-random bytes (:func:`random_bytes`).

It records every request head, the error code of every RESET_STREAM and
STOP_SENDING the client sent, and every connection's close.

A server that leaves one upload unread (``/paused``) while the same
connection carries on needs a core that grants credit only as the
application reads (``Capability.CREDIT_ON_CONSUME``): on a core without it
(qh3) a quicconn server that holds a connection window of unread data
stops taking the connection's other events (docs/cores.md).  Tests of such
scenarios pass ``core=core_with(Capability.CREDIT_ON_CONSUME)``
(tests/support/cores.py): the client under test still runs on the default
core.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import quicconn
from quicconn import (
    STREAM_STATE_FINISHED,
    STREAM_STATE_RESET_LOCAL,
    STREAM_STATE_RESET_REMOTE,
)
from quicconn.http import (
    DataReceived,
    FileServer,
    HttpSession,
    RequestReceived,
    StreamAborted,
    TrailersReceived,
    session_for,
)
from tests.support.certs import CertFiles

H3_REQUEST_REJECTED = 0x10B

_RESET = (STREAM_STATE_RESET_LOCAL, STREAM_STATE_RESET_REMOTE)
_DONE = (STREAM_STATE_FINISHED, *_RESET)


def random_bytes(n: int, seed: int) -> bytes:
    """What ``/bytes?n=N&seed=S`` answers."""
    return random.Random(seed).randbytes(n)


@contextmanager
def serve_files(
    pki: CertFiles, root: Path, **ctx_options: Any
) -> Iterator[tuple[int, FileServer]]:
    """quicconn's FileServer on 127.0.0.1 (h3 and hq-interop); yields
    ``(port, server)``.  ``ctx_options`` set server Context attributes."""
    listener = quicconn.listen(
        ("127.0.0.1", 0),
        str(pki.cert),
        str(pki.key),
        alpn=["h3", "hq-interop"],
        **ctx_options,
    )
    server = FileServer(listener, root)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield listener.local_address()[1], server
    finally:
        stop.set()
        thread.join(5)
        server.close()
        listener.free()


class EchoServer:
    """See the module docstring."""

    def __init__(
        self, pki: CertFiles, *, core: str | None = None, **ctx_options: Any
    ) -> None:
        ctx = quicconn.Context(quicconn.SERVER, core=core)
        ctx.load_cert_chain(str(pki.cert), str(pki.key))
        ctx.set_alpn_protos(["h3"])
        for name, value in ctx_options.items():
            setattr(ctx, name, value)
        self.listener = ctx.new_listener(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.set_blocking_mode(False)
        self.port = self.listener.local_address()[1]
        self.requests: list[RequestReceived] = []
        #: (connection number, request) for every request head.
        self.request_connections: list[tuple[int, RequestReceived]] = []
        #: (connection number, stream ID) -> the code of the client's
        #: RESET_STREAM, and of its STOP_SENDING.
        self.resets: dict[tuple[int, int], int] = {}
        self.stops: dict[tuple[int, int], int] = {}
        #: How each connection closed, once it did.
        self.closes: list[quicconn.ConnCloseInfo] = []
        self.connections = 0
        self._settled: set[tuple[int, int]] = set()
        self._own_resets: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sessions: list[tuple[int, HttpSession]] = []
        pending: list[quicconn.Connection] = []
        bodies: dict[tuple[int, int], bytearray] = {}
        trailers: dict[tuple[int, int], list[tuple[bytes, bytes]]] = {}
        barrier: dict[int, list[tuple[HttpSession, int]]] = {}
        while not self._stop.is_set():
            self.listener.handle_events()
            conn = self.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            if conn is not None:
                pending.append(conn)
            for conn in list(pending):
                if conn.is_init_finished():
                    pending.remove(conn)
                    self.connections += 1
                    sessions.append((self.connections, session_for(conn)))
                elif conn.get_conn_close_info() is not None:
                    pending.remove(conn)
                    conn.free()
            for number, session in list(sessions):
                close = session.conn.get_conn_close_info()
                if close is not None:
                    with self._lock:
                        self.closes.append(close)
                    sessions.remove((number, session))
                    session.conn.free()
                    continue
                for event in session.process():
                    key = (number, event.stream_id)
                    if isinstance(event, RequestReceived):
                        self._request(number, session, event, bodies, barrier)
                    elif isinstance(event, StreamAborted):
                        bodies.pop(key, None)
                    elif isinstance(event, TrailersReceived):
                        trailers[key] = event.headers
                    elif isinstance(event, DataReceived) and key in bodies:
                        bodies[key] += event.data
                        if event.ended:
                            self._echo(
                                session,
                                event.stream_id,
                                bodies.pop(key),
                                trailers.pop(key, []),
                            )
                session.flush()
                self._note_aborts(number, session)
            time.sleep(0.001)
        for _, session in sessions:
            session.conn.free()

    def _request(
        self,
        number: int,
        session: HttpSession,
        event: RequestReceived,
        bodies: dict[tuple[int, int], bytearray],
        barrier: dict[int, list[tuple[HttpSession, int]]],
    ) -> None:
        with self._lock:
            self.requests.append(event)
            self.request_connections.append((number, event))
        url = urlsplit(event.path)
        stream_id = event.stream_id
        if url.path == "/reset":
            self._own_resets.add((number, stream_id))
            session.streams[stream_id].stream_reset(H3_REQUEST_REJECTED)
        elif url.path == "/stall":
            session.send_response_head(stream_id, 200, [(b"content-length", b"100")])
        elif url.path == "/paused":
            session.pause_reading(stream_id)
        elif url.path == "/close":
            session.conn.shutdown(
                quicconn.SHUTDOWN_FLAG_NO_BLOCK
                | quicconn.SHUTDOWN_FLAG_NO_STREAM_FLUSH,
                0x101,
                "closing on request",
            )
        elif url.path == "/barrier":
            want = int(parse_qs(url.query)["n"][0])
            waiting = barrier.setdefault(want, [])
            waiting.append((session, stream_id))
            if len(waiting) == want:
                for other, other_id in barrier.pop(want):
                    other.send_response_head(other_id, 200, [])
                    other.send_body(other_id, b"together", True)
        elif url.path == "/bytes":
            query = parse_qs(url.query)
            body = random_bytes(int(query["n"][0]), int(query["seed"][0]))
            session.send_response_head(
                stream_id, 200, [(b"content-length", str(len(body)).encode())]
            )
            session.send_body(stream_id, body, True)
        elif url.path != "/silent":
            bodies[(number, stream_id)] = bytearray()
            if event.ended:
                self._echo(session, stream_id, bodies.pop((number, stream_id)), [])

    def _note_aborts(self, number: int, session: HttpSession) -> None:
        for stream_id, stream in session.streams.items():
            key = (number, stream_id)
            if stream_id % 4 or key in self._settled:
                continue  # not a request stream, or done
            read = stream.get_stream_read_state()
            write = stream.get_stream_write_state()
            with self._lock:
                if read == STREAM_STATE_RESET_REMOTE:
                    self.resets[key] = stream.get_stream_read_error_code() or 0
                # A STOP_SENDING makes the stack reset the stream with its
                # code: RESET_LOCAL, as in OpenSSL 3.5 (see stream_state.py).
                if write in _RESET and key not in self._own_resets:
                    self.stops[key] = stream.get_stream_write_error_code() or 0
            if read in _DONE and write in _DONE:
                self._settled.add(key)

    @staticmethod
    def _echo(
        session: HttpSession,
        stream_id: int,
        body: bytearray,
        trailers: list[tuple[bytes, bytes]],
    ) -> None:
        extra = [(b"x-request-" + k, v) for k, v in trailers]
        session.send_response_head(stream_id, 200, [(b"x-echo", b"1"), *extra])
        session.send_body(stream_id, bytes(body), False)
        digest = hashlib.sha256(body).hexdigest().encode()
        session.send_trailers(stream_id, [(b"x-sha256", digest)])

    def wait_for(self, condition: Any, timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds (it reads what the server saw)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if condition():
                    return
            if time.monotonic() > deadline:
                raise AssertionError("the server never saw it")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.free()


__all__ = ["H3_REQUEST_REJECTED", "EchoServer", "random_bytes", "serve_files"]
