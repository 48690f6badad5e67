"""Deterministic test tools: a fake clock and an in-memory datagram pair.

Like ``trio.testing``, these ship with the library so that applications can
test their own event loops against quicconn without sockets or sleeps::

    clock = FakeClock()
    pair = DatagramPair(clock)
    client.set_transport(pair.client)
    server_listener = ctx.new_listener(pair.server)

Time only moves when a test moves it (:meth:`FakeClock.advance`) or when a
*blocking* call waits on a pair endpoint: the wait jumps the clock to the
next deadline or datagram arrival instead of sleeping.  Each direction is a
:class:`Link` whose drop/delay rules are plain Python callables, so a test
can say exactly which datagram is lost.  A link can also carry an
:class:`Impairment` (seeded random loss with burst caps, corruption,
droplists, blackhole windows): the same policy ``interop.netsim`` applies to
real UDP traffic between independent peers.
"""

from __future__ import annotations

import heapq
import itertools
import select
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._io.clock import MONOTONIC, Clock, FakeClock
from ._io.impairment import Fate, Impairment, ImpairmentSpec
from ._io.transport import Address, Datagram, Waker

__all__ = [
    "DatagramPair",
    "FakeClock",
    "Fate",
    "Impairment",
    "ImpairmentSpec",
    "Link",
    "PairEndpoint",
    "drop_first",
]

DropRule = Callable[[int, bytes], bool]
DelayRule = Callable[[int, bytes], float]


def drop_first(count: int) -> DropRule:
    """A drop rule that loses the first ``count`` datagrams of a link."""
    return lambda index, _data: index < count


@dataclass
class Link:
    """One direction of a :class:`DatagramPair`.

    ``drop(index, data)`` decides the fate of the ``index``-th datagram sent
    on this link (0-based); ``delay`` is a fixed one-way delay in seconds,
    to which ``jitter(index, data)``, if set, adds that datagram's own (a
    datagram given more than the next one arrives after it: reordering);
    ``blackhole`` drops everything while True.  ``impairment``, if set, then
    judges each datagram that survived those rules (its blackhole windows
    are in the pair's clock time); it may drop or corrupt it.
    """

    delay: float = 0.0
    drop: DropRule | None = None
    jitter: DelayRule | None = None
    blackhole: bool = False
    impairment: Impairment | None = None
    sent: int = 0
    dropped: int = 0
    corrupted: int = 0
    log: list[tuple[float, int, bool]] = field(default_factory=list)

    def transmit(self, now: float, data: bytes) -> bytes | None:
        """Judge one datagram: the bytes to deliver, or None if it is lost."""
        index = self.sent
        self.sent += 1
        lost = self.blackhole or (self.drop is not None and self.drop(index, data))
        out: bytes | None = None if lost else data
        if out is not None and self.impairment is not None:
            fate, out = self.impairment.judge(now, out)
            if not fate.delivered:
                out = None
            elif fate is Fate.CORRUPT:
                self.corrupted += 1
        if out is None:
            self.dropped += 1
        self.log.append((now, len(data), out is None))
        return out

    def delay_for(self, index: int, data: bytes) -> float:
        """The one-way delay of the ``index``-th datagram."""
        jitter = self.jitter
        return self.delay if jitter is None else self.delay + jitter(index, data)

    def admit(self, now: float, data: bytes) -> bool:
        """Whether the next datagram gets through (see :meth:`transmit`)."""
        return self.transmit(now, data) is not None


class PairEndpoint:
    """One end of a :class:`DatagramPair`; a :class:`DatagramTransport`."""

    def __init__(self, pair: DatagramPair, address: Address, link: Link) -> None:
        self._pair = pair
        self.clock: Clock = pair.clock
        self.fatal_error: OSError | None = None
        self.address = address
        self.link = link  # the outgoing direction
        self.peer: PairEndpoint | None = None
        self._inbox: list[tuple[float, int, bytes, Address]] = []
        self._seq = itertools.count()
        self._signal = Waker()
        self._closed = False
        #: While True the endpoint behaves like a socket whose send buffer is
        #: full: datagrams queue as they would behind EAGAIN.
        self.congested = False
        self._pending: list[Datagram] = []

    # identity
    def fileno(self) -> int:
        return self._signal.fileno()

    def local_address(self) -> Address:
        return self.address

    def connected_peer(self) -> Address | None:
        return None

    # data path
    def _deliver(self, at: float, data: bytes, source: Address) -> None:
        heapq.heappush(self._inbox, (at, next(self._seq), data, source))
        self._signal.wake()

    def next_arrival(self) -> float | None:
        return self._inbox[0][0] if self._inbox else None

    def recv_batch(self) -> list[Datagram]:
        now = self.clock.now()
        batch: list[Datagram] = []
        inbox = self._inbox
        while inbox and inbox[0][0] <= now:
            _, _, data, source = heapq.heappop(inbox)
            batch.append((data, source))
        if not inbox:
            self._signal.clear()
        return batch

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        self._pending.extend(datagrams)
        self.flush()

    def flush(self) -> None:
        peer = self.peer
        if self.congested or not self._pending:
            return
        pending, self._pending = self._pending, []
        if peer is None or self._closed:
            return
        now = self.clock.now()
        link = self.link
        for data, _addr in pending:
            index = link.sent
            out = link.transmit(now, data)
            if out is not None:
                peer._deliver(now + link.delay_for(index, data), out, self.address)

    def has_pending_writes(self) -> bool:
        return bool(self._pending)

    def wait(
        self,
        want_read: bool,
        want_write: bool,
        timeout: float | None,
        interrupt_fd: int | None = None,
    ) -> None:
        now = self.clock.now()
        arrival = self.next_arrival()
        if arrival is not None and arrival <= now:
            return
        if isinstance(self.clock, FakeClock):
            candidates = [
                t
                for t in (arrival, None if timeout is None else now + timeout)
                if t is not None
            ]
            if not candidates:
                raise RuntimeError(
                    "a blocking call on a fake-clock DatagramPair would wait forever: "
                    "nothing is in flight and no timer is armed"
                )
            self.clock.advance_to(min(candidates))
            return
        if arrival is not None:
            wait_for = arrival - now
            timeout = wait_for if timeout is None else min(timeout, wait_for)
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        if interrupt_fd is not None:
            poller.register(interrupt_fd, select.POLLIN)
        poller.poll(None if timeout is None else max(0.0, timeout) * 1000.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._signal.close()


class DatagramPair:
    """Two connected in-memory datagram endpoints (like BIO_s_dgram_pair).

    ``pair.client`` and ``pair.server`` have distinct documentation-range
    addresses; ``pair.to_server`` / ``pair.to_client`` are the two
    :class:`Link` objects carrying datagrams in each direction.
    """

    CLIENT_ADDRESS: Address = ("192.0.2.1", 50000)
    SERVER_ADDRESS: Address = ("192.0.2.2", 4433)

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else MONOTONIC
        self.to_server = Link()
        self.to_client = Link()
        self.client = PairEndpoint(self, self.CLIENT_ADDRESS, self.to_server)
        self.server = PairEndpoint(self, self.SERVER_ADDRESS, self.to_client)
        self.client.peer = self.server
        self.server.peer = self.client

    def in_flight(self) -> int:
        return len(self.client._inbox) + len(self.server._inbox)
