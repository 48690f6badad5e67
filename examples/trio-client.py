"""A trio client on quicconn.trio: one HTTP/1.0 request over QUIC.

The QUIC stream is a ``trio.abc.HalfCloseableStream``: ``send_all``,
``send_eof`` (FIN), ``receive_some`` (b"" at the peer's FIN); see
docs/event-loops.md.

    python examples/trio-client.py [--cafile CA] hostname port
"""

from __future__ import annotations

import argparse
import sys

import trio

import quicconn.trio as qt


async def fetch(host: str, port: int, cafile: str | None) -> bytes:
    conn = await qt.connect(host, port, alpn=["http/1.0"], cafile=cafile)
    async with conn, await conn.open_stream() as stream:
        await stream.send_all(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
        await stream.send_eof()  # FIN after the request
        response = bytearray()
        while data := await stream.receive_some():  # b"" at the server's FIN
            response += data
        return bytes(response)


def main() -> int:
    parser = argparse.ArgumentParser(description="quicconn.trio client")
    parser.add_argument("--cafile")
    parser.add_argument("hostname")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    response = trio.run(fetch, args.hostname, args.port, args.cafile)
    sys.stdout.buffer.write(response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
