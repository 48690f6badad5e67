"""Time sources.

Every layer above this one asks a clock for "now" instead of calling
``time.monotonic()`` itself, so tests can swap in :class:`FakeClock` and skip
idle timeouts and retransmission timers deterministically, without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time in seconds on a monotonic scale."""

    def now(self) -> float:
        """Return the current time."""
        ...


class MonotonicClock:
    """The real clock: :func:`time.monotonic`."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to.

    Blocking waits on a transport bound to a fake clock advance it to the
    next deadline instead of sleeping (see :class:`quicconn.testing.DatagramPair`).
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self._now += seconds

    def advance_to(self, when: float) -> None:
        """Move the clock forward to ``when``; earlier times are ignored."""
        if when > self._now:
            self._now = when


MONOTONIC = MonotonicClock()


__all__ = [
    "MONOTONIC",
    "Clock",
    "FakeClock",
    "MonotonicClock",
]
