"""An asyncio QUIC echo server on quicconn.asyncio, shaped like asyncio's own.

``start_server`` runs the handler for every connection in a task of its
own once the handshake completed; the handler serves each stream the
client opens in a further task, using the stream as an asyncio
``StreamReader``/``StreamWriter`` pair.  See docs/event-loops.md.

    python examples/asyncio-echo-server.py --cert cert.pem --key key.pem [--port 4433]
    python examples/asyncio-echo-server.py --self-test [--clients 50]

``--self-test`` makes a throwaway certificate, serves on a free port and
runs that many clients against the server in the same loop, each echoing
three streams, every byte checked.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import tempfile

import quicconn
import quicconn.asyncio as qa

ALPN = ["echo"]


async def echo_stream(stream: qa.Stream) -> None:
    reader, writer = stream.as_streams()
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()  # FIN after the echo
    await writer.wait_closed()


async def handle(conn: qa.Connection) -> None:
    async with asyncio.TaskGroup() as streams:
        while True:
            try:
                stream = await conn.accept_stream()
            except quicconn.ConnectionTerminatedError:
                return  # the client closed the connection
            streams.create_task(echo_stream(stream))


async def client(port: int, cafile: str, index: int) -> None:
    async with await qa.connect("localhost", port, alpn=ALPN, cafile=cafile) as conn:

        async def one(n: int) -> None:
            reader, writer = await conn.create_stream()
            payload = os.urandom(1000 + 997 * index + n)
            writer.write(payload)
            writer.write_eof()
            assert await reader.read() == payload, f"client {index}: echo differs"

        await asyncio.gather(*(one(n) for n in range(3)))


async def serve(args: argparse.Namespace) -> None:
    server = await qa.start_server(
        handle, args.host, args.port, certfile=args.cert, keyfile=args.key, alpn=ALPN
    )
    print(f"listening on {server.local_address()}", flush=True)
    async with server:
        await server.serve_forever()


async def self_test(clients: int) -> int:
    folder = tempfile.mkdtemp(prefix="quicconn-echo-")
    cert, key = make_certificate(folder)
    async with await qa.start_server(
        handle, "127.0.0.1", 0, certfile=cert, keyfile=key, alpn=ALPN
    ) as server:
        port = server.local_address()[1]
        await asyncio.gather(*(client(port, cert, i) for i in range(clients)))
    print(f"self-test: {clients} clients x 3 streams echoed")
    return 0


def make_certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate for localhost (the self-test trusts it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as fp:
        fp.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fp:
        fp.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def main() -> int:
    parser = argparse.ArgumentParser(description="quicconn.asyncio echo server")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    if args.self_test:
        return asyncio.run(self_test(args.clients))
    if not args.cert:
        parser.error("--cert is needed (or --self-test)")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
