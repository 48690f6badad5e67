"""aioquic's or qh3's own asyncio stack as a benchmark peer.

qh3 is a fork of aioquic and keeps its asyncio API (``connect``, ``serve``,
``QuicConnectionProtocol``, ``QuicConfiguration``), so one program drives
either, as their users would::

    python bench/peers/asyncio_peer.py --stack qh3 server --cert C --key K
        [--retry] [--tickets] [--alpn A ...]
    python bench/peers/asyncio_peer.py --stack qh3 client --port P --ca CA
        --size N

Each stack runs with its own default configuration (flow-control windows,
datagram size, path MTU probing): what its users get.  The server prints
``READY <port>`` once listening; on every bidirectional stream whose first
line is ``send N`` it answers N bytes of a pattern and FIN (any other stream
is ignored: bench/handshakes.py's clients only handshake).  The client asks
for ``--size`` bytes on one stream, reads to FIN, closes, and prints one JSON
line: bytes, wall seconds and CPU seconds of the transfer (from before the
handshake to the last byte; start-up and imports are not counted).

``--tickets`` gives the server a session ticket store, as both stacks'
example HTTP/3 servers have: it then sends a NewSessionTicket after each
handshake, as OpenSSL's and quicconn's servers do by default.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import resource
import ssl
import sys
import time
from typing import Any

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(stack: str) -> tuple[Any, Any, Any]:
    """(the asyncio module, QuicConfiguration, StreamDataReceived) of ``stack``."""
    aio = importlib.import_module(f"{stack}.asyncio")
    configuration = importlib.import_module(f"{stack}.quic.configuration")
    events = importlib.import_module(f"{stack}.quic.events")
    return aio, configuration.QuicConfiguration, events.StreamDataReceived


async def serve(args: argparse.Namespace) -> None:
    aio, QuicConfiguration, StreamDataReceived = load(args.stack)

    class Sender(aio.QuicConnectionProtocol):  # type: ignore[misc]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._heads: dict[int, bytes] = {}

        def quic_event_received(self, event: Any) -> None:
            if not isinstance(event, StreamDataReceived):
                return
            head = self._heads.pop(event.stream_id, b"") + event.data
            if b"\n" not in head:
                self._heads[event.stream_id] = head
                return
            words = head.split(b"\n", 1)[0].split()
            if len(words) == 2 and words[0] == b"send":
                payload = pattern_bytes(int(words[1]))
                self._quic.send_stream_data(event.stream_id, payload, True)
                self.transmit()

    seen: set[str] = set()

    def report_once(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A stack's failure in a callback is told once, not per connection.
        exc = context.get("exception")
        text = f"{type(exc).__name__}: {exc}" if exc else str(context.get("message"))
        if text not in seen:
            seen.add(text)
            print(f"{args.stack} server: {text} (told once)", file=sys.stderr)

    asyncio.get_running_loop().set_exception_handler(report_once)
    config = QuicConfiguration(is_client=False, alpn_protocols=args.alpn)
    config.load_cert_chain(args.cert, args.key)
    tickets: dict[bytes, object] = {}
    server = await aio.serve(
        args.host,
        0,
        configuration=config,
        create_protocol=Sender,
        retry=args.retry,
        session_ticket_fetcher=tickets.pop if args.tickets else None,
        session_ticket_handler=(
            (lambda ticket: tickets.__setitem__(ticket.ticket, ticket))
            if args.tickets
            else None
        ),
    )
    port = server._transport.get_extra_info("sockname")[1]
    print(f"READY {port}", flush=True)
    await asyncio.Future()


async def download(args: argparse.Namespace) -> None:
    aio, QuicConfiguration, _ = load(args.stack)
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=args.alpn,
        verify_mode=ssl.CERT_REQUIRED,
        server_name="localhost",
    )
    config.load_verify_locations(args.ca)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    async with aio.connect(args.host, args.port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(b"send %d\n" % args.size)
        received = 0
        while chunk := await reader.read(256 * 1024):
            received += len(chunk)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        client.close()
    print(json.dumps({"bytes": received, "seconds": seconds, "cpu": cpu}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=["aioquic", "qh3"], required=True)
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--retry", action="store_true")
    parser.add_argument("--tickets", action="store_true")
    parser.add_argument("--alpn", action="append", default=None)
    args = parser.parse_args()
    args.alpn = args.alpn or ["quicconn-test"]
    asyncio.run(serve(args) if args.role == "server" else download(args))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
