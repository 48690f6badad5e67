"""Drive nonblocking quicconn objects from one thread, as an event loop would.

``pump(objects, until)`` is the loop of OpenSSL's nonblocking demos in one
function: tick every object (``handle_events``), stop when ``until()``
holds, otherwise sleep in ``select`` on their descriptors for at most the
earliest ``get_event_timeout()``.  It never busy-waits and fails the test
with a clear message when ``until()`` does not come true in time.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterable
from typing import Protocol


class Pollable(Protocol):
    def handle_events(self) -> None: ...

    def get_event_timeout(self) -> float | None: ...

    def get_rpoll_descriptor(self) -> int: ...


def pump(
    objects: Iterable[Pollable],
    until: Callable[[], bool],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    step: Callable[[], None] | None = None,
) -> None:
    """Tick ``objects`` until ``until()`` is true; fail after ``timeout`` s."""
    objs = list(objects)
    deadline = time.monotonic() + timeout
    while True:
        for obj in objs:
            obj.handle_events()
        if step is not None:
            step()
        if until():
            return
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        waits = [deadline - now]
        for obj in objs:
            t = obj.get_event_timeout()
            if t is not None:
                waits.append(t)
        fds = list({obj.get_rpoll_descriptor() for obj in objs})
        select.select(fds, [], [], max(0.0, min(waits)))


def run_for(
    objects: Iterable[Pollable],
    seconds: float,
    *,
    step: Callable[[], None] | None = None,
) -> None:
    """Tick ``objects`` (and ``step``) for ``seconds`` of real time."""
    objs = list(objects)
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for obj in objs:
            obj.handle_events()
        if step is not None:
            step()
        waits = [end - now]
        waits += [t for obj in objs if (t := obj.get_event_timeout()) is not None]
        fds = list({obj.get_rpoll_descriptor() for obj in objs})
        select.select(fds, [], [], max(0.0, min(waits)))
