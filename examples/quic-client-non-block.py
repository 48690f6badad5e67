"""A port of OpenSSL's demos/guide/quic-client-non-block.c to quicconn.

The same HTTP/1.0 exchange as quic-client-block.py, with the connection in
nonblocking mode.  Every call that cannot complete raises WantReadError or
WantWriteError (SSL_ERROR_WANT_READ/WRITE); the program then waits with
``selectors`` for what the connection asks for: readability while
``net_read_desired()``, writability while ``net_write_desired()``, and no
longer than ``get_event_timeout()``, after which it retries the call.

    python examples/quic-client-non-block.py [-6] [--cafile CA] hostname port
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
from collections.abc import Callable
from typing import TypeVar

import quicconn

T = TypeVar("T")


def wait_for_activity(conn: quicconn.Connection) -> None:
    """Block until the socket is ready or the connection's timer is due."""
    events = 0
    if conn.net_write_desired():  # SSL_net_write_desired
        events |= selectors.EVENT_WRITE
    if conn.net_read_desired():  # SSL_net_read_desired
        events |= selectors.EVENT_READ
    timeout = conn.get_event_timeout()  # SSL_get_event_timeout; None = infinite
    with selectors.DefaultSelector() as selector:
        if events:
            selector.register(conn.get_rpoll_descriptor(), events)
        selector.select(timeout)


def retry(conn: quicconn.Connection, call: Callable[[], T]) -> T:
    """The demo's handle_io_failure() loop: retry on WANT_READ/WANT_WRITE."""
    while True:
        try:
            return call()
        except (quicconn.WantReadError, quicconn.WantWriteError):
            wait_for_activity(conn)


def main() -> int:
    parser = argparse.ArgumentParser(description="nonblocking QUIC client demo")
    parser.add_argument("-6", dest="ipv6", action="store_true")
    parser.add_argument("--cafile", help="trust this CA instead of the system store")
    parser.add_argument("hostname")
    parser.add_argument("port")
    args = parser.parse_args()

    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.set_verify(quicconn.VERIFY_PEER)
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
    else:
        ctx.load_default_verify_paths()

    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    infos = socket.getaddrinfo(args.hostname, args.port, family, socket.SOCK_DGRAM)
    sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
    sock.connect(infos[0][4])
    sock.setblocking(False)

    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set_tlsext_host_name(args.hostname)
    conn.set1_host(args.hostname)
    conn.set_alpn_protos(["http/1.0"])
    conn.set1_initial_peer_addr(infos[0][4])
    conn.set_blocking_mode(False)  # SSL_set_blocking_mode(ssl, 0)

    try:
        retry(conn, conn.connect)
        request_start = b"GET / HTTP/1.0\r\nConnection: close\r\nHost: "
        retry(conn, lambda: conn.write(request_start))
        retry(conn, lambda: conn.write(args.hostname.encode()))
        retry(conn, lambda: conn.write_ex2(b"\r\n\r\n", quicconn.WRITE_FLAG_CONCLUDE))
        while True:
            try:
                sys.stdout.buffer.write(retry(conn, lambda: conn.read(160)))
            except quicconn.ZeroReturnError:
                break
    except quicconn.Error as exc:
        print(f"Failed: {exc} (SSL_get_error() = {exc.code})")
        conn.free()
        return 1
    print()

    while not conn.shutdown():  # 0 while the close is in progress
        wait_for_activity(conn)
    conn.free()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
