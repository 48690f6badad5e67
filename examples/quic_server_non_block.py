"""quic_server_non_block.py: OpenSSL's demos/guide/quic-server-non-block.c.

The same echo service as quic_server_block.py, with a nonblocking listener:
every call returns at once, and the program waits for socket activity
itself, in select(), for no longer than get_event_timeout() allows.  The
client's whole message (at most 8 KiB) is read first and echoed back in one
write that also concludes the stream.

    python examples/quic_server_non_block.py PORT server.crt server.key

Where Python differs from the C: exceptions replace SSL_get_error() after a
failed call (handle_io_failure() below maps them back), and the socket is
bound to 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys

import quicconn

ALPN = ["http/1.0", "hq-interop"]
BUFSIZE = 8192


def create_ctx(cert_path: str, key_path: str) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = quicconn.VERIFY_NONE
    ctx.set_alpn_protos(ALPN)
    return ctx


def create_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def wait_for_activity(obj: quicconn.Listener | quicconn.Connection) -> None:
    """Sleep until the socket is ready or the QUIC stack has timers to run."""
    sock = obj.fileno()
    readers = [sock] if obj.net_read_desired() else []
    writers = [sock] if obj.net_write_desired() else []
    # None means "no timer": wait for the socket alone.
    timeout = obj.get_event_timeout()
    select.select(readers, writers, [], timeout)


def handle_io_failure(conn: quicconn.Connection, exc: quicconn.Error) -> int:
    """1: retry after waiting; 0: end of stream; -1: fatal (see the C demo)."""
    if isinstance(exc, (quicconn.WantReadError, quicconn.WantWriteError)):
        wait_for_activity(conn)
        return 1
    if isinstance(exc, quicconn.ZeroReturnError):
        return 0
    if isinstance(exc, quicconn.SyscallError):
        return -1
    state = conn.get_stream_read_state()
    if state == quicconn.STREAM_STATE_RESET_REMOTE:
        print("Stream reset occurred")
    elif state == quicconn.STREAM_STATE_CONN_CLOSED:
        print("Connection closed")
    else:
        print(f"Unknown stream failure: {exc}")
    return -1


def serve_one(conn: quicconn.Connection) -> bool:
    """Echo one client's message; False on a fatal error."""
    buf = bytearray()
    while True:
        try:
            buf += conn.read(BUFSIZE - len(buf))
        except quicconn.Error as exc:
            outcome = handle_io_failure(conn, exc)
            if outcome == 1:
                continue
            if outcome == 0:
                break
            print("Failed reading remaining data", file=sys.stderr)
            return False
        if len(buf) >= BUFSIZE:
            print("Could not fit all data into buffer", file=sys.stderr)
            return False
    while True:
        try:
            written = conn.write_ex2(bytes(buf), quicconn.WRITE_FLAG_CONCLUDE)
            break
        except quicconn.Error as exc:
            if handle_io_failure(conn, exc) == 1:
                continue
            print("Failed to write data", file=sys.stderr)
            return False
    if written != len(buf):
        print(f"Failed to echo data [read: {len(buf)}, written: {written}]")
    while True:
        try:
            if conn.shutdown():
                return True
        except quicconn.Error as exc:
            if handle_io_failure(conn, exc) != 1:
                return True  # the peer already closed: nothing left to do
        wait_for_activity(conn)


def run_quic_server(ctx: quicconn.Context, sock: socket.socket) -> None:
    listener = ctx.new_listener(sock)
    # Nonblocking mode is inherited by the connections the listener makes.
    listener.set_blocking_mode(False)
    listener.listen()
    try:
        while True:
            print("Waiting for connection", flush=True)
            while (conn := listener.accept_connection()) is None:
                wait_for_activity(listener)
            print("Accepted new connection", flush=True)
            try:
                serve_one(conn)
            finally:
                conn.free()
    finally:
        listener.free()


def main() -> int:
    parser = argparse.ArgumentParser(description="nonblocking QUIC echo server")
    parser.add_argument("port", type=int)
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    if not 0 < args.port <= 65535:
        parser.error("Failed to parse port number")
    ctx = create_ctx(args.cert, args.key)
    sock = create_socket(args.host, args.port)
    try:
        run_quic_server(ctx, sock)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
