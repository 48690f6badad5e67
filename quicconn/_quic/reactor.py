"""The reactor: one per transport, it turns time and datagrams into progress.

A reactor owns a :class:`~quicconn._io.transport.DatagramTransport` and drives
every :class:`~quicconn._core.interface.Core` that shares it (one for a client
socket, many on a listener).  Its unit of work is the *tick*
(``SSL_handle_events``):

1. drain every datagram that is ready and route each to its core by
   destination connection ID (a core that processes batches natively,
   ``Capability.BATCHED_RECEIVE``, gets each run of its datagrams from one
   address in one :meth:`~quicconn._core.interface.Core.receive_datagrams`
   call);
2. fire every core timer that is due (a heap, so a listener with thousands of
   connections pays O(log n) per timer, not a scan), after the datagrams: a
   process that could not tick for a while acts on what arrived meanwhile
   before it acts on a timeout;
3. let each touched core report events to its objects, then collect what it
   wants to send, and hand it all to the transport in one batch.

A batch is one burst, not an unbounded one: once a tick has spent
:data:`BATCH_LATENCY` on it, what is ready goes out before the rest is
processed (with the time read again).  Otherwise the first datagram of a
large burst (200 ClientHellos, each costing a handshake) would wait for
the last one's work: its peer measures that wait as round-trip time (RFC
9002 takes the first sample as the estimate, and a PTO of three times it),
then paces and times out on that estimate.

Blocking calls use :meth:`Reactor.block_until`: tick, test a predicate,
otherwise sleep in ``poll(2)`` on the socket until the next timer deadline.
No busy waiting, no fixed sleeps: an idle connection costs one wake-up per
timer.  The sleeping, with several threads blocked on one reactor, is the
reactor's :class:`~quicconn._io.waiter.Waiter` (leader/follower): every tick
that did work wakes the other waiters, and :meth:`Reactor.close` goes through
its one close path.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .._core.interface import Core
from .._core.wire import peek_destination_cid
from .._io.transport import (
    Address,
    DatagramRun,
    DatagramTransport,
    UdpTransport,
    Waker,
)
from .._io.waiter import Waiter

logger = logging.getLogger("quicconn.reactor")

UnroutableHandler = Callable[[bytes, Address, float], None]
#: ``route_watcher(cid, added)``: a connection ID started (or stopped)
#: naming one of this reactor's connections.
RouteWatcher = Callable[[bytes, bool], None]

#: How long a tick works on a burst before it sends what is ready (and
#: reads the clock again): the delay the batching may add to an ACK or a
#: handshake reply, which the peer counts as round-trip time.
BATCH_LATENCY = 0.002


class ReactorObserver(Protocol):
    """Something that drives a reactor from outside a blocking call: an
    event-loop driver or a thread-assisted domain's assist thread."""

    def on_progress(self, cores: list[Core]) -> None:
        """A flush processed ``cores`` (their connections may have moved on)
        and may have changed the deadline.  Lock held; must not call back
        into the objects."""

    def on_close(self) -> None:
        """The reactor is closing; its descriptor is about to be closed."""


class _Timer:
    """One core's armed deadline, as the timer heap names it.

    Heap entries go stale when a core reschedules; they name this slot,
    not the core, so a removed core's state is freed at once instead of
    living on in stale entries until the heap is next compacted.
    """

    __slots__ = ("core", "deadline")

    def __init__(self, core: Core) -> None:
        self.core: Core | None = core
        self.deadline: float | None = None

    def disarm_for_good(self) -> None:
        """The core was removed: every entry naming this slot is stale."""
        self.core = None
        self.deadline = None


