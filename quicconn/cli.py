"""The ``quicconn`` command.

``quicconn demo`` starts a local QUIC server with a freshly generated
certificate, connects a client to it over loopback UDP with verification on,
moves some data both ways and prints what happened at each step.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from . import _constants as c
from ._certs import make_pki
from ._connection import Connection
from ._context import Context
from ._errors import Error, ZeroReturnError
from ._listener import Listener

DEMO_ALPN = "quicconn-demo"


def _serve_echo(listener: Listener, done: threading.Event) -> None:
    """Accept one connection; echo its default stream back, uppercased."""
    conn = listener.accept_connection()
    if conn is None:
        return
    try:
        conn.accept()
        received = bytearray()
        while True:
            try:
                received += conn.read()
            except ZeroReturnError:
                break
        conn.write_ex2(bytes(received).upper(), c.WRITE_FLAG_CONCLUDE)
        conn.shutdown(c.SHUTDOWN_FLAG_WAIT_PEER)
    finally:
        conn.free()
        done.set()


def demo(size: int, out: TextIO | None = None) -> int:
    """Run the self-contained demo; returns a process exit status."""

    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    with tempfile.TemporaryDirectory(prefix="quicconn-demo-") as tmp:
        pki = make_pki(Path(tmp))
        say(f"generated a throwaway CA and a certificate for localhost in {tmp}")

        server_ctx = Context(c.SERVER)
        server_ctx.load_cert_chain(pki.cert, pki.key)
        server_ctx.set_alpn_protos([DEMO_ALPN])
        listener = server_ctx.new_listener(("127.0.0.1", 0))
        listener.listen()
        host, port = listener.local_address()[:2]
        say(f"server listening on udp://{host}:{port} (Retry address validation on)")
        done = threading.Event()
        thread = threading.Thread(
            target=_serve_echo, args=(listener, done), daemon=True
        )
        thread.start()

        client_ctx = Context(c.CLIENT)
        client_ctx.load_verify_locations(pki.ca)
        client_ctx.set_alpn_protos([DEMO_ALPN])
        conn = Connection(client_ctx)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr((host, port))
        conn.set1_host("localhost")
        try:
            started = time.perf_counter()
            conn.connect()
            handshake = time.perf_counter() - started
            say(
                f"handshake complete in {handshake * 1000:.1f} ms: certificate for "
                f"'localhost' verified, ALPN {conn.get0_alpn_selected()!r}, "
                f"{listener.stats.retries_sent} Retry round trip"
            )
            payload = (b"hello, quic! " * (size // 13 + 1))[:size]
            started = time.perf_counter()
            conn.write_ex2(payload, c.WRITE_FLAG_CONCLUDE)
            echoed = bytearray()
            while True:
                try:
                    echoed += conn.read()
                except ZeroReturnError:
                    break
            elapsed = time.perf_counter() - started
            ok = bytes(echoed) == payload.upper()
            say(
                f"sent {len(payload):,} bytes and read {len(echoed):,} back "
                f"({'verified' if ok else 'MISMATCH'}) in {elapsed * 1000:.1f} ms: "
                f"{2 * len(payload) * 8 / elapsed / 1e6:.1f} Mbit/s both ways"
            )
            conn.shutdown()
            say(f"connection {conn.get_conn_close_info()}")
        except Error as exc:
            say(f"demo failed: {exc} (SSL_get_error() = {exc.code})")
            return 1
        finally:
            conn.free()
            sock.close()
            done.wait(5)
            listener.free()
        return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quicconn", description="OpenSSL's QUIC API in Python: tools and demos"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="start a local server and talk to it, explaining each step"
    )
    demo_parser.add_argument(
        "--size", type=int, default=1_000_000, help="bytes to echo (default 1 MB)"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.size)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
