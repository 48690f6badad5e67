"""Small shared type aliases."""

from __future__ import annotations

from typing import TypeAlias

#: What read/write methods accept: any object exposing the buffer protocol.
#: (``collections.abc.Buffer`` arrives only in Python 3.12.)
Buffer: TypeAlias = bytes | bytearray | memoryview


__all__ = [
    "Buffer",
]