class Reactor:
    """Drives the cores on one transport; see the module docstring."""

    def __init__(self, transport: DatagramTransport) -> None:
        self.transport = transport
        #: The socket's transport when the kernel coalesces what it receives
        #: (UDP GRO): a lone client connection takes those runs whole.
        self._coalescing = (
            transport
            if isinstance(transport, UdpTransport) and transport.gro_enabled
            else None
        )
        self.clock = transport.clock
        self._waiter = Waiter(transport)
        #: The lock of every call on the objects here (the waiter's).
        self.lock = self._waiter.lock
        self._cores: set[Core] = set()
        #: Freed connections' cores kept until their closing or draining
        #: period ends (see :meth:`linger`).
        self._lingering: set[Core] = set()
        self._by_cid: dict[bytes, Core] = {}
        self._cids_of: dict[Core, set[bytes]] = {}
        self._single: Core | None = None
        #: Cores fed whole runs of datagrams (Capability.BATCHED_RECEIVE).
        self._batched: set[Core] = set()
        self._timers: dict[Core, _Timer] = {}
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._dirty: dict[Core, None] = {}
        self.cid_length = 8
        #: Called (under the lock) for datagrams no core claims: a listener
        #: uses it to create connections, answer version negotiation, etc.
        self.unroutable_handler: UnroutableHandler | None = None
        #: Told of every connection ID routed here and of each one dropped
        #: (a worker group announces those the kernel steers elsewhere).
        self.route_watcher: RouteWatcher | None = None
        self._users = 0
        self.closed = False
        # MODE_ASYNC: cores whose paused job may resume, posted from engine
        # threads (deque appends are atomic); see post_async_ready().
        self._async_ready: deque[Core] = deque()
        self._async_elsewhere: list[Core] = []
        #: Set once a second thread ticks: async jobs then stop running
        #: inline (see quicconn/_asyncjob/job.py).
        self.multi_threaded = False
        self._tick_thread: int | None = None
        #: True during a tick made inside block_until (a blocking call).
        self.blocking_tick = False
        #: An event-loop driver (quicconn.asyncio, quicconn.trio) or an
        #: assist thread watching this reactor; see :class:`ReactorObserver`.
        self.observer: ReactorObserver | None = None
        #: A tick ran: OpenSSL's reactor then wants to read, and a listener
        #: or an unstarted client stops being "due at once".
        self.ticked = False
        #: Datagrams handed in by the application (SSL_inject_net_dgram),
        #: processed by the next tick before the socket's.
        self._injected: list[tuple[bytes, Address]] = []

    # -- membership -------------------------------------------------------

    def add_core(self, core: Core, *cids: bytes, batched: bool = False) -> None:
        """Start driving ``core``; datagrams to any of ``cids`` reach it
        (in runs through ``receive_datagrams`` if ``batched``)."""
        self._cores.add(core)
        if batched:
            self._batched.add(core)
        for cid in cids:
            self.add_cid(core, cid)
        self._single = next(iter(self._cores)) if self._can_shortcut() else None

    def linger(self, core: Core) -> None:
        """Keep driving the core of a freed connection that is closing
        until its closing or draining period ends (RFC 9000 section 10.2),
        then forget it: until then the peer's late packets are still the
        connection's (dropped, or answered with its CONNECTION_CLOSE), not
        a stranger's to answer with a stateless reset."""
        self._lingering.add(core)
        self._schedule(core)

    def remove_core(self, core: Core) -> None:
        """Stop driving ``core`` and forget its connection IDs and timer."""
        self._cores.discard(core)
        self._lingering.discard(core)
        self._batched.discard(core)
        # Per-core bookkeeping: O(own CIDs), not a scan of every connection's.
        watcher = self.route_watcher
        for cid in self._cids_of.pop(core, ()):
            if self._by_cid.get(cid) is core:
                del self._by_cid[cid]
                if watcher is not None:
                    watcher(cid, False)
        timer = self._timers.pop(core, None)
        if timer is not None:
            timer.disarm_for_good()
        self._dirty.pop(core, None)
        self._single = next(iter(self._cores)) if self._can_shortcut() else None

    def add_cid(self, core: Core, cid: bytes) -> None:
        if core not in self._cores:
            return  # a connection already removed gets no new routes
        self._by_cid[cid] = core
        self._cids_of.setdefault(core, set()).add(cid)
        if self.route_watcher is not None:
            self.route_watcher(cid, True)

    def remove_cid(self, cid: bytes) -> None:
        core = self._by_cid.pop(cid, None)
        if core is not None:
            self._cids_of.get(core, set()).discard(cid)
            if self.route_watcher is not None:
                self.route_watcher(cid, False)

    def _can_shortcut(self) -> bool:
        # One client connection and no listener: every datagram is its.
        return len(self._cores) == 1 and self.unroutable_handler is None

    def retain(self) -> None:
        """Count one more object sharing this reactor."""
        self._users += 1

    def release(self) -> bool:
        """Count one object gone; True when none is left."""
        self._users -= 1
        return self._users <= 0

    def wake_waiters(self) -> None:
        """Make every thread waiting in :meth:`block_until` test its
        predicate again (something they wait on changed).  Lock held."""
        self._waiter.notify()

    # -- the tick ---------------------------------------------------------

    def mark_dirty(self, core: Core) -> None:
        """Ask for ``core``'s events and output to be processed next flush."""
        self._dirty[core] = None

    def tick(self) -> None:
        """One round of event handling (``SSL_handle_events``).  Lock held."""
        if self.closed:
            return
        self.ticked = True
        me = threading.get_ident()
        if me != self._tick_thread:
            if self._tick_thread is not None:
                self.multi_threaded = True
            self._tick_thread = me
        transport = self.transport
        now = self.clock.now()
        if self._async_ready or self._async_elsewhere:
            self._resume_async(now)
        if transport.has_pending_writes():
            transport.flush()
        # Datagrams before timers: what arrived while this process was not
        # ticking (busy, descheduled) counts before a timeout that expired
        # meanwhile is acted on; a core whose due timer fires after a
        # datagram moved it checks its own state and does nothing.
        if self._injected:
            injected, self._injected = self._injected, []
            for data, addr in injected:
                if self._single is not None:
                    self._single.receive_datagram(data, addr, now)
                    self._dirty[self._single] = None
                else:
                    self._route(data, addr, now)
        single = self._single
        if single is not None and single in self._batched and self._coalescing:
            # One connection's own socket: GRO runs go to the core whole.
            runs = self._coalescing.recv_runs()
            if runs:
                _feed_coalesced(single, runs, now)
                self._dirty[single] = None
            batch = []
        else:
            batch = transport.recv_batch()
        if batch:
            if single is not None and single in self._batched:
                _feed_runs(single, batch, now)
                self._dirty[single] = None
            elif single is None and self._batched:
                now = self._route_batch(batch, now)
            else:
                now = self._receive_each(batch, now)
        if self._heap and self._heap[0][0] <= now:
            self._fire_timers(now)
        if self._dirty:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Process events and send output of every dirty core.  Lock held."""
        if now is None:
            now = self.clock.now()
        outgoing: list[tuple[bytes, Address]] = []
        worked = bool(self._dirty)
        observer = self.observer
        processed: list[Core] = []
        clock = self.clock
        started = clock.now()
        while self._dirty:
            dirty = list(self._dirty)
            self._dirty.clear()
            if observer is not None:
                processed += dirty
            for core in dirty:
                core.dispatch_events()
                outgoing += core.datagrams_to_send(now)
                # Building datagrams can itself produce events: a
                # NEW_CONNECTION_ID frame announces a connection ID, which
                # must be routable before the peer can use it.
                core.dispatch_events()
                self._schedule(core)
                if outgoing and clock.now() - started >= BATCH_LATENCY:
                    self.transport.send_batch(outgoing)  # see BATCH_LATENCY
                    outgoing = []
                    now = started = clock.now()
        if outgoing:
            self.transport.send_batch(outgoing)
        if observer is not None and processed:
            observer.on_progress(processed)
        if worked:
            # Something changed (input, a timer, or a call on some object):
            # wake the other waiters.  Never for a tick that did nothing, or
            # two waiting threads would take turns waking each other.
            self._waiter.notify()

    def inject(self, data: bytes, addr: Address) -> None:
        """Queue a datagram as if it had arrived from ``addr``.  Lock held."""
        self._injected.append((bytes(data), addr))

    def _receive_each(self, batch: list[tuple[bytes, Address]], now: float) -> float:
        """Hand a drained batch over datagram by datagram; returns the time
        the last part started (what is ready goes out every BATCH_LATENCY)."""
        single = self._single
        clock = self.clock
        started = now
        for data, addr in batch:
            if single is not None:
                single.receive_datagram(data, addr, now)
                self._dirty[single] = None
            else:
                self._route(data, addr, now)
            if self._dirty and clock.now() - started >= BATCH_LATENCY:
                self.flush(now)  # see BATCH_LATENCY
                now = started = clock.now()
        return now

    def _route_batch(self, batch: list[tuple[bytes, Address]], now: float) -> float:
        """Route a drained batch; batched cores get theirs at the end, in
        order, in runs (a core removed meanwhile gets nothing).  Datagrams
        for other cores go at once, flushed every BATCH_LATENCY."""
        batched = self._batched
        runs: dict[Core, list[tuple[bytes, Address]]] = {}
        by_cid = self._by_cid
        cid_length = self.cid_length
        clock = self.clock
        started = now
        for item in batch:
            cid = peek_destination_cid(item[0], cid_length)
            core = by_cid.get(cid) if cid is not None else None
            if core is not None and core in batched:
                found = runs.get(core)
                if found is None:
                    runs[core] = [item]
                else:
                    found.append(item)
                continue
            self._route(item[0], item[1], now)
            if self._dirty and clock.now() - started >= BATCH_LATENCY:
                self.flush(now)  # see BATCH_LATENCY
                now = started = clock.now()
        for core, items in runs.items():
            if core in self._cores:
                _feed_runs(core, items, now)
                self._dirty[core] = None
        return now

    def _route(self, data: bytes, addr: Address, now: float) -> None:
        cid = peek_destination_cid(data, self.cid_length)
        core = self._by_cid.get(cid) if cid is not None else None
        if core is not None:
            core.receive_datagram(data, addr, now)
            self._dirty[core] = None
        elif self.unroutable_handler is not None:
            try:
                self.unroutable_handler(data, addr, now)
            except Exception:
                logger.exception("unroutable datagram handler failed")

    # -- MODE_ASYNC (quicconn/_asyncjob/job.py) ----------------------------------

    def async_inline(self) -> bool:
        """Whether an async job started now may live in the ticking thread.

        Yes for an event loop: one thread, ticking from nonblocking calls or
        handle_events().  Threads making blocking calls come and go, and a
        paused job can only resume in its own thread, so their jobs go to
        the job thread instead.
        """
        return not (self.multi_threaded or self.blocking_tick)

    def post_async_ready(self, core: Core) -> None:
        """Ask the next tick to resume ``core``'s async job.  Any thread.

        Wakes a thread sleeping in :meth:`block_until`, so blocking calls
        notice an engine's completion without polling.
        """
        self._async_ready.append(core)
        self._waiter.post()

    def _resume_async(self, now: float) -> None:
        # Only what was posted before this tick: a job that pauses again
        # (an engine asking for a retry) waits for the next tick, so the
        # application sees every pause.
        ready = self._async_ready
        waiting = self._async_elsewhere
        self._async_elsewhere = []
        waiting.extend(ready.popleft() for _ in range(len(ready)))
        for core in waiting:
            if core not in self._cores:
                continue
            if core.resume_async(now):
                self._dirty[core] = None
            else:
                # Its job lives in another thread, which resumes it when it
                # next ticks (every waiting thread ticks after this one).
                self._async_elsewhere.append(core)

    def _fire_timers(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, timer = heapq.heappop(heap)
            core = timer.core
            if core is None or timer.deadline != deadline:
                continue  # superseded by a later reschedule, or removed
            timer.deadline = None
            core.handle_timer(now)
            self._dirty[core] = None

    def _schedule(self, core: Core) -> None:
        if core not in self._cores:
            return
        if core in self._lingering and core.is_terminated:
            self.remove_core(core)
            return
        deadline = core.get_timer()
        timer = self._timers.get(core)
        if timer is None:
            if deadline is None:
                return
            timer = self._timers[core] = _Timer(core)
        if deadline == timer.deadline:
            return
        timer.deadline = deadline
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), timer))
            if len(self._heap) > 4 * len(self._timers) + 64:
                self._compact_heap()

    def _compact_heap(self) -> None:
        self._heap = [entry for entry in self._heap if entry[2].deadline == entry[0]]
        heapq.heapify(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest armed timer of any core here, or None."""
        heap = self._heap
        while heap:
            deadline, _, timer = heap[0]
            if timer.deadline == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def timeout(self) -> float | None:
        """Seconds until the next deadline, clamped at 0; None for infinity.

        0.0 while a core has unprocessed work (a read granted credit, a
        datagram was fed without a flush): the next tick must send it.
        """
        if self._dirty or self._injected:
            return 0.0
        deadline = self.next_deadline()
        if deadline is None:
            return None
        now = self.clock.now()
        remaining = deadline - now
        if remaining <= 0.0:
            return 0.0
        # A caller that adds this to ``now`` must reach the deadline: a
        # difference rounded down would leave a fake clock advancing to just
        # short of it, forever (seen with deadlines 1e-13 s away).
        while now + remaining < deadline:
            remaining = math.nextafter(remaining, math.inf)
        return remaining

    def net_write_desired(self) -> bool:
        return self.transport.has_pending_writes()

    # -- blocking ---------------------------------------------------------

    def add_watcher(self, waker: Waker) -> None:
        """Wake ``waker`` after every tick (a poll() waiting elsewhere).  Lock held."""
        self._waiter.add_watcher(waker)

    def remove_watcher(self, waker: Waker) -> None:
        """Stop waking ``waker``.  Lock held."""
        self._waiter.remove_watcher(waker)

    def block_until(
        self,
        predicate: Callable[[], bool],
        deadline: float | None = None,
        *,
        wake_at: Callable[[], float | None] | None = None,
    ) -> bool:
        """Tick and wait until ``predicate()`` holds; False at ``deadline``.

        Called with :attr:`lock` held exactly once; it is released while
        sleeping.  Wakes for datagrams, timer deadlines, ``wake_at()`` (an
        instant of the caller's own, if given) and other threads' progress
        only.  False also once the reactor is closed.
        """

        def ready() -> bool:
            self.blocking_tick = True
            try:
                self.tick()
            finally:
                self.blocking_tick = False
            return predicate()

        if wake_at is None:
            return self._waiter.block_until(ready, self.next_deadline, deadline)
        own = wake_at

        def next_wakeup() -> float | None:
            return _earliest(self.next_deadline(), own())

        return self._waiter.block_until(ready, next_wakeup, deadline)

    # -- teardown ---------------------------------------------------------

    def close(self, close_transport: bool) -> None:
        """Stop for good; optionally close the transport too."""
        if self.closed:
            return
        self.closed = True
        observer, self.observer = self.observer, None
        if observer is not None:
            observer.on_close()
        self._cores.clear()
        self._lingering.clear()
        self._batched.clear()
        self._by_cid.clear()
        self._cids_of.clear()
        for timer in self._timers.values():
            timer.disarm_for_good()
        self._timers.clear()
        self._heap.clear()
        self._async_ready.clear()
        self._async_elsewhere.clear()
        self._waiter.close(close_transport)


