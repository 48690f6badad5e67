"""OpenSSL's thread-assisted client (OSSL_QUIC_client_thread_method) in quicconn.

The application sends a request and then makes no call at all for a while
(``--pause`` seconds, longer than the connection's idle timeout).  The
assist thread keeps the connection alive meanwhile (keep-alive PINGs) and
processes the response as it arrives, so ``poll()`` with
``POLL_FLAG_NO_HANDLE_EVENTS`` (report what is known, touch nothing) finds
the stream readable; see docs/event-loops.md.

    python examples/thread-assisted-client.py [--cafile CA] [--pause 3]
        [--idle-timeout 1] hostname port
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import quicconn


def main() -> int:
    parser = argparse.ArgumentParser(description="thread-assisted quicconn client")
    parser.add_argument("--cafile")
    parser.add_argument("--pause", type=float, default=3.0)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("hostname")
    parser.add_argument("port", type=int)
    args = parser.parse_args()

    ctx = quicconn.Context(quicconn.CLIENT_THREAD)  # OSSL_QUIC_client_thread_method
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
    else:
        ctx.load_default_verify_paths()
    ctx.set_alpn_protos(["http/1.0"])
    ctx.idle_timeout = args.idle_timeout
    infos = socket.getaddrinfo(args.hostname, args.port, type=socket.SOCK_DGRAM)
    sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
    with quicconn.Connection(ctx) as conn:
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(infos[0][4])
        conn.set1_host(args.hostname)
        conn.connect()
        stream = conn.new_stream()
        request = b"GET / HTTP/1.0\r\nHost: " + args.hostname.encode() + b"\r\n\r\n"
        stream.write_ex2(request, quicconn.WRITE_FLAG_CONCLUDE)

        time.sleep(args.pause)  # no call: the assist thread does the work

        [revents] = quicconn.poll(
            [(stream, quicconn.POLL_EVENT_R)],
            timeout=0,
            flags=quicconn.POLL_FLAG_NO_HANDLE_EVENTS,
        )
        print(
            f"after {args.pause:g} s without a call (idle timeout "
            f"{args.idle_timeout:g} s): readable={bool(revents)} "
            f"open={conn.get_conn_close_info() is None}",
            file=sys.stderr,
        )
        response = bytearray()
        while True:
            try:
                response += stream.read()
            except quicconn.ZeroReturnError:
                break
        sys.stdout.buffer.write(bytes(response))
    sock.close()
    return 0 if revents else 1


if __name__ == "__main__":
    sys.exit(main())
