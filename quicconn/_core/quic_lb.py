"""QUIC-LB connection IDs: routable by a load balancer that has no keys.

draft-ietf-quic-load-balancers lets a layer-4 load balancer route every
packet of a connection to the server that owns it, even after the
client's address changed (NAT rebinding, migration), without per-flow
state: each server writes its *server ID* into the connection IDs it
chooses, and the load balancer reads it back.  Only the draft's plaintext
algorithm is implemented (no key: observers can read the server ID too).

A connection ID of configuration ``c``::

    first octet   config rotation (3 bits: c, 0-6; 0b111 means unroutable)
                  + the length of the rest of the ID (5 bits), or random bits
    server ID     len(server_id) bytes, assigned per server (here: per host)
    nonce         nonce_length bytes (at least 4): ``server_use`` bytes
                  first, random for the rest

``server_use`` is for the server alone: a worker group puts the worker
index there (the draft's "server process demultiplexing": to the load
balancer it is part of the nonce, to the host's demultiplexer part of a
longer server ID).  Neutral between backends: no QUIC library here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

#: The config rotation codepoint of IDs no configuration can route.
UNROUTABLE_CONFIG_ID = 0b111
#: The shortest nonce the draft allows.
MIN_NONCE_LENGTH = 4
#: Server ID and nonce together fit a QUIC v1 connection ID (20 bytes)
#: after the first octet.
MAX_SERVER_ID_AND_NONCE = 19
#: Random bytes a nonce keeps after its ``server_use`` bytes.
MIN_RANDOM_NONCE = 4


@dataclass(frozen=True, slots=True)
class QuicLbConfig:
    """A server's QUIC-LB configuration (plaintext algorithm).

    A quicconn extension (OpenSSL has no QUIC-LB support).  ``server_id``
    is this server's (1-15 bytes, unique in the pool); ``nonce_length``
    and ``config_id`` must be the same on every server of the pool and at
    the load balancer; ``encode_length`` writes the ID's length into the
    first octet (the draft's length self-description).  ``server_use``
    bytes open the nonce (a worker index); at least 4 nonce bytes stay
    random.
    """

    server_id: bytes
    nonce_length: int = 6
    config_id: int = 0
    encode_length: bool = True
    server_use: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.server_id, bytes) or not self.server_id:
            raise ValueError("server_id must be non-empty bytes")
        if not isinstance(self.config_id, int) or not 0 <= self.config_id <= 6:
            raise ValueError(
                "config_id must be 0-6 (7 marks unroutable IDs), "
                f"not {self.config_id!r}"
            )
        if not isinstance(self.nonce_length, int) or (
            self.nonce_length < MIN_NONCE_LENGTH
        ):
            raise ValueError(
                f"nonce_length must be an int of at least {MIN_NONCE_LENGTH}"
            )
        if len(self.server_id) + self.nonce_length > MAX_SERVER_ID_AND_NONCE:
            raise ValueError(
                f"server ID ({len(self.server_id)} bytes) and nonce "
                f"({self.nonce_length}) exceed {MAX_SERVER_ID_AND_NONCE} bytes"
            )
        if not isinstance(self.server_use, bytes) or (
            self.nonce_length - len(self.server_use) < MIN_RANDOM_NONCE
        ):
            raise ValueError(
                f"server_use leaves fewer than {MIN_RANDOM_NONCE} random nonce bytes"
            )

    @property
    def cid_length(self) -> int:
        """The length of every connection ID this configuration makes."""
        return 1 + len(self.server_id) + self.nonce_length

    @property
    def server_use_offset(self) -> int:
        """Where the ``server_use`` bytes start in a connection ID."""
        return 1 + len(self.server_id)

    def first_octet(self) -> int | None:
        """The first octet of every ID made, or None when its low bits are
        random (``encode_length=False``)."""
        if not self.encode_length:
            return None
        return (self.config_id << 5) | (self.cid_length - 1)

    def new_cid(self) -> bytes:
        """A fresh connection ID: first octet, server ID, nonce."""
        random_part = os.urandom(self.nonce_length - len(self.server_use) + 1)
        low = self.cid_length - 1 if self.encode_length else random_part[0] & 0x1F
        return (
            bytes([(self.config_id << 5) | low])
            + self.server_id
            + self.server_use
            + random_part[1:]
        )


class QuicLbDecoder:
    """What a QUIC-LB load balancer does: a packet's server ID, or None.

    A quicconn extension, for tests and for operators who build their own
    load balancer.  Made from the configurations in use (only their
    ``config_id``, server ID length and nonce length matter: they are the
    same on every server).  ``None`` means *unroutable*: config rotation
    bits 0b111 or of no known configuration, or an ID too short; a load
    balancer then falls back to its own choice (4-tuple hashing, say).
    """

    def __init__(self, configs: Iterable[QuicLbConfig]) -> None:
        self._shapes: dict[int, tuple[int, int]] = {}
        for config in configs:
            self._shapes[config.config_id] = (
                len(config.server_id),
                config.nonce_length,
            )
        if not self._shapes:
            raise ValueError("a decoder needs at least one configuration")

    def server_id(self, cid: bytes) -> bytes | None:
        """The server ID a connection ID encodes, or None if unroutable."""
        if not cid:
            return None
        shape = self._shapes.get(cid[0] >> 5)
        if shape is None:
            return None
        sid_length, nonce_length = shape
        if len(cid) < 1 + sid_length + nonce_length:
            return None
        return bytes(cid[1 : 1 + sid_length])

    def route(self, datagram: bytes) -> bytes | None:
        """The server ID of a datagram's first packet, or None if unroutable.

        A long header states its destination connection ID's length; a
        short header does not, and its ID is read with the length of the
        configuration its first octet names.
        """
        if not datagram:
            return None
        if datagram[0] & 0x80:
            if len(datagram) < 6:
                return None
            end = 6 + datagram[5]
            if len(datagram) < end:
                return None
            return self.server_id(datagram[6:end])
        if len(datagram) < 2:
            return None
        shape = self._shapes.get(datagram[1] >> 5)
        if shape is None:
            return None
        end = 2 + shape[0] + shape[1]
        return self.server_id(datagram[1:end]) if len(datagram) >= end else None


__all__ = [
    "MIN_NONCE_LENGTH",
    "UNROUTABLE_CONFIG_ID",
    "QuicLbConfig",
    "QuicLbDecoder",
]
