"""A byte-exact bulk exchange over real loopback sockets, optionally relayed.

:func:`exchange` runs a quicconn listener (a thread) and a quicconn client:
the client uploads ``size`` bytes on one stream, the server checks their
digest and answers with ``size`` bytes of its own, the client checks
those; both then close.  Context options (``max_datagram_size``,
``use_gso``, ...) apply to both ends.  ``via`` puts a relay between them
(``via(server_address)`` is a context manager yielding the address the
client should use); ``halfway`` runs once half the upload is written.
The result says how long it took and holds both ends' transports, whose
counters (``coalesced_receives``, ``datagrams_sent``) tests read.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import quicconn
from quicconn._core.pmtud import BASE_PLPMTU
from quicconn._io.transport import DatagramTransport
from quicconn._objects import connection, listener
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]
Address = tuple[str, int]
Relay = Callable[[Address], AbstractContextManager[Address]]


@dataclass
class Exchanged:
    seconds: float
    client_transport: DatagramTransport
    server_transport: DatagramTransport


def payload(n: int, seed: bytes) -> bytes:
    """``n`` bytes that differ everywhere (a shifted copy would not match)."""
    out = bytearray()
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def _apply(ctx: quicconn.Context, options: dict[str, Any]) -> None:
    for name, value in options.items():
        setattr(ctx, name, value)


@contextmanager
def _server(
    pki: CertFiles, size: int, options: dict[str, Any]
) -> Iterator[tuple[quicconn.Listener, dict[str, Any]]]:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    _apply(ctx, options)
    server = ctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    server.listen()
    result: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn = server.accept_connection()
            assert conn is not None
            stream = conn.accept_stream()
            assert stream is not None
            digest = hashlib.sha256()
            buf = bytearray(65536)
            while True:
                try:
                    n = stream.readinto(buf)
                except quicconn.ZeroReturnError:
                    break
                digest.update(memoryview(buf)[:n])
            result["up"] = digest.hexdigest()
            stream.write(payload(size, b"down"))
            stream.stream_conclude()
            conn.shutdown(quicconn.SHUTDOWN_FLAG_WAIT_PEER)  # the client closes
            conn.free()
        except BaseException as exc:  # raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=serve, name="bulk-server", daemon=True)
    thread.start()
    result["thread"] = thread
    try:
        yield server, result
    finally:
        thread.join(60)
        server.free()
    if "error" in result:
        raise result["error"]


def settle(conn: quicconn.Connection, stream: quicconn.Stream, data: bytes) -> int:
    """Write ``data`` in small pieces, pausing between them, until the
    client's datagram size has stopped changing; how much was written.

    A client that probes the path MTU only when it has nothing else to
    send (qh3's) needs these quiet moments: during a bulk upload it would
    not probe.
    """
    core = connection.channel_of(conn).require_core()
    sizes: list[int] = []
    sent = 0
    chunk = 4096
    while sent < min(256 * 1024, len(data) // 2):
        stream.write(data[sent : sent + chunk])
        sent += chunk
        time.sleep(0.005)
        conn.handle_events()  # a write that fits the buffer does not tick
        sizes.append(core.path_mtu())
        if len(sizes) > 25 and sizes[-1] > BASE_PLPMTU and sizes[-25] == sizes[-1]:
            break
    return sent


def exchange(
    pki: CertFiles,
    *,
    size: int = 1_500_000,
    via: Relay | None = None,
    settle_first: bool = False,
    halfway: Callable[[], None] | None = None,
    **options: Any,
) -> Exchanged:
    """Upload then download ``size`` bytes, byte-exact (see the module)."""
    with _server(pki, size, options) as (server, result):
        server_address: Address = server.local_address()[:2]
        relay = via(server_address) if via is not None else nullcontext(server_address)
        with relay as address:
            ctx = quicconn.Context(quicconn.CLIENT)
            ctx.load_verify_locations(pki.ca)
            ctx.set_alpn_protos(ALPN)
            _apply(ctx, options)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            conn = quicconn.Connection(ctx)
            conn.set_fd(sock)
            conn.set1_initial_peer_addr(address)
            conn.set1_host("localhost")
            started = time.monotonic()
            conn.connect()
            stream = conn.new_stream()
            upload = payload(size, b"up")
            half = size // 2
            sent = settle(conn, stream, upload) if settle_first else 0
            stream.write(upload[sent:half])
            if halfway is not None:
                halfway()
            stream.write(upload[half:])
            stream.stream_conclude()
            digest = hashlib.sha256()
            buf = bytearray(65536)
            received = 0
            while True:
                try:
                    n = stream.readinto(buf)
                except quicconn.ZeroReturnError:
                    break
                digest.update(memoryview(buf)[:n])
                received += n
            seconds = time.monotonic() - started
            client_transport = connection.channel_of(conn).require_reactor().transport
            server_transport = listener.port_of(server).reactor.transport
            stream.free()
            conn.shutdown()
            conn.free()
            # The server's last packets cross the relay too.
            result["thread"].join(30)
    assert result.get("up") == hashlib.sha256(upload).hexdigest(), "upload corrupted"
    assert received == size, f"downloaded {received} of {size} bytes"
    expected = hashlib.sha256(payload(size, b"down")).hexdigest()
    assert digest.hexdigest() == expected, "download corrupted"
    return Exchanged(seconds, client_transport, server_transport)


__all__ = ["ALPN", "Exchanged", "exchange", "payload", "settle"]
