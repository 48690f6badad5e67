"""A port of OpenSSL's demos/guide/quic-multi-stream.c to quicconn.

A blocking QUIC client that uses several streams on one connection, with
the default stream turned off: it sends one HTTP/1.0-style request on a
bidirectional stream and one on a unidirectional stream, reads the first
response from the bidirectional stream, then accepts the stream the server
opens for the second response.  (As the C demo says, HTTP/1.0 over QUIC is
not a real protocol; examples/quic-server-ssl-poll-http.py answers it.)
Each step keeps the name of the OpenSSL call it replaces.

    python examples/quic-multi-stream.py [-6] [--cafile CA] hostname port \\
        [path1 [path2]]
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
        sock.setblocking(False)  # BIO_socket_nbio
        return sock, address
    raise OSError(f"cannot connect a UDP socket to {hostname}:{port}")


def write_a_request(stream: quicconn.Stream, path: str, hostname: str) -> None:
    """The demo's write_a_request(): three SSL_write_ex calls."""
    stream.write(f"GET {path} HTTP/1.0\r\nConnection: close\r\nHost: ".encode())
    stream.write(hostname.encode())
    stream.write(b"\r\n\r\n")


def read_to_end(stream: quicconn.Stream) -> bool:
    """Print a stream until the peer's FIN; False if the connection died."""
    try:
        while True:
            sys.stdout.buffer.write(stream.read(160))  # SSL_read_ex
    except quicconn.ZeroReturnError:
        pass  # normal completion: the peer concluded the stream (FIN)
    except quicconn.SSLError:
        # SSL_ERROR_SSL: a reset, or the connection failed.
        state = stream.get_stream_read_state()  # SSL_get_stream_read_state
        if state == quicconn.STREAM_STATE_RESET_REMOTE:
            print("Stream reset occurred")
        elif state == quicconn.STREAM_STATE_CONN_CLOSED:
            print("Connection closed")
            return False
        else:
            print("Unknown stream failure")
    sys.stdout.flush()
    print()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description="multi-stream QUIC client demo")
    parser.add_argument("-6", dest="ipv6", action="store_true")
    parser.add_argument("--cafile", help="trust this CA instead of the system store")
    parser.add_argument("hostname")
    parser.add_argument("port")
    parser.add_argument("path1", nargs="?", default="/request1.html")
    parser.add_argument("path2", nargs="?", default="/request2.html")
    args = parser.parse_args()

    ctx = quicconn.Context(quicconn.CLIENT)  # SSL_CTX_new(OSSL_QUIC_client_method())
    ctx.set_verify(quicconn.VERIFY_PEER)  # SSL_CTX_set_verify
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
    else:
        ctx.load_default_verify_paths()  # SSL_CTX_set_default_verify_paths

    conn = quicconn.Connection(ctx)  # SSL_new
    # We use several streams, so turn the default stream off (recommended).
    conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
    family = socket.AF_INET6 if args.ipv6 else socket.AF_INET
    sock, peer_addr = create_socket(args.hostname, args.port, family)
    conn.set_fd(sock)  # SSL_set_bio
    conn.set_tlsext_host_name(args.hostname)  # SNI
    conn.set1_host(args.hostname)  # the name the certificate must match
    conn.set_alpn_protos(["http/1.0"])  # SSL_set_alpn_protos
    conn.set1_initial_peer_addr(peer_addr)  # SSL_set1_initial_peer_addr

    streams: list[quicconn.Stream] = []
    try:
        conn.connect()  # SSL_connect
    except quicconn.VerificationError as exc:
        print(f"Failed to connect to the server\nVerify error: {exc}")
        return 1
    except quicconn.Error as exc:
        print(f"Failed to connect to the server: {exc}")
        return 1

    try:
        # Two client-initiated streams: bidirectional, then unidirectional.
        stream1 = conn.new_stream()  # SSL_new_stream(ssl, 0)
        stream2 = conn.new_stream(quicconn.STREAM_FLAG_UNI)
        streams += [stream1, stream2]

        write_a_request(stream1, args.path1, args.hostname)
        write_a_request(stream2, args.path2, args.hostname)

        # Reading one stream to its end before the next keeps the demo
        # simple; the streams could as well be read interleaved, or each in
        # its own thread.
        print("Stream 1 data:")
        if not read_to_end(stream1):
            return 1

        # The answer to the unidirectional request comes on a stream the
        # server opens.  Blocking mode: this waits for it (pass
        # ACCEPT_STREAM_NO_BLOCK not to).
        stream3 = conn.accept_stream()  # SSL_accept_stream(ssl, 0)
        if stream3 is None:
            print("Failed to accept a new stream")
            return 1
        streams.append(stream3)
        print("Stream 3 data:")
        if not read_to_end(stream3):
            return 1

        while not conn.shutdown():  # SSL_shutdown until it returns 1
            pass
        return 0
    except quicconn.Error as exc:
        print(f"Failed: {exc}")
        return 1
    finally:
        for stream in streams:
            stream.free()  # SSL_free on each stream, before the connection
        conn.free()  # SSL_free
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
