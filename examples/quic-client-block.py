"""A port of OpenSSL's demos/guide/quic-client-block.c to quicconn.

A blocking QUIC client: sends an HTTP/1.0 request on the default stream,
concluding it with FIN, prints the response until the server's FIN, then
shuts the connection down.  Each step keeps the name of the OpenSSL call it
replaces, so the two files read side by side.

    python examples/quic-client-block.py [-6] [--cafile CA] hostname port
"""

from __future__ import annotations

import argparse
import socket
import sys

import quicconn


def create_socket(hostname: str, port: str, family: int) -> tuple[socket.socket, tuple]:
    """Like the demo's create_socket_bio(): a connected UDP socket."""
    for fam, _, _, _, address in socket.getaddrinfo(
        hostname, port, family, socket.SOCK_DGRAM
    ):
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            sock.connect(address)  # BIO_connect
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)  # BIO_socket_nbio: QUIC sockets are nonblocking
        return sock, address
    raise OSError(f"cannot connect a UDP socket to {hostname}:{port}")


def main() -> int:
    parser = argparse.ArgumentParser(description="blocking QUIC client demo")
    parser.add_argument("-6", dest="ipv6", action="store_true")
    parser.add_argument("--cafile", help="trust this CA instead of the system store")
    parser.add_argument("hostname")
    parser.add_argument("port")
    args = parser.parse_args()

    ctx = quicconn.Context(quicconn.CLIENT)  # SSL_CTX_new(OSSL_QUIC_client_method())
    ctx.set_verify(quicconn.VERIFY_PEER)  # SSL_CTX_set_verify
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
    else:
        ctx.load_default_verify_paths()  # SSL_CTX_set_default_verify_paths

    conn = quicconn.Connection(ctx)  # SSL_new
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    sock, peer_addr = create_socket(args.hostname, args.port, family)
    conn.set_fd(sock)  # SSL_set_bio / SSL_set_fd
    conn.set_tlsext_host_name(args.hostname)  # SNI
    conn.set1_host(args.hostname)  # the name the certificate must match
    conn.set_alpn_protos(["http/1.0"])
    conn.set1_initial_peer_addr(peer_addr)

    try:
        conn.connect()  # SSL_connect
    except quicconn.VerificationError as exc:
        print(f"Failed to connect to the server\nVerify error: {exc}")
        return 1
    except quicconn.Error as exc:
        print(f"Failed to connect to the server: {exc}")
        return 1

    request_start = b"GET / HTTP/1.0\r\nConnection: close\r\nHost: "
    conn.write(request_start)  # SSL_write_ex
    conn.write(args.hostname.encode())
    conn.write_ex2(b"\r\n\r\n", quicconn.WRITE_FLAG_CONCLUDE)  # SSL_write_ex2

    try:
        while True:
            sys.stdout.buffer.write(conn.read(160))  # SSL_read_ex
    except quicconn.ZeroReturnError:
        pass  # the server concluded the stream: normal completion
    except quicconn.SSLError:
        state = conn.get_stream_read_state()  # SSL_get_stream_read_state
        if state == quicconn.STREAM_STATE_RESET_REMOTE:
            print("Stream reset occurred")
        elif state == quicconn.STREAM_STATE_CONN_CLOSED:
            print("Connection closed")
            conn.free()
            return 1
        else:
            print("Unknown stream failure")
    print()

    while not conn.shutdown():  # SSL_shutdown until it returns 1
        pass
    conn.free()  # SSL_free
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
