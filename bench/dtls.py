"""bench/dtls: sequential DTLS 1.2 handshakes against ``openssl s_server -dtls``.

quicconn's blocking ``DTLSConnection`` versus a bare pyOpenSSL client (the
same OpenSSL, memory BIOs, a plain UDP socket and ``select``), alternating
rounds in one invocation.  Each handshake is followed by close_notify so
s_server takes the next client.  Prints handshakes per second, the client's
CPU per handshake, and the median ratio: quicconn's carrier overhead.

    python bench/dtls.py [--handshakes 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import time

from _common import env_note, make_certs, measure, median
from OpenSSL import SSL

import quicconn


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quicconn_handshake(port: int, ctx: quicconn.DTLSContext) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    conn = quicconn.DTLSConnection(ctx)
    conn.set_fd(sock)
    conn.set1_host("localhost")
    conn.connect()
    conn.shutdown()
    conn.free()
    sock.close()


def _drain(ssl: SSL.Connection, sock: socket.socket) -> None:
    data = b""
    while True:
        try:
            data += ssl.bio_read(65536)
        except SSL.WantReadError:
            break
    i = 0
    while i < len(data):  # one record per datagram, as quicconn sends them
        end = i + 13 + int.from_bytes(data[i + 11 : i + 13], "big")
        sock.send(data[i:end])
        i = end


def pyopenssl_handshake(port: int, ctx: SSL.Context) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    ssl = SSL.Connection(ctx, None)
    ssl.set_connect_state()
    ssl.set_ciphertext_mtu(1200)
    while True:
        try:
            ssl.do_handshake()
            break
        except SSL.WantReadError:
            _drain(ssl, sock)
        timeout = ssl.DTLSv1_get_timeout()
        if select.select([sock], [], [], timeout)[0]:
            ssl.bio_write(sock.recv(65535))
        else:
            ssl.DTLSv1_handle_timeout()
    _drain(ssl, sock)
    ssl.shutdown()
    _drain(ssl, sock)
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    certs = make_certs()
    port = free_port()
    server = subprocess.Popen(
        [
            *("openssl", "s_server", "-dtls", "-quiet", "-accept"),
            *(f"127.0.0.1:{port}", "-cert", str(certs.cert), "-key", str(certs.key)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        qctx = quicconn.DTLSContext(quicconn.CLIENT)
        qctx.load_verify_locations(certs.ca)
        pctx = SSL.Context(SSL.DTLS_METHOD)
        pctx.load_verify_locations(str(certs.ca))
        pctx.set_verify(SSL.VERIFY_PEER, None)
        pctx.set_options(SSL.OP_NO_QUERY_MTU)
        print(f"# {env_note()}; {args.handshakes} handshakes per run", flush=True)
        ratios = []
        for round_ in range(args.rounds):
            rates = {}
            for name, run in (
                ("quicconn", lambda: quicconn_handshake(port, qctx)),
                ("pyOpenSSL", lambda: pyopenssl_handshake(port, pctx)),
            ):
                with measure() as m:
                    for _ in range(args.handshakes):
                        run()
                rates[name] = args.handshakes / m[0]
                print(
                    f"round {round_} {name:9s} {rates[name]:7.1f} handshakes/s "
                    f"{m[1] / args.handshakes * 1000:6.2f} ms CPU each",
                    flush=True,
                )
            ratios.append(rates["quicconn"] / rates["pyOpenSSL"])
        print(f"median quicconn/pyOpenSSL handshake rate: {median(ratios):.2f}")
    finally:
        server.kill()
        server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
