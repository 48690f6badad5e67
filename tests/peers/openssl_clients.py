"""QUIC handshakes from OpenSSL 3.5's client, as a cheap load generator.

Run as a program under OpenSSL 3.5's loader (``interop.peers.
openssl35_command``; bench/workers.py does)::

    python tests/peers/openssl_clients.py --port P --ca CA --clients 300 \\
        [--alpn quicconn-test]

One blocking handshake after another, each on a new connected UDP socket
(OpenSSL's QUIC client through ctypes: tests/differential/libssl.py),
closed at once with a rapid shutdown.  OpenSSL does the handshake in C, so
a load process costs far less CPU per handshake than a Python client and
leaves the cores to the server being measured.  Prints one JSON line in
tests/peers/aioquic_clients.py's shape.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.differential.libssl import (
    SSL_CTRL_SET_TLSEXT_HOSTNAME,
    LibSSL,
    alpn_wire,
)

#: SSL_SHUTDOWN_FLAG_RAPID (openssl/ssl.h): send CONNECTION_CLOSE, do not
#: wait out the terminating period.
SHUTDOWN_RAPID = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--alpn", action="append", default=None)
    parser.add_argument("--server-name", default="localhost")
    args = parser.parse_args()
    lib = LibSSL()
    ctx = lib.SSL_CTX_new(lib.OSSL_QUIC_client_method())
    lib.SSL_CTX_set_verify(ctx, 1, None)
    if lib.SSL_CTX_load_verify_locations(ctx, args.ca.encode(), None) != 1:
        raise SystemExit(f"cannot load {args.ca}: {lib.errors()}")
    wire = alpn_wire(args.alpn or ["quicconn-test"])
    lib.SSL_CTX_set_alpn_protos(ctx, wire, len(wire))
    name = args.server_name.encode()
    errors: list[str] = []
    done = 0
    started_at = time.time()
    last = started_at
    for index in range(args.clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((args.host, args.port))
        ssl = lib.SSL_new(ctx)
        try:
            lib.SSL_set_fd(ssl, sock.fileno())
            lib.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, name)
            lib.SSL_set1_host(ssl, name)
            if lib.SSL_connect(ssl) != 1:
                errors.append(f"client {index}: {lib.errors() or 'SSL_connect failed'}")
                continue
            done += 1
            last = time.time()
            lib.SSL_shutdown_ex(ssl, SHUTDOWN_RAPID, None, 0)
        finally:
            lib.SSL_free(ssl)
            lib.ERR_clear_error()
            sock.close()
    span = last - started_at
    result = {
        "ok": done,
        "failed": len(errors),
        "errors": errors[:5],
        "seconds": time.time() - started_at,
        "handshakes_per_s": done / span if span else 0.0,
        "started_at": started_at,
        "last_handshake_at": last,
    }
    print(json.dumps(result), flush=True)
    lib.SSL_CTX_free(ctx)
    sys.exit(0 if not errors else 1)


if __name__ == "__main__":
    main()
