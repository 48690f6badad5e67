"""A NAT on loopback that rebinds: each client's mapping moves to a new
outside port mid-connection, as a home router's does when its mapping
times out (NAT rebinding, RFC 9000 section 9.3).

Each client talks to its own *inside* socket; the NAT forwards what it
gets to the server from the mapping's *outside* socket, and the server's
answers back to the client.  After ``rebind_after`` datagrams from the
client it switches to a second outside socket (a new source port) and
closes the first: the server sees the same connection arrive from a new
address.  Everything forwarded to the server is counted per destination
connection ID, which is how a test checks where each datagram went.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from quicconn._core.wire import peek_destination_cid

Address = tuple[Any, ...]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, mapping: Mapping, outside: int | None) -> None:
        self.mapping = mapping
        self.outside = outside

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.outside is None:
            self.mapping.from_client(data, addr)
        else:
            self.mapping.from_server(data, self.outside)


class Mapping:
    """One client's NAT mapping (see the module docstring)."""

    def __init__(self, server: Address, rebind_after: int, cid_length: int) -> None:
        self.server = server
        self.rebind_after = rebind_after
        self.cid_length = cid_length
        self.inside: asyncio.DatagramTransport | None = None
        self.outside: list[asyncio.DatagramTransport] = []
        self.active = 0
        self.client: Address | None = None
        #: Datagrams forwarded to the server, per destination connection ID,
        #: and the IDs in the order they first appeared.
        self.forwarded: Counter[bytes] = Counter()
        self.order: list[bytes] = []
        self.to_server = 0
        #: Datagrams from the server on the new outside port.
        self.answered_after_rebind = 0
        self.outside_ports: list[int] = []
        #: Datagrams from other inside addresses (dropped).
        self.strangers = 0

    async def open(self) -> int:
        """Bind the sockets; the inside port the client should talk to."""
        loop = asyncio.get_running_loop()
        inside, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self, None), local_addr=("127.0.0.1", 0)
        )
        self.inside = inside
        for n in range(2):
            outside, _ = await loop.create_datagram_endpoint(
                lambda n=n: _Side(self, n), local_addr=("127.0.0.1", 0)
            )
            self.outside.append(outside)
            self.outside_ports.append(outside.get_extra_info("sockname")[1])
        return int(inside.get_extra_info("sockname")[1])

    @property
    def rebound(self) -> bool:
        return self.active == 1

    def from_client(self, data: bytes, addr: Address) -> None:
        if len(self.outside) < 2:
            return  # a late datagram for the port's previous owner
        if self.client is not None and addr != self.client:
            # Another client still talking to this port number under an
            # earlier mapping: a NAT maps one inside address, not a port.
            self.strangers += 1
            return
        self.client = addr
        self.to_server += 1
        if self.to_server > self.rebind_after and self.active == 0:
            self.active = 1
            self.outside[0].close()  # the old mapping is gone
        cid = peek_destination_cid(data, self.cid_length) or b""
        if cid not in self.forwarded:
            self.order.append(cid)
        self.forwarded[cid] += 1
        self.outside[self.active].sendto(data, self.server)

    def from_server(self, data: bytes, outside: int) -> None:
        if outside != self.active or self.client is None or self.inside is None:
            return
        if outside == 1:
            self.answered_after_rebind += 1
        self.inside.sendto(data, self.client)

    def close(self) -> None:
        for transport in [self.inside, *self.outside]:
            if transport is not None:
                transport.close()
