"""Retry tokens (RFC 9000, section 8.1.2), made and checked by a server gate.

A token proves that the client received the server's Retry at the address
it claims.  It is sealed with AES-GCM under a key that never leaves the
gate: the client's address is the associated data, and the sealed part
holds the connection IDs the server must later echo in its transport
parameters and when the token was issued.  Neutral between backends (only
``cryptography``), so any backend's gate can use it.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .interface import Address

#: Clients use a Retry token at once; accept it only briefly (RFC 9000 8.1.4).
TOKEN_LIFETIME = 30.0
_NONCE = 12
_ISSUED = struct.Struct("!Q")  # milliseconds


def _address_bytes(addr: Address) -> bytes:
    return ipaddress.ip_address(addr[0]).packed + int(addr[1]).to_bytes(2, "big")


class RetryTokens:
    """Issues and validates the Retry tokens of one listener."""

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key or AESGCM.generate_key(bit_length=128))

    def issue(
        self, addr: Address, original_dcid: bytes, retry_scid: bytes, now: float
    ) -> bytes:
        """A token for a client at ``addr`` answered with a Retry from
        ``retry_scid`` to its first Initial (sent to ``original_dcid``)."""
        sealed = (
            bytes([len(original_dcid)])
            + original_dcid
            + bytes([len(retry_scid)])
            + retry_scid
            + _ISSUED.pack(max(0, int(now * 1000)))
        )
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, sealed, _address_bytes(addr))

    def validate(self, addr: Address, dcid: bytes, token: bytes, now: float) -> bytes:
        """The original destination connection ID, if ``token`` is good.

        ``dcid`` is where the client sent the Initial carrying the token: it
        must be the Retry's source connection ID (RFC 9000 17.2.5.2).
        ValueError says what is wrong.
        """
        if len(token) <= _NONCE:
            raise ValueError("token too short")
        try:
            sealed = self._aead.decrypt(
                token[:_NONCE], token[_NONCE:], _address_bytes(addr)
            )
        except InvalidTag:
            raise ValueError("token not issued here, or for another address") from None
        odcid_end = 1 + sealed[0]
        original_dcid = sealed[1:odcid_end]
        scid_end = odcid_end + 1 + sealed[odcid_end]
        retry_scid = sealed[odcid_end + 1 : scid_end]
        (issued_ms,) = _ISSUED.unpack(sealed[scid_end:])
        if dcid != retry_scid:
            raise ValueError("token issued for another connection ID")
        if now - issued_ms / 1000 > TOKEN_LIFETIME:
            raise ValueError("token expired")
        return original_dcid


__all__ = ["TOKEN_LIFETIME", "RetryTokens"]
