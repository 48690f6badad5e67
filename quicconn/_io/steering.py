"""Steering datagrams to worker processes by connection ID, in the kernel.

Several processes can share one UDP port: each binds its own socket with
``SO_REUSEPORT``, and the kernel picks one socket of the group per
datagram.  By default it hashes the 4-tuple, which is wrong for QUIC: a
connection is named by its connection ID, and when a client's address or
port changes (NAT rebinding, migration) the hash changes and the
connection's packets land in a process that does not know it.

A classic BPF program attached to the group with
``SO_ATTACH_REUSEPORT_CBPF`` decides instead.  It sees the UDP payload and
returns the index of the socket (in the order the sockets were bound):

* a packet whose destination connection ID is one of ours (its first
  octet and server ID match, see :mod:`quicconn._core.quic_lb`) goes to
  the worker whose index the ID carries (short headers; long headers whose
  ID has our length);
* any other packet with a connection ID of at least 8 bytes (a client's
  first Initials and 0-RTT packets, before it knows our ID) goes to a
  worker chosen by a hash of the ID's first 8 bytes, so every
  retransmission of one Initial, from any port, reaches the same worker;
  the hash is the same for short and long headers, so a connection whose
  server kept the client's ID stays on one worker too;
* anything shorter falls back to the kernel's 4-tuple hash (an index out
  of range does that).

The program is written out here as ``struct sock_filter`` instructions;
:func:`predict` is the same decision in Python, which the tests check
against the kernel.  Sockets are never removed from a group while it
serves (the kernel would move the last one into the gap, changing every
index after it): a worker group's supervisor holds them all, and a
replacement worker inherits its predecessor's socket.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass

from .transport import enlarge_socket_buffers

#: Linux: attach a classic BPF program to a SO_REUSEPORT group
#: (asm-generic/socket.h).
SO_ATTACH_REUSEPORT_CBPF = 51
#: Detach it again (back to the 4-tuple hash).
SO_DETACH_REUSEPORT_BPF = 68
#: The kernel refuses longer classic programs.
BPF_MAXINSNS = 4096
#: What the program returns to let the kernel's 4-tuple hash decide.
FALLBACK = 0xFFFFFFFF
#: Bytes of a foreign connection ID that the hash reads.
HASHED_CID_BYTES = 8
#: The hash's multiplier (Knuth's multiplicative hashing, 2**32 / phi).
_HASH_MULTIPLIER = 0x9E3779B1

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD, _ALU, _JMP, _RET, _MISC = 0x00, 0x04, 0x05, 0x06, 0x07
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _LEN = 0x20, 0x80
_MUL, _AND, _RSH, _MOD, _XOR = 0x20, 0x50, 0x70, 0x90, 0xA0
_JA, _JEQ, _JGE, _JSET = 0x00, 0x10, 0x30, 0x40
_K, _X, _A = 0x00, 0x08, 0x10
_TAX = 0x00
_SIZE = {1: _B, 2: _H, 4: _W}


@dataclass(frozen=True, slots=True)
class SteeringLayout:
    """Where a worker group's connection IDs say which worker owns them.

    ``marker`` is what every ID of the group starts with (first octet and
    server ID); ``marker_mask`` masks the first octet's bits that are not
    fixed (0xE0 keeps only the config rotation bits when the length is not
    encoded there).  The worker index is the byte at ``worker_offset``.
    """

    workers: int
    cid_length: int
    marker: bytes
    worker_offset: int
    marker_mask: int = 0xFF

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 255:
            raise ValueError("a group steers 1-255 workers")
        if not len(self.marker) <= self.worker_offset < self.cid_length:
            raise ValueError("the worker byte must follow the marker, inside the ID")


class _Assembler:
    """Classic BPF with forward labels (jumps hold 8-bit offsets)."""

    def __init__(self) -> None:
        self._code: list[tuple[int, int | str, int | str, int | str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def op(self, code: int, k: int | str = 0) -> None:
        self._code.append((code, 0, 0, k))

    def jump(self, code: int, k: int, true: str, false: str) -> None:
        self._code.append((_JMP | code | _K, true, false, k))

    def goto(self, target: str) -> None:
        self._code.append((_JMP | _JA, 0, 0, target))

    def assemble(self) -> list[tuple[int, int, int, int]]:
        out: list[tuple[int, int, int, int]] = []
        for index, (code, jt, jf, k) in enumerate(self._code):
            out.append(
                (
                    code,
                    self._offset(index, jt),
                    self._offset(index, jf),
                    self._offset(index, k) if isinstance(k, str) else k,
                )
            )
        if len(out) > BPF_MAXINSNS:
            raise ValueError("steering program too long")
        return out

    def _offset(self, index: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        offset = self._labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"jump to {target} out of range")
        return offset


def _match(asm: _Assembler, layout: SteeringLayout, base: int, miss: str) -> None:
    """Compare the ID at ``base`` with the layout's marker; ``miss`` if not."""
    marker = layout.marker
    asm.op(_LD | _B | _ABS, base)
    if layout.marker_mask != 0xFF:
        asm.op(_ALU | _AND | _K, layout.marker_mask)
    chunks = [(0, 1, marker[0] & layout.marker_mask)]
    position = 1
    while position < len(marker):
        size = next(s for s in (4, 2, 1) if position + s <= len(marker))
        value = int.from_bytes(marker[position : position + size], "big")
        chunks.append((position, size, value))
        position += size
    for index, (position, size, value) in enumerate(chunks):
        if index:
            asm.op(_LD | _SIZE[size] | _ABS, base + position)
        ok = f"match{base}_{position}"
        asm.jump(_JEQ, value, ok, miss)
        asm.label(ok)


