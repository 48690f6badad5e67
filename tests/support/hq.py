"""A minimal hq-interop (HTTP/0.9 over QUIC) responder on quicconn's API.

Written with the public stream API only, so tests can put real clients
(OpenSSL's ``s_client -quic``, aioquic's example client) in front of a
quicconn server without the HTTP layer.  A request is ``GET /path`` followed
by CRLF (or LF) on a client-opened bidirectional stream; the answer is the
file's bytes and FIN.  The request is answered as soon as its line is
complete, or at FIN: interop clients conclude the stream after the line,
but ``s_client`` never does (it closes the connection when its stdin ends).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import quicconn

MAX_REQUEST = 4096


@dataclass
class HqLog:
    """What the responder saw, for the test to check."""

    alpn: list[str | None] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    handshakes: int = 0


def _answer(stream: quicconn.Stream, files: dict[str, bytes], log: HqLog) -> None:
    request = b""
    while b"\n" not in request and len(request) < MAX_REQUEST:
        try:
            request += stream.read()
        except quicconn.ZeroReturnError:
            break
    line = request.split(b"\n", 1)[0].strip()
    log.requests.append(line)
    words = line.split()
    if len(words) != 2 or words[0] != b"GET":
        stream.stream_reset(0x10C)  # H3_REQUEST_REJECTED, as interop servers do
        return
    body = files.get(words[1].decode("utf-8", "replace"))
    if body is None:
        stream.stream_reset(0x10C)
        return
    stream.write_ex2(body, quicconn.WRITE_FLAG_CONCLUDE)


def serve_connection(
    conn: quicconn.Connection, files: dict[str, bytes], log: HqLog
) -> None:
    """Complete the handshake, then answer every request until the peer leaves."""
    conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
    conn.accept()
    log.handshakes += 1
    log.alpn.append(conn.get0_alpn_selected())
    while True:
        stream = conn.accept_stream()
        if stream is None:  # pragma: no cover - blocking accept never returns None
            continue
        _answer(stream, files, log)


def start_responder(
    listener: quicconn.Listener, files: dict[str, bytes], connections: int = 1
) -> tuple[threading.Thread, HqLog]:
    """Serve ``connections`` connections, one after another, in a thread."""
    log = HqLog()

    def run() -> None:
        for _ in range(connections):
            try:
                conn = listener.accept_connection()
            except (quicconn.Error, ValueError) as exc:
                log.errors.append(exc)
                return
            assert conn is not None
            try:
                serve_connection(conn, files, log)
            except quicconn.ConnectionTerminatedError:
                pass  # the client is done with us
            except (quicconn.Error, ValueError) as exc:
                log.errors.append(exc)
            finally:
                conn.free()

    thread = threading.Thread(target=run, name="hq-responder", daemon=True)
    thread.start()
    return thread, log
