"""A server's Initial packet written without a connection (RFC 9001, section 5).

A server gate that refuses a client (CONNECTION_REFUSED, INVALID_TOKEN) must
answer with an Initial packet the client can read: protected with the
Initial keys both ends derive from the connection ID the client chose.
Nothing about that needs a QUIC library, only ``cryptography`` (already
quicconn's dependency), so any backend's gate can use it.

Two things are here, for QUIC version 1 (RFC 9001) and version 2 (RFC 9369,
which changes the salt, the labels and the packet type bits):

* :func:`initial_close`: one Initial packet carrying one transport
  CONNECTION_CLOSE frame (a refusal);
* :func:`crypto_offsets`: where the CRYPTO frames of a client's Initial
  start.  A ClientHello too large for one packet (one with a post-quantum
  key share, ML-KEM's 1184 bytes) spans two Initials; only the one that
  starts it (offset 0) may begin a connection or earn a Retry, or a gate
  answers one client twice.
"""

from __future__ import annotations

import dataclasses

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .._constants import QUIC_VERSION_1, QUIC_VERSION_2
from .interface import GateAction, GateDecision

#: RFC 9001 section 5.2 and RFC 9369 section 3.3.1.
_SALTS = {
    QUIC_VERSION_1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    QUIC_VERSION_2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
#: The prefix of the packet protection labels (RFC 9369 section 3.3.2).
_LABEL_PREFIX = {QUIC_VERSION_1: b"quic ", QUIC_VERSION_2: b"quicv2 "}
#: The long header packet type of an Initial (RFC 9369 section 3.2).
_INITIAL_TYPE_BITS = {QUIC_VERSION_1: 0b00, QUIC_VERSION_2: 0b01}

#: Frame type of a transport CONNECTION_CLOSE (RFC 9000 section 19.19).
_TRANSPORT_CLOSE = 0x1C
#: Packet number length used; enough for packet number 0.
_PN_LENGTH = 2
#: Header protection samples 16 bytes, 4 bytes after the packet number starts.
_SAMPLE_OFFSET = 4
_SAMPLE_LENGTH = 16
_TAG_LENGTH = 16
#: Longest reason phrase put on the wire.
_MAX_REASON = 100


def _varint(value: int) -> bytes:
    """A QUIC variable-length integer (RFC 9000 section 16)."""
    if value < 1 << 6:
        return value.to_bytes(1, "big")
    if value < 1 << 14:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 1 << 30:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value < 1 << 62:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"{value} does not fit a QUIC variable-length integer")


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """A QUIC variable-length integer at ``offset``: (value, next offset)."""
    if offset >= len(data):
        raise ValueError("truncated")
    first = data[offset]
    size = 1 << (first >> 6)
    if offset + size > len(data):
        raise ValueError("truncated")
    value = first & 0x3F
    for byte in data[offset + 1 : offset + size]:
        value = (value << 8) | byte
    return value, offset + size


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3's HKDF-Expand-Label with an empty context (RFC 8446 7.1)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def server_initial_keys(version: int, client_dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """The server's Initial (key, iv, hp) for a client's chosen DCID."""
    return _initial_keys(version, client_dcid, b"server in")


def client_initial_keys(version: int, client_dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """The client's Initial (key, iv, hp) for the DCID it chose."""
    return _initial_keys(version, client_dcid, b"client in")


def _initial_keys(
    version: int, client_dcid: bytes, label: bytes
) -> tuple[bytes, bytes, bytes]:
    salt = _SALTS.get(version)
    if salt is None:
        raise ValueError(f"no Initial keys for QUIC version 0x{version:08x}")
    extract = hmac.HMAC(salt, hashes.SHA256())
    extract.update(client_dcid)
    secret = _expand_label(extract.finalize(), label, 32)
    prefix = _LABEL_PREFIX[version]
    return (
        _expand_label(secret, prefix + b"key", 16),
        _expand_label(secret, prefix + b"iv", 12),
        _expand_label(secret, prefix + b"hp", 16),
    )


def initial_close(
    version: int,
    client_dcid: bytes,
    client_scid: bytes,
    error_code: int,
    reason: str,
) -> bytes:
    """A server Initial packet carrying only a transport CONNECTION_CLOSE.

    Addressed to the client's source connection ID, from the connection ID
    the client chose for the server, and protected with the Initial keys
    derived from the latter, so the client can read it.
    """
    key, iv, hp = server_initial_keys(version, client_dcid)
    phrase = reason.encode("utf8")[:_MAX_REASON]
    payload = (
        _varint(_TRANSPORT_CLOSE)
        + _varint(error_code)
        + _varint(0)  # the frame type that triggered it: none (PADDING)
        + _varint(len(phrase))
        + phrase
    )
    # The header protection sample must lie inside the packet.
    short = _SAMPLE_OFFSET - _PN_LENGTH - len(payload)
    if short > 0:
        payload += bytes(short)  # PADDING frames
    packet_number = (0).to_bytes(_PN_LENGTH, "big")
    length = _PN_LENGTH + len(payload) + _TAG_LENGTH
    first = 0xC0 | (_INITIAL_TYPE_BITS[version] << 4) | (_PN_LENGTH - 1)
    header = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(client_scid)])
        + client_scid
        + bytes([len(client_dcid)])
        + client_dcid
        + _varint(0)  # no token
        + (length | 0x4000).to_bytes(2, "big")
        + packet_number
    )
    padded = bytes(len(iv) - _PN_LENGTH) + packet_number
    nonce = bytes(a ^ b for a, b in zip(iv, padded, strict=True))
    protected = AESGCM(key).encrypt(nonce, payload, header)
    start = _SAMPLE_OFFSET - _PN_LENGTH
    sample = protected[start : start + _SAMPLE_LENGTH]
    mask = _header_protection_mask(hp, sample)
    masked = bytearray(header)
    masked[0] ^= mask[0] & 0x0F
    pn_start = len(header) - _PN_LENGTH
    for i in range(_PN_LENGTH):
        masked[pn_start + i] ^= mask[1 + i]
    return bytes(masked) + protected


