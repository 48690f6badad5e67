"""``quicconn.poll()``: OpenSSL's ``SSL_poll`` over connections, streams, listeners.

One call reports, for each ``(object, events)`` item, which of the
``POLL_EVENT_*`` conditions hold now (*level-triggered*: a condition is
reported on every call until the application changes it, e.g. by reading
all the data).  With a timeout other than 0 it waits until at least one
item has something to report.

How it works, as in OpenSSL's implementation:

1. *Readout*: every reactor (socket) the items live on is ticked once, unless
   ``POLL_FLAG_NO_HANDLE_EVENTS``, then every item's conditions are read
   under that reactor's lock.  (OpenSSL ticks once per item; ticking each
   reactor once per readout has the same effect for less work.)
2. If nothing is ready and the call may block, it sleeps in one ``poll(2)``
   over all the reactors' sockets until the earliest timer deadline among
   them, the caller's deadline, or a wake-up from another thread that ticked
   one of those reactors (each reactor wakes registered pollers after every
   tick).  Then it goes back to 1, now always handling events.

Objects on a :class:`~quicconn.testing.DatagramPair` with a
:class:`~quicconn.FakeClock` work too: instead of sleeping, the wait moves
the (shared) fake clock to the next deadline or datagram arrival.
"""

from __future__ import annotations

import functools
import math
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._constants import (
    POLL_EVENT_DGRAM,
    POLL_EVENT_OSU,
    POLL_FLAG_NO_HANDLE_EVENTS,
)
from .._io.clock import MONOTONIC, Clock, FakeClock
from .._io.transport import Waker
from .._quic.reactor import Reactor
from .connection import Connection
from .connection import poll_source as connection_poll_source
from .domain import Domain
from .domain import poll_source as domain_poll_source
from .listener import Listener
from .listener import poll_source as listener_poll_source
from .stream import Stream, stream_binding, stream_poll_revents

__all__ = ["PollItem", "poll"]

#: One ``SSL_POLL_ITEM``: the object (None is ignored) and the events wanted.
PollItem = tuple[Connection | Stream | Listener | Domain | None, int]

_ALL_EVENTS = ((POLL_EVENT_OSU << 1) - 1) | POLL_EVENT_DGRAM
_thread_state = threading.local()


def poll(
    items: Iterable[PollItem], timeout: float | None = None, flags: int = 0
) -> list[int]:
    """Wait for readiness events on QUIC objects (SSL_poll).

    ``items`` are ``(obj, events)`` pairs, ``obj`` a :class:`Connection`,
    :class:`Stream`, :class:`Listener` or :class:`Domain` (or None, which
    is ignored) and
    ``events`` a mask of ``POLL_EVENT_*`` bits.  Returns the ``revents``
    masks in item order; the number of ready items is
    ``sum(map(bool, result))``.

    ``timeout=None`` waits until something is ready, ``0`` only reports,
    and a positive number of seconds waits at most that long.  When the
    timeout expires with nothing ready, the result is all zeros (OpenSSL:
    success with ``result_count == 0``).

    ``POLL_EVENT_F`` is reported, whether asked for or not, for an object
    that was freed; such an item counts as ready, so the call returns at
    once, and other items are still reported (OpenSSL returns 0 and puts
    F in ``revents``; quicconn raises nothing).  ``flags`` may be
    ``POLL_FLAG_NO_HANDLE_EVENTS``: report only what is already known,
    without processing network events first (a blocking call still handles
    events once it has to wait).
    """
    if not isinstance(flags, int) or flags & ~POLL_FLAG_NO_HANDLE_EVENTS:
        raise ValueError(
            f"poll() flags may only be POLL_FLAG_NO_HANDLE_EVENTS, not {flags!r}"
        )
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be None or seconds, not {timeout!r}")
        if math.isnan(timeout) or timeout < 0:
            raise ValueError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
    entries = [_Entry(index, item) for index, item in enumerate(items)]
    if not entries:
        if timeout:  # OpenSSL sleeps for the timeout with nothing to poll
            time.sleep(timeout)
        return []
    groups: dict[Reactor, list[_Entry]] = {}
    loose: list[_Entry] = []
    for entry in entries:
        if entry.reactor is None:
            # Read without a reactor lock: no transport, or a domain, whose
            # reactors are waited on (and ticked) as everyone's are.
            loose.append(entry)
            for reactor in entry.spanned:
                groups.setdefault(reactor, [])
        else:
            groups.setdefault(entry.reactor, []).append(entry)
    clock = _common_clock(list(groups))
    deadline = None if timeout is None else clock.now() + timeout
    handle_events = not flags & POLL_FLAG_NO_HANDLE_EVENTS
    revents = [0] * len(entries)
    while True:
        _readout(groups, loose, revents, handle_events)
        if any(revents) or timeout == 0:
            return revents
        if deadline is not None and clock.now() >= deadline:
            return revents
        if not groups:
            # Nothing here can change by itself (no transport): just wait.
            if deadline is None:
                raise ValueError(
                    "poll() would wait forever: no item has a transport and "
                    "no timeout was given"
                )
            time.sleep(max(0.0, deadline - clock.now()))
            return revents
        handle_events = True
        _block(groups, loose, revents, deadline, clock)


