"""quic_server_multi.py: one nonblocking loop serving many QUIC clients at once.

OpenSSL's guide demos serve one client at a time.  A real server keeps
hundreds of connections going from one thread; with quicconn that looks
like this:

* one nonblocking listener owns the UDP socket; every connection it hands
  out shares that socket;
* each turn of the loop calls ``listener.handle_events()`` once: that does
  the network I/O and fires the timers of *every* connection (a deadline
  heap inside, so the cost does not grow with idle connections);
* accepted connections use explicit event handling, so serving them never
  ticks the shared socket again; they only move data between the QUIC
  stream buffers and the application;
* the loop sleeps in select() for at most ``listener.get_event_timeout()``,
  the earliest deadline of all connections.

The service echoes each client's default stream (FIN answered with FIN).
Writes use ``MODE_ENABLE_PARTIAL_WRITE``: a nonblocking ``write()`` takes
what the stream has room (and the client credit) for and says how much,
so the unsent rest simply stays in the backlog.  (Without it a write is
all-or-nothing, as in OpenSSL: after ``WantWriteError`` it must be retried
with the same buffer, of the same length, until it succeeds; retrying with
a backlog that grew in between is the "bad write retry" error.)  And a
client's bytes are read only while its backlog is small: a client that
sends faster than it reads the echo is held back by QUIC flow control
instead of growing this server's memory.

    python examples/quic_server_multi.py PORT server.crt server.key \\
        [--alpn hq-interop] [--no-validate] [--num-tickets 2] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import select
import signal
import sys
from dataclasses import dataclass, field

import quicconn

#: Stop reading a client while this much of its echo waits to be sent.
MAX_BACKLOG = 256 * 1024


@dataclass
class Client:
    """Per-connection application state: bytes waiting to be echoed."""

    handshaken: bool = False
    got_fin: bool = False
    concluded: bool = False
    backlog: bytearray = field(default_factory=bytearray)


class EchoService:
    def __init__(self, listener: quicconn.Listener) -> None:
        self.listener = listener
        self.clients: dict[quicconn.Connection, Client] = {}
        self.served = 0

    def accept_new(self) -> None:
        while (conn := self.listener.accept_connection()) is not None:
            # The listener's handle_events() does the I/O for everyone.
            conn.set_value_uint(
                quicconn.VALUE_CLASS_GENERIC,
                quicconn.VALUE_EVENT_HANDLING_MODE,
                quicconn.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
            )
            # write() returns how much the stream took (SSL_MODE_ENABLE_PARTIAL_WRITE).
            conn.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
            self.clients[conn] = Client()

    def serve_all(self) -> None:
        for conn, client in list(self.clients.items()):
            try:
                done = self.serve(conn, client)
            except quicconn.Error as exc:
                # ConnectionTerminatedError, a reset stream, ...: drop it.
                print(f"connection failed: {exc}", file=sys.stderr)
                done = True
            if done:
                del self.clients[conn]
                conn.free()

    def serve(self, conn: quicconn.Connection, client: Client) -> bool:
        """Move data for one connection; True once it can be freed."""
        if conn.get_conn_close_info() is not None:
            self.served += client.concluded
            return True  # the client closed the connection
        if not client.handshaken:
            try:
                conn.accept()  # accepted connections may be mid-handshake
            except quicconn.WantReadError:
                return False
            client.handshaken = True
        while not client.got_fin and len(client.backlog) < MAX_BACKLOG:
            try:
                client.backlog += conn.read(MAX_BACKLOG - len(client.backlog))
            except quicconn.WantReadError:
                break
            except quicconn.ZeroReturnError:
                client.got_fin = True
        while client.backlog:
            try:
                written = conn.write(client.backlog)  # partial: what fits now
            except quicconn.WantWriteError:
                break  # the client has not granted more credit yet
            del client.backlog[:written]
        if client.got_fin and not client.backlog and not client.concluded:
            conn.stream_conclude()
            client.concluded = True
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description="many-client QUIC echo server")
    parser.add_argument("port", type=int)
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--alpn", action="append", default=None)
    parser.add_argument(
        "--no-validate", action="store_true", help="no Retry address validation"
    )
    parser.add_argument(
        "--num-tickets",
        type=int,
        default=2,
        help="session tickets per handshake (0: none, no resumption)",
    )
    args = parser.parse_args()
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protos(args.alpn or ["hq-interop", "quicconn-test"])
    ctx.set_num_tickets(args.num_tickets)
    flags = quicconn.LISTENER_FLAG_NO_VALIDATE if args.no_validate else 0
    listener = ctx.new_listener((args.host, args.port), flags)
    listener.listen()
    listener.set_blocking_mode(False)
    service = EchoService(listener)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Listening on {args.host}:{listener.local_address()[1]}", flush=True)
    fd = listener.fileno()
    try:
        while True:
            listener.handle_events()
            service.accept_new()
            service.serve_all()
            writers = [fd] if listener.net_write_desired() else []
            select.select([fd], writers, [], listener.get_event_timeout())
    except KeyboardInterrupt:
        pass
    finally:
        print(
            f"served {service.served} clients; {listener.stats}",
            file=sys.stderr,
            flush=True,
        )
        for conn in service.clients:
            conn.free()
        listener.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
