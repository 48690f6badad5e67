"""What hostile peers send: silent ClientHellos.

A *silent ClientHello* is the first flight of a real client (one Initial,
or two for a ClientHello with a post-quantum key share) whose sender never
continues: it decrypts, starts a server handshake and then leaves the
server waiting.  :func:`silent_client_hellos` records the flights of fresh
quicconn clients that send nothing anywhere, so a test can replay them at
a listener at whatever rate it likes.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

import quicconn
from quicconn._io.transport import Datagram, UdpTransport

__all__ = ["silent_client_hellos"]


class _Recorder(UdpTransport):
    """A client transport that keeps what it would send and sends nothing."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.sent: list[bytes] = []

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        self.sent.extend(bytes(data) for data, _ in datagrams)


def silent_client_hellos(
    ctx: quicconn.Context, count: int, server: tuple[str, int]
) -> list[list[bytes]]:
    """The first flights of ``count`` fresh clients of ``ctx`` towards
    ``server`` (each a list of datagrams), none of which will continue."""
    flights = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for _ in range(count):
            recorder = _Recorder(sock)
            conn = quicconn.Connection(ctx)
            conn.set_transport(recorder)
            conn.set1_initial_peer_addr(server)
            conn.set1_host("localhost")
            conn.set_blocking_mode(False)
            with contextlib.suppress(quicconn.WantReadError):
                conn.connect()
            flights.append(recorder.sent)
            conn.free()
    return flights