def _feed_runs(core: Core, batch: list[tuple[bytes, Address]], now: float) -> None:
    """Feed ``batch`` to ``core`` in order, one call per run from one address."""
    start = 0
    addr = batch[0][1]
    for i in range(1, len(batch)):
        if batch[i][1] != addr:
            core.receive_datagrams([data for data, _ in batch[start:i]], addr, now)
            start = i
            addr = batch[i][1]
    core.receive_datagrams([data for data, _ in batch[start:]], addr, now)


def _feed_coalesced(core: Core, runs: list[DatagramRun], now: float) -> None:
    """Feed ``runs`` to ``core`` in order: GRO runs whole, and lone
    datagrams from one address together (as :func:`_feed_runs` does)."""
    lone: list[bytes] = []
    lone_from = runs[0][2]
    for data, segment_size, addr in runs:
        coalesced = segment_size < len(data)
        if lone and (coalesced or addr != lone_from):
            core.receive_datagrams(lone, lone_from, now)
            lone = []
        if coalesced:
            core.receive_coalesced(data, segment_size, addr, now)
        else:
            lone.append(data)
            lone_from = addr
    if lone:
        core.receive_datagrams(lone, lone_from, now)


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


__all__ = [
    "BATCH_LATENCY",
    "Reactor",
    "ReactorObserver",
    "RouteWatcher",
    "UnroutableHandler",
]
