"""quic_server_block.py: OpenSSL's demos/guide/quic-server-block.c in Python.

A blocking QUIC echo server: it accepts one connection at a time, echoes
everything the client sends on its stream until the client concludes it,
concludes its own side, shuts the connection down and waits for the next.

    python examples/quic_server_block.py PORT server.crt server.key

Only the ALPN protocols "http/1.0" and "hq-interop" are accepted, as in the
C demo.  Where Python differs from the C: the socket is bound to 127.0.0.1
unless --host says otherwise (the demo binds every interface), and failures
are exceptions carrying SSL_get_error() codes instead of return values.
"""

from __future__ import annotations

import argparse
import socket
import sys

import quicconn

ALPN = ["http/1.0", "hq-interop"]


def create_ctx(cert_path: str, key_path: str) -> quicconn.Context:
    """SSL_CTX_new(OSSL_QUIC_server_method()) and its configuration."""
    ctx = quicconn.Context(quicconn.SERVER)
    # The certificate *chain* (leaf first) and its private key.
    ctx.load_cert_chain(cert_path, key_path)
    # No client certificates are asked for (SSL_VERIFY_NONE).
    ctx.verify_mode = quicconn.VERIFY_NONE
    # The ALPN protocols the server agrees to (SSL_CTX_set_alpn_select_cb).
    ctx.set_alpn_protos(ALPN)
    return ctx


def create_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, port))
    return sock


def run_quic_server(ctx: quicconn.Context, sock: socket.socket) -> None:
    # Listeners, like every QUIC object, are blocking by default, and the
    # connections they hand out inherit that.
    listener = ctx.new_listener(sock)
    listener.listen()
    try:
        while True:
            print("Waiting for connection", flush=True)
            conn = listener.accept_connection()
            assert conn is not None  # a blocking accept waits for one
            print("Accepted new connection", flush=True)
            try:
                # Echo client input until the client concludes its stream.
                while True:
                    try:
                        data = conn.read(8192)
                    except quicconn.ZeroReturnError:
                        break
                    conn.write(data)
                # Signal the end of the stream, then shut down.
                conn.stream_conclude()
                while not conn.shutdown():
                    pass
            except quicconn.Error as exc:
                print(f"Error echoing client input: {exc}", file=sys.stderr)
            finally:
                conn.free()
    finally:
        listener.free()


def main() -> int:
    parser = argparse.ArgumentParser(description="blocking QUIC echo server")
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
