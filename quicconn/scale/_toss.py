"""Tossing: a datagram the kernel steered to the wrong worker goes on to its owner.

The steering program (:mod:`quicconn._io.steering`) routes by the worker
index in the connection IDs quicconn chose.  An ID a core chose itself
(qh3's Rust core adds one spare ID in NEW_CONNECTION_ID; see
``Capability.CHOSEN_CONNECTION_IDS``) carries no index, and the program
hashes it like a client's ID.  A client that moves to it (OpenSSL's client
does so right after the handshake) would reach whichever worker the hash
names.  The QUIC-LB draft's answer for server processes ("server process
demultiplexing") is to toss such packets to the right one:

* a worker that routes an ID the kernel steers to another worker *claims*
  it there (and releases it when the ID is no longer routed);
* a worker that receives a packet for an ID another worker claimed
  forwards it to that worker, with the client's address, and the
  owner processes it as if it had arrived there.

Both messages are UDP datagrams a worker sends to the group's own address,
shaped as short-header packets whose connection ID carries the target's
index, so the steering program delivers them.  They come from the group's
own port and end in an HMAC under a key derived from the group's keys; any
other datagram is a client's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable

from .._core.quic_lb import QuicLbConfig
from .._core.wire import peek_destination_cid
from .._io import steering

Address = tuple[object, ...]

_MAGIC = b"qcToss1"
_CLAIM, _RELEASE, _DATAGRAM = b"C", b"R", b"D"
_TAG = 16
#: Padding that makes a short header long enough for the steering model.
_PAD = bytes(64)


def steering_layout(config: QuicLbConfig, workers: int) -> steering.SteeringLayout:
    """Where a group's connection IDs (``config``, the worker index after
    its ``server_use`` bytes) name their worker, for the steering program."""
    first = config.first_octet()
    return steering.SteeringLayout(
        workers=workers,
        cid_length=config.cid_length,
        marker=bytes([config.config_id << 5 if first is None else first])
        + config.server_id,
        worker_offset=config.server_use_offset + len(config.server_use),
        marker_mask=0xE0 if first is None else 0xFF,
    )


def _pack_address(addr: Address) -> bytes:
    packed = ipaddress.ip_address(str(addr[0])).packed
    return bytes([len(packed)]) + packed + int(str(addr[1])).to_bytes(2, "big")


def _unpack_address(data: bytes) -> tuple[Address, int]:
    size = data[0]
    host = str(ipaddress.ip_address(data[1 : 1 + size]))
    port = int.from_bytes(data[1 + size : 3 + size], "big")
    if size == 16:
        return (host, port, 0, 0), 3 + size
    return (host, port), 3 + size


class Tosser:
    """One worker's side of tossing (see the module docstring).

    ``send(datagram, address)`` sends on the worker's own socket;
    ``group_address`` is where the group's datagrams arrive (loopback when
    the group is bound to a wildcard address).
    """

    def __init__(
        self,
        index: int,
        workers: int,
        host: QuicLbConfig,
        key: bytes,
        group_address: Address,
        send: Callable[[bytes, Address], None],
    ) -> None:
        self.index = index
        self._layout = steering_layout(host, workers)
        self._cid_length = host.cid_length
        self._steer = [
            dataclasses.replace(host, server_use=host.server_use + bytes([w]))
            for w in range(workers)
        ]
        self._key = hmac.new(key, b"quicconn worker toss", hashlib.sha256).digest()
        self._group = group_address
        self._port = int(str(group_address[1]))
        self._send = send
        #: IDs other workers own that the kernel steers here: to whom.
        self.claims: dict[bytes, int] = {}
        #: Our IDs the kernel steers elsewhere: where we claimed them.
        self._claimed: dict[bytes, int] = {}
        self.tossed_out = 0
        self.tossed_in = 0

    # -- messages -------------------------------------------------------------

    def _message(self, target: int, kind: bytes, body: bytes) -> None:
        header = b"\x40" + self._steer[target].new_cid()
        payload = header + _MAGIC + kind + body
        tag = hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG]
        self._send(payload + tag, self._group)

    def _steered_to(self, cid: bytes) -> int | None:
        return steering.predict(self._layout, b"\x40" + cid + _PAD)

    # -- what the reactor reports -----------------------------------------------

    def on_route(self, cid: bytes, added: bool) -> None:
        """A connection ID of ours was routed (or dropped) here."""
        if added:
            target = self._steered_to(cid)
            if target is None or target == self.index or not cid:
                return
            self._claimed[cid] = target
            self._message(target, _CLAIM, bytes([self.index, len(cid)]) + cid)
        else:
            target = self._claimed.pop(cid, None)
            if target is not None:
                self._message(target, _RELEASE, bytes([self.index, len(cid)]) + cid)

    def forward(self, data: bytes, addr: Address) -> bool:
        """Toss a datagram to the worker that claimed its ID (any header:
        OpenSSL's client sends even its last Handshake packets to an ID it
        has just been given)."""
        if not self.claims:
            return False
        cid = peek_destination_cid(data, self._cid_length)
        owner = None if cid is None else self.claims.get(cid)
        if owner is None:
            return False
        self._message(owner, _DATAGRAM, _pack_address(addr) + data)
        self.tossed_out += 1
        return True

    # -- what arrives -----------------------------------------------------------

    def receive(self, data: bytes, addr: Address) -> tuple[bytes, Address] | None:
        """A datagram from the group's own port: a toss message, taken in.

        Returns a forwarded datagram and its client's address, or None.
        Anything not a valid message is dropped.
        """
        start = 1 + self._cid_length
        body_at = start + len(_MAGIC) + 1
        if len(data) < body_at + _TAG or data[start : start + len(_MAGIC)] != _MAGIC:
            return None
        payload, tag = data[:-_TAG], data[-_TAG:]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG]
        if not hmac.compare_digest(tag, expected):
            return None
        kind, body = payload[body_at - 1 : body_at], payload[body_at:]
        if kind == _DATAGRAM:
            client, used = _unpack_address(body)
            self.tossed_in += 1
            return bytes(body[used:]), client
        owner, length = body[0], body[1]
        cid = bytes(body[2 : 2 + length])
        if kind == _CLAIM:
            self.claims[cid] = owner
        elif kind == _RELEASE and self.claims.get(cid) == owner:
            del self.claims[cid]
        return None

    def is_own(self, addr: Address) -> bool:
        """Whether ``addr`` is the group's own port (toss messages come
        from there)."""
        return len(addr) > 1 and addr[1] == self._port


def group_address(sock: socket.socket) -> Address:
    """Where a worker sends toss messages: the group's own address,
    loopback if it is bound to a wildcard one."""
    bound = sock.getsockname()
    host = str(bound[0])
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if sock.family == socket.AF_INET6:
        return (host, int(bound[1]), 0, 0)
    return (host, int(bound[1]))


__all__ = ["Tosser", "group_address", "steering_layout"]
