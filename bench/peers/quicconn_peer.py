"""quicconn as a benchmark peer: a bulk server and a bulk client.

Run as a program (bench/bulk.py starts it)::

    python bench/peers/quicconn_peer.py server --cert C --key K [--retry]
        [--set NAME=VALUE ...]
    python bench/peers/quicconn_peer.py client --port P --ca CA --size N
        [--set NAME=VALUE ...]

The core is the environment's (``QUICCONN_CORE``); ``--set`` sets a
:class:`quicconn.Context` attribute on every context the program makes
(the value is read as a Python literal when it is one, else as a string),
so a knob the driver grows can be benchmarked without a change here.

The server prints ``READY <port> <core>`` once listening, then serves one
connection at a time: the client's first line on its default stream is
``send N``; the server answers with N bytes of a pattern and FIN, and waits
for the client to close.  The client connects, asks for ``--size`` bytes,
reads to FIN, closes, and prints one JSON line: bytes, wall seconds and CPU
seconds of the transfer (from before the handshake to the last byte; the
interpreter's start-up and imports are not counted) and the core.
"""

from __future__ import annotations

import argparse
import ast
import json
import resource
import socket
import sys
import time
from typing import Any

import quicconn

ALPN = ["quicconn-test"]
CHUNK = 256 * 1024
PATTERN = memoryview(bytes(range(256)) * (CHUNK // 256))


def knobs(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` strings as Context attributes (properties only: a
    misspelt knob must not be set silently as a new attribute)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set wants NAME=VALUE, got {pair!r}")
        if not isinstance(getattr(quicconn.Context, name, None), property):
            raise SystemExit(f"--set {name}: quicconn.Context has no such attribute")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve(args: argparse.Namespace) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protos(ALPN)
    for name, value in knobs(args.set).items():
        setattr(ctx, name, value)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.host, 0))
    flags = 0 if args.retry else quicconn.LISTENER_FLAG_NO_VALIDATE
    listener = ctx.new_listener(sock, flags)
    listener.listen()
    print(f"READY {sock.getsockname()[1]} {ctx.core}", flush=True)
    while True:
        conn = listener.accept_connection()
        assert conn is not None  # a blocking accept waits for one
        try:
            line = bytearray()
            while not line.endswith(b"\n"):
                line += conn.read(64)
            words = line.split()
            if words[0] != b"send":
                raise ValueError(f"unknown request {bytes(line)!r}")
            left = int(words[1])
            while left:
                left -= conn.write(PATTERN[: min(left, CHUNK)])
            conn.stream_conclude()
            while not conn.shutdown():
                pass
        except quicconn.Error as exc:
            print(f"connection failed: {exc}", file=sys.stderr, flush=True)
        finally:
            conn.free()


def download(args: argparse.Namespace) -> None:
    # The core's backend (and its QUIC library) is imported by the first
    # Context: here, before the clock starts, as the other Python stacks'
    # imports are (bench/peers/asyncio_peer.py).
    quicconn.Context(quicconn.CLIENT)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    conn = quicconn.connect(
        "localhost", args.port, alpn=ALPN, cafile=args.ca, **knobs(args.set)
    )
    core = conn.get_core_name()
    conn.write(b"send %d\n" % args.size)
    buf = bytearray(CHUNK)
    received = 0
    while True:
        try:
            received += conn.readinto(buf)
        except quicconn.ZeroReturnError:
            break
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
    conn.free()
    print(
        json.dumps({"bytes": received, "seconds": seconds, "cpu": cpu, "core": core}),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--retry", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    if args.role == "server":
        serve(args)
    else:
        download(args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
