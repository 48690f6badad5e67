"""Packet facts every QUIC version shares, and stateless resets.

Neutral between backends and versions: what the reactor needs to route a
datagram and what a server needs to reset a connection it no longer knows
can be read from the invariant header fields alone (RFC 8999), without a
QUIC library.

* Long header: bit 0x80 of the first byte set; the version in bytes 1-4;
  the destination connection ID's length in byte 5, the ID after it, then
  the source connection ID's length and the ID.
* Short header: bit 0x80 clear; the destination connection ID follows the
  first byte, with a length only the receiver knows (its own IDs' length).

Stateless resets (RFC 9000, section 10.3) look like short-header packets
that end in a 16-byte token derived from the connection ID they reset.
"""

from __future__ import annotations

import hashlib
import hmac
import os

#: The longest connection ID QUIC version 1 allows (RFC 9000, section 17.2).
MAX_CID_LENGTH = 20
#: Bytes in a stateless reset token.
STATELESS_RESET_TOKEN_SIZE = 16
#: The smallest stateless reset: 1 header byte, 4 unpredictable bytes and the
#: token (RFC 9000, section 10.3).
MIN_STATELESS_RESET_SIZE = 5 + STATELESS_RESET_TOKEN_SIZE
#: The largest stateless reset a server sends; the packet it answers must be
#: longer still, so two endpoints can never reset each other forever.
MAX_STATELESS_RESET_SIZE = 43
#: A long header up to and including the destination connection ID length.
_LONG_HEADER_PREFIX = 6


def long_header_version(data: bytes) -> int | None:
    """The version field of a long header; None if short or truncated."""
    if len(data) < 5 or not data[0] & 0x80:
        return None
    return int.from_bytes(data[1:5], "big")


def peek_destination_cid(data: bytes, local_cid_length: int) -> bytes | None:
    """The destination connection ID of a datagram's first packet.

    ``local_cid_length`` is the length of this endpoint's own connection
    IDs, which a short header does not state.  None if the datagram is too
    short to hold the ID or states a length over :data:`MAX_CID_LENGTH`.
    Nothing else about the packet is checked: any version routes the same.
    """
    if not data:
        return None
    if data[0] & 0x80:
        if len(data) < _LONG_HEADER_PREFIX:
            return None
        length = data[_LONG_HEADER_PREFIX - 1]
        start = _LONG_HEADER_PREFIX
    else:
        length = local_cid_length
        start = 1
    end = start + length
    if length > MAX_CID_LENGTH or len(data) < end:
        return None
    return bytes(data[start:end])


def long_header_cids(data: bytes) -> tuple[bytes, bytes] | None:
    """``(destination, source)`` connection IDs of a long header, if present.

    Enough to answer a packet of an unknown version with Version
    Negotiation (RFC 9000, section 6.1); None when the IDs run past the end
    of the datagram (no more is required of them here).
    """
    if len(data) < _LONG_HEADER_PREFIX or not data[0] & 0x80:
        return None
    dcid_end = _LONG_HEADER_PREFIX + data[_LONG_HEADER_PREFIX - 1]
    if dcid_end >= len(data):
        return None
    scid_end = dcid_end + 1 + data[dcid_end]
    if scid_end > len(data):
        return None
    return data[_LONG_HEADER_PREFIX:dcid_end], data[dcid_end + 1 : scid_end]


def split_run(data: bytes, segment_size: int) -> list[bytes]:
    """The datagrams of a coalesced run (UDP GRO): ``segment_size`` bytes
    each, the last possibly shorter."""
    if segment_size >= len(data):
        return [data]
    return [data[i : i + segment_size] for i in range(0, len(data), segment_size)]


def stateless_reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token for ``cid`` (RFC 9000, section 10.3.2).

    Derived from a server secret so that a server which lost a connection's
    state can still prove, with a reset, that it once issued ``cid``.
    """
    return hmac.new(key, cid, hashlib.sha256).digest()[:STATELESS_RESET_TOKEN_SIZE]


def trailing_reset_token(data: bytes) -> bytes | None:
    """The token a datagram ends in if it can be a stateless reset, else None.

    A reset looks like a short-header packet at least
    :data:`MIN_STATELESS_RESET_SIZE` bytes long; a client that finds one of
    the tokens the server gave it at the end knows the server lost its
    state (RFC 9000, section 10.3.1).
    """
    if len(data) < MIN_STATELESS_RESET_SIZE or data[0] & 0x80:
        return None
    return data[-STATELESS_RESET_TOKEN_SIZE:]


def stateless_reset_size(trigger_size: int) -> int | None:
    """How long a reset answering a ``trigger_size``-byte packet is.

    Shorter than the packet it answers (RFC 9000, section 10.3.3), at most
    :data:`MAX_STATELESS_RESET_SIZE`; None when that would be smaller than
    a reset can be.
    """
    size = min(trigger_size - 1, MAX_STATELESS_RESET_SIZE)
    if size < MIN_STATELESS_RESET_SIZE + 1:
        return None
    return size


def stateless_reset(size: int, token: bytes) -> bytes:
    """A ``size``-byte stateless reset: an unpredictable short header + token."""
    unpredictable = bytearray(os.urandom(size - STATELESS_RESET_TOKEN_SIZE))
    unpredictable[0] = 0x40 | (unpredictable[0] & 0x3F)
    return bytes(unpredictable) + token


__all__ = [
    "MAX_CID_LENGTH",
    "MAX_STATELESS_RESET_SIZE",
    "MIN_STATELESS_RESET_SIZE",
    "STATELESS_RESET_TOKEN_SIZE",
    "long_header_cids",
    "long_header_version",
    "peek_destination_cid",
    "split_run",
    "stateless_reset",
    "stateless_reset_size",
    "stateless_reset_token",
    "trailing_reset_token",
]