def _hash_and_return(asm: _Assembler, base: int, workers: int) -> None:
    """Return hash(8 ID bytes at ``base``) % workers."""
    asm.op(_LD | _W | _ABS, base)
    asm.op(_MISC | _TAX)
    asm.op(_LD | _W | _ABS, base + 4)
    asm.op(_ALU | _XOR | _X)
    asm.op(_ALU | _MUL | _K, _HASH_MULTIPLIER)
    asm.op(_ALU | _RSH | _K, 16)
    asm.op(_ALU | _MOD | _K, workers)
    asm.op(_RET | _A)


def _worker_and_return(asm: _Assembler, offset: int, workers: int) -> None:
    asm.op(_LD | _B | _ABS, offset)
    asm.op(_ALU | _MOD | _K, workers)
    asm.op(_RET | _A)


def minimum_length(layout: SteeringLayout) -> int:
    """Datagrams shorter than this fall back to the kernel's hash."""
    return max(6 + HASHED_CID_BYTES, 6 + layout.worker_offset + 1)


def program(layout: SteeringLayout) -> list[tuple[int, int, int, int]]:
    """The steering program: ``(code, jt, jf, k)`` instructions."""
    asm = _Assembler()
    workers = layout.workers
    asm.op(_LD | _W | _LEN)
    asm.jump(_JGE, minimum_length(layout), "sized", "fallback")
    asm.label("sized")
    asm.op(_LD | _B | _ABS, 0)
    asm.jump(_JSET, 0x80, "long", "short")
    # Short header: the ID follows the first byte.
    asm.label("short")
    _match(asm, layout, 1, "short_foreign")
    _worker_and_return(asm, 1 + layout.worker_offset, workers)
    asm.label("short_foreign")
    _hash_and_return(asm, 1, workers)
    # Long header: the ID's length at byte 5, the ID from byte 6.
    asm.label("long")
    asm.op(_LD | _B | _ABS, 5)
    asm.jump(_JEQ, layout.cid_length, "long_ours", "long_foreign")
    asm.label("long_ours")
    _match(asm, layout, 6, "long_foreign")
    _worker_and_return(asm, 6 + layout.worker_offset, workers)
    asm.label("long_foreign")
    asm.op(_LD | _B | _ABS, 5)
    asm.jump(_JGE, HASHED_CID_BYTES, "long_hash", "fallback")
    asm.label("long_hash")
    _hash_and_return(asm, 6, workers)
    asm.label("fallback")
    asm.op(_RET | _K, FALLBACK)
    return asm.assemble()


def _hash(cid8: bytes, workers: int) -> int:
    mixed = int.from_bytes(cid8[:4], "big") ^ int.from_bytes(cid8[4:8], "big")
    return (((mixed * _HASH_MULTIPLIER) & 0xFFFFFFFF) >> 16) % workers


def _ours(layout: SteeringLayout, cid_start: bytes) -> bool:
    marker = layout.marker
    head = cid_start[: len(marker)]
    if len(head) < len(marker):
        return False
    return (head[0] & layout.marker_mask) == (marker[0] & layout.marker_mask) and (
        head[1:] == marker[1:]
    )


def predict(layout: SteeringLayout, datagram: bytes) -> int | None:
    """The worker :func:`program` sends ``datagram`` to (None: the kernel's
    4-tuple hash decides)."""
    if len(datagram) < minimum_length(layout):
        return None
    workers = layout.workers
    if not datagram[0] & 0x80:
        if _ours(layout, datagram[1:]):
            return datagram[1 + layout.worker_offset] % workers
        return _hash(datagram[1:9], workers)
    if datagram[5] == layout.cid_length and _ours(layout, datagram[6:]):
        return datagram[6 + layout.worker_offset] % workers
    if datagram[5] < HASHED_CID_BYTES:
        return None
    return _hash(datagram[6:14], workers)


def attach(sock: socket.socket, layout: SteeringLayout) -> None:
    """Attach the steering program to ``sock``'s SO_REUSEPORT group.

    OSError if the kernel refuses it (no SO_REUSEPORT, or a kernel
    without SO_ATTACH_REUSEPORT_CBPF: Linux 4.5 and later have it).
    """
    code = program(layout)
    filters = (ctypes.c_ubyte * (8 * len(code)))()
    ctypes.memmove(
        filters, b"".join(struct.pack("=HBBI", *insn) for insn in code), len(filters)
    )
    fprog = struct.pack("@HP", len(code), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def detach(sock: socket.socket) -> None:
    """Back to the kernel's 4-tuple hash for ``sock``'s group."""
    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)


def reuseport_group(address: tuple[str, int], count: int) -> list[socket.socket]:
    """``count`` UDP sockets bound to ``address`` with SO_REUSEPORT, in order.

    Port 0 picks a free port for the first and binds the rest to it.  The
    n-th socket is the group's index n, which is what the steering program
    returns.  Their kernel buffers are enlarged as a listener's own are.
    """
    if count < 1:
        raise ValueError("a group needs at least one socket")
    family = socket.AF_INET6 if ":" in str(address[0]) else socket.AF_INET
    sockets: list[socket.socket] = []
    bound = address
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            enlarge_socket_buffers(sock)
            sock.bind(bound)
            bound = (str(address[0]), int(sock.getsockname()[1]))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


__all__ = [
    "FALLBACK",
    "HASHED_CID_BYTES",
    "SO_ATTACH_REUSEPORT_CBPF",
    "SO_DETACH_REUSEPORT_BPF",
    "SteeringLayout",
    "attach",
    "detach",
    "minimum_length",
    "predict",
    "program",
    "reuseport_group",
]
