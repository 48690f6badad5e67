"""Malformed datagrams for hostile-peer tests: every choice from one seed.

:func:`make_datagram` builds one bad datagram of a kind (random bytes, a
captured datagram truncated, bit-flipped or replayed, an unknown version, a
short header aimed at a live connection ID, an Initial that does not
decrypt, a real packet coalesced with junk); tests/test_server_fuzz.py and
tests/hostile/ use it, with hypothesis choosing kinds and seeds.
"""

from __future__ import annotations

import random
import struct

__all__ = ["KINDS", "VERSIONS", "make_datagram"]


def _long_header(first: int, version: int, dcid: bytes, scid: bytes) -> bytes:
    return (
        bytes([first | 0x80])
        + struct.pack("!I", version)
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
    )


KINDS = [
    "random",
    "truncated",
    "bitflip",
    "replay",
    "version",
    "short_to_live",
    "initial",
    "coalesced",
]
VERSIONS = [0, 1, 0x6B3343CF, 0x57414954, 0xFF00001D, 0x1A2A3A4A]


def make_datagram(
    kind: str, seed: int, captured: list[bytes], live_cids: list[bytes]
) -> bytes:
    """One bad datagram of ``kind``; every other choice comes from ``seed``."""
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(rng.randrange(0, 1501))
    if kind in ("truncated", "bitflip", "replay"):
        original = rng.choice(captured)
        if kind == "replay":
            return original
        if kind == "truncated":
            return original[: rng.randrange(0, len(original))]
        flipped = bytearray(original)
        for _ in range(rng.randrange(1, 9)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == "version":
        version = rng.choice(VERSIONS + [rng.getrandbits(32)] * 3)
        dcid = rng.randbytes(rng.choice([0, 8, 20, 21, rng.randrange(256)]))
        scid = rng.randbytes(rng.choice([0, 8, 20, 21, rng.randrange(256)]))
        head = _long_header(rng.randrange(0x80), version, dcid, scid)
        size = rng.choice([len(head), 600, 1199, 1200, 1350, 1500])
        return head + rng.randbytes(max(0, size - len(head)))
    if kind == "short_to_live":
        first = bytes([0x40 | rng.randrange(0x40)])
        body = rng.randbytes(rng.randrange(0, 1401))
        return first + rng.choice(live_cids) + body
    if kind == "initial":
        version = rng.choice([1, 0x6B3343CF])
        first = 0xC0 if version == 1 else 0xD0  # v2 renumbered the Initial type
        dcid = rng.randbytes(rng.choice([0, 4, 8, 20, 21]))
        head = _long_header(first | rng.randrange(4), version, dcid, b"")
        token = rng.randbytes(rng.choice([0, 1, 12, 40, 90, 300]))
        head += bytes([0x40 | len(token) >> 8, len(token) & 0xFF]) + token
        size = rng.choice([1199, 1200, 1252, 1500])
        head += struct.pack("!H", 0x4000 | rng.randrange(0x4000))
        return head + rng.randbytes(max(0, size - len(head)))
    # coalesced: a real packet followed by junk, or junk then a real packet
    real = rng.choice(captured)
    junk = rng.randbytes(rng.randrange(1, 301))
    return real + junk if rng.random() < 0.5 else junk + real