class _Entry:
    """One item, with its object classified once."""

    __slots__ = ("_revents", "events", "index", "obj", "reactor", "spanned")

    def __init__(self, index: int, item: Any) -> None:
        try:
            obj, events = item
        except (TypeError, ValueError):
            raise TypeError(
                f"poll() items are (object, events) pairs; item {index} is {item!r}"
            ) from None
        if not isinstance(events, int) or isinstance(events, bool) or events < 0:
            raise TypeError(f"item {index}: events must be an int mask of POLL_EVENT_*")
        if events & ~_ALL_EVENTS:
            raise ValueError(
                f"item {index}: unknown poll event bits 0x{events & ~_ALL_EVENTS:x}"
            )
        self.index = index
        self.obj = obj
        self.events = events
        self.reactor: Reactor | None = None
        #: A domain's reactors (it has no single one).
        self.spanned: list[Reactor] = []
        self._revents: Callable[[int], int] | None = None
        if obj is None:
            return
        if isinstance(obj, Stream):
            binding = stream_binding(obj)
            self.reactor = binding.reactor
            self._revents = functools.partial(stream_poll_revents, obj)
        elif isinstance(obj, Connection):
            self.reactor, self._revents = connection_poll_source(obj)
        elif isinstance(obj, Listener):
            self.reactor, self._revents = listener_poll_source(obj)
        elif isinstance(obj, Domain):
            self.spanned, self._revents = domain_poll_source(obj)
        else:
            raise TypeError(
                f"item {index}: poll() takes quicconn Connection, Stream and Listener "
                f"objects, Domains (or None), not {type(obj).__name__}"
            )

    def revents(self) -> int:
        """The item's events now; the reactor lock (if any) is held."""
        return 0 if self._revents is None else self._revents(self.events)


def _readout(
    groups: dict[Reactor, list[_Entry]],
    loose: list[_Entry],
    revents: list[int],
    handle_events: bool,
) -> None:
    for reactor, entries in groups.items():
        with reactor.lock:
            if handle_events:
                reactor.tick()
            for entry in entries:
                revents[entry.index] = entry.revents()
    for entry in loose:
        revents[entry.index] = entry.revents()


def _common_clock(reactors: list[Reactor]) -> Clock:
    clocks = {id(r.clock): r.clock for r in reactors}
    if len(clocks) == 1:
        return next(iter(clocks.values()))
    if any(isinstance(c, FakeClock) for c in clocks.values()):
        raise ValueError(
            "poll() cannot mix objects on different clocks (a FakeClock and "
            "another clock): their deadlines cannot be compared"
        )
    return MONOTONIC if not clocks else next(iter(clocks.values()))


def _thread_waker() -> Waker:
    """One wake-up descriptor per thread, reused by its poll() calls."""
    waker: Waker | None = getattr(_thread_state, "waker", None)
    if waker is None:
        waker = _thread_state.waker = Waker()
    return waker


def _block(
    groups: dict[Reactor, list[_Entry]],
    loose: list[_Entry],
    revents: list[int],
    deadline: float | None,
    clock: Clock,
) -> None:
    """Sleep until a socket, a timer, the deadline or another thread's tick."""
    waker = _thread_waker()
    waker.clear()
    reactors = list(groups)
    timers: list[float] = []
    for reactor in reactors:
        with reactor.lock:
            reactor.add_watcher(waker)
            timer = reactor.next_deadline()
            if timer is not None:
                timers.append(timer)
    try:
        # Something may have become ready between the readout and the
        # registration above: look again (without ticking) before sleeping.
        _readout(groups, loose, revents, handle_events=False)
        if any(revents):
            return
        if deadline is not None:
            timers.append(deadline)
        if isinstance(clock, FakeClock):
            _advance_fake_clock(reactors, timers, clock)
        else:
            _wait_for_sockets(reactors, timers, clock, waker)
    finally:
        for reactor in reactors:
            with reactor.lock:
                reactor.remove_watcher(waker)


def _wait_for_sockets(
    reactors: list[Reactor], deadlines: list[float], clock: Clock, waker: Waker
) -> None:
    now = clock.now()
    timeout = max(0.0, min(deadlines) - now) if deadlines else None
    poller = select.poll()
    for reactor in reactors:
        transport = reactor.transport
        if reactor.closed:
            continue
        next_arrival = getattr(transport, "next_arrival", None)
        if next_arrival is not None:
            # An in-memory endpoint: its descriptor is readable as soon as a
            # datagram is queued, even one delayed into the future.
            arrival = next_arrival()
            if arrival is not None:
                if arrival <= now:
                    return
                wait = arrival - now
                timeout = wait if timeout is None else min(timeout, wait)
                continue
        mask = select.POLLIN
        if transport.has_pending_writes():
            mask |= select.POLLOUT
        poller.register(transport.fileno(), mask)
    poller.register(waker.fileno(), select.POLLIN)
    # poll() rounds a fractional millisecond up, so a timer due in 0.3 ms
    # costs one wake-up, not a spin.
    poller.poll(None if timeout is None else timeout * 1000.0)


def _advance_fake_clock(
    reactors: list[Reactor], deadlines: list[float], clock: FakeClock
) -> None:
    now = clock.now()
    candidates = list(deadlines)
    for reactor in reactors:
        next_arrival = getattr(reactor.transport, "next_arrival", None)
        arrival = next_arrival() if next_arrival is not None else None
        if arrival is not None:
            if arrival <= now:
                return
            candidates.append(arrival)
    if not candidates:
        raise RuntimeError(
            "poll() on a fake clock would wait forever: nothing is in flight, "
            "no timer is armed and no timeout was given"
        )
    clock.advance_to(min(candidates))