def _header_protection_mask(hp: bytes, sample: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    return encryptor.update(sample) + encryptor.finalize()


def crypto_offsets(data: bytes) -> list[int] | None:
    """The offsets of the CRYPTO frames in a client's first Initial packet.

    ``data`` is a datagram starting with a long-header Initial of QUIC v1 or
    v2.  None if it cannot be decrypted with the Initial keys of its
    destination connection ID (junk, or not a client's); an empty list for
    an Initial without CRYPTO (a PING-only probe).
    """
    try:
        version = int.from_bytes(data[1:5], "big")
        if version not in _SALTS:
            return None
        dcid_end = 6 + data[5]
        dcid = data[6:dcid_end]
        scid_end = dcid_end + 1 + data[dcid_end]
        token_length, offset = _read_varint(data, scid_end)
        length, pn_offset = _read_varint(data, offset + token_length)
        end = pn_offset + length
        if end > len(data) or length < _SAMPLE_OFFSET + _SAMPLE_LENGTH:
            return None
        key, iv, hp = client_initial_keys(version, dcid)
        sample = data[pn_offset + _SAMPLE_OFFSET : pn_offset + 20]
        mask = _header_protection_mask(hp, sample)
        first = data[0] ^ (mask[0] & 0x0F)
        pn_length = (first & 0x03) + 1
        pn = bytes(
            b ^ m
            for b, m in zip(
                data[pn_offset : pn_offset + pn_length],
                mask[1 : 1 + pn_length],
                strict=True,
            )
        )
        header = bytes([first]) + data[1:pn_offset] + pn
        padded = bytes(len(iv) - pn_length) + pn
        nonce = bytes(a ^ b for a, b in zip(iv, padded, strict=True))
        payload = AESGCM(key).decrypt(nonce, data[pn_offset + pn_length : end], header)
    except (IndexError, ValueError, InvalidTag):
        return None
    return _crypto_frame_offsets(payload)


def starts_client_hello(data: bytes) -> bool | None:
    """Whether the client's Initial in ``data`` starts its ClientHello (a
    CRYPTO frame at offset 0, or none at all: a PING-only probe); None if
    it does not decrypt (junk)."""
    offsets = crypto_offsets(data)
    if offsets is None:
        return None
    return not offsets or 0 in offsets


def prove_initial(decision: GateDecision, data: bytes) -> GateDecision:
    """A gate's ACCEPT ``decision`` for the Initial in ``data``, once that
    was decrypted (:meth:`ServerGate.prove`): DROP for junk, else ACCEPT
    saying whether it starts the ClientHello."""
    starts = starts_client_hello(data)
    if starts is None:
        return GateDecision(GateAction.DROP, "undecryptable Initial")
    return dataclasses.replace(decision, starts_handshake=starts)


def _crypto_frame_offsets(payload: bytes) -> list[int]:
    """CRYPTO frame offsets of an Initial's payload (frames an Initial may
    carry: PADDING, PING, ACK, CRYPTO, CONNECTION_CLOSE)."""
    offsets: list[int] = []
    at = 0
    size = len(payload)
    try:
        while at < size:
            if payload[at] == 0x00:  # a run of PADDING: skipped in one step
                at = size - len(payload[at:].lstrip(b"\x00"))
                continue
            kind, at = _read_varint(payload, at)
            if kind == 0x01:  # PING
                continue
            if kind == 0x06:  # CRYPTO
                start, at = _read_varint(payload, at)
                length, at = _read_varint(payload, at)
                offsets.append(start)
                at += length
            elif kind in (0x02, 0x03):  # ACK
                _, at = _read_varint(payload, at)  # largest acknowledged
                _, at = _read_varint(payload, at)  # delay
                ranges, at = _read_varint(payload, at)
                _, at = _read_varint(payload, at)  # first range
                for _ in range(2 * ranges):
                    _, at = _read_varint(payload, at)
                if kind == 0x03:
                    for _ in range(3):  # ECN counts
                        _, at = _read_varint(payload, at)
            else:
                break  # CONNECTION_CLOSE or anything else: nothing more to see
    except ValueError:
        pass
    return offsets


__all__ = [
    "client_initial_keys",
    "crypto_offsets",
    "initial_close",
    "prove_initial",
    "server_initial_keys",
    "starts_client_hello",
]
