"""Per-datagram impairment decisions: loss, corruption, droplists, blackholes.

Plain Python, no I/O and no clock of its own: the caller says what time it
is.  The same policy drives the in-memory links of
:class:`quicconn.testing.DatagramPair` and the UDP relay of
``interop.netsim`` (the interop runner's network simulator on loopback), so
a loss pattern pinned in a deterministic test is the same one the relay
applies to real peers.

The options follow the QUIC interop runner's ns-3 scenarios
(quic-network-simulator): ``drop-rate`` (``--rate_to_server``,
``--burst_to_server``), ``corrupt-rate``, ``droplist``
(``--drops_to_server=1,3``) and ``blackhole``; see docs/netsim.md for the
mapping and the places where this model deliberately differs.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

__all__ = ["Fate", "Impairment", "ImpairmentSpec"]

#: ns-3's corrupt-rate model changes one byte among the first 51 of the UDP
#: payload, so that the QUIC header is hit often.
CORRUPT_WINDOW = 51


class Fate(enum.Enum):
    """What happened to one datagram."""

    FORWARD = "forward"  #: delivered unchanged
    CORRUPT = "corrupt"  #: delivered with one byte changed
    DROP = "drop"  #: lost to the random drop rate
    DROPLIST = "droplist"  #: its 1-based index is in the droplist
    BLACKHOLE = "blackhole"  #: sent while the link was blackholed
    # Decided by the relay's link model, before the impairment policy:
    MTU = "mtu"  #: the IP packet would exceed the link MTU
    QUEUE_FULL = "queue-full"  #: the drop-tail queue was full
    UNBOUND = "unbound"  #: reached a NAT binding that a rebind retired

    @property
    def delivered(self) -> bool:
        return self is Fate.FORWARD or self is Fate.CORRUPT


def _percent(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{name} is a percentage between 0 and 100, got {value}")
    return value


@dataclass(frozen=True)
class ImpairmentSpec:
    """The impairments of one direction of a link.

    ``drop_rate`` / ``corrupt_rate`` are percentages (fractions allowed).
    ``burst`` caps how many datagrams in a row the random rates may drop (or
    corrupt); ``None`` means no cap.  ``droplist`` holds 1-based indices of
    datagrams to drop.  ``blackholes`` are ``(start, end)`` windows, in the
    caller's time scale, during which everything is dropped.
    """

    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    burst: int | None = None
    droplist: frozenset[int] = field(default_factory=frozenset)
    blackholes: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "drop_rate", _percent("drop_rate", self.drop_rate))
        object.__setattr__(
            self, "corrupt_rate", _percent("corrupt_rate", self.corrupt_rate)
        )
        if self.burst is not None and (
            not isinstance(self.burst, int) or self.burst < 1
        ):
            raise ValueError(
                f"burst must be a positive integer or None, got {self.burst!r}"
            )
        droplist = frozenset(self.droplist)
        for index in droplist:
            if not isinstance(index, int) or index < 1:
                raise ValueError(f"droplist indices start at 1, got {index!r}")
        object.__setattr__(self, "droplist", droplist)
        windows = tuple((float(a), float(b)) for a, b in self.blackholes)
        for start, end in windows:
            if end <= start:
                raise ValueError(
                    f"blackhole window ({start}, {end}) ends before it starts"
                )
        object.__setattr__(self, "blackholes", windows)


def is_version_negotiation(data: bytes) -> bool:
    """A QUIC long-header packet with version 0 (RFC 9000, section 17.2.1)."""
    return len(data) >= 5 and data[0] & 0x80 != 0 and data[1:5] == b"\x00\x00\x00\x00"


class Impairment:
    """Decides the fate of each datagram on one direction of a link.

    Stateful: it counts datagrams (for the droplist and burst caps) and owns
    a seeded :class:`random.Random`, so the same seed and the same sequence of
    datagrams give the same fates on every run.  Give each direction its own
    instance (and seed) so that the two directions' draws never interleave.

    ``forced_blackhole`` drops everything while True, whatever the windows say.
    """

    def __init__(
        self, spec: ImpairmentSpec | None = None, *, seed: int | str | None = None
    ) -> None:
        self.spec = spec if spec is not None else ImpairmentSpec()
        self.seed = seed
        self._rng = random.Random(seed)
        self.forced_blackhole = False
        #: Datagrams judged so far (the 1-based index of the last one).
        self.index = 0
        self._drops_in_a_row = 0
        self._corrupts_in_a_row = 0
        self.counts: dict[Fate, int] = dict.fromkeys(Fate, 0)

    def blackholed(self, now: float) -> bool:
        """Whether the link drops everything at time ``now``."""
        if self.forced_blackhole:
            return True
        return any(start <= now < end for start, end in self.spec.blackholes)

    def judge(self, now: float, data: bytes) -> tuple[Fate, bytes]:
        """Decide the fate of the next datagram; return it with the bytes to deliver.

        Order: droplist, blackhole, random drop, random corruption.  The
        random draws are made only for datagrams that reach that stage, so
        they depend on the sequence of datagrams alone, never on timing.
        """
        self.index += 1
        spec = self.spec
        fate = Fate.FORWARD
        if self.index in spec.droplist:
            fate = Fate.DROPLIST
        elif self.blackholed(now):
            fate = Fate.BLACKHOLE
        elif spec.drop_rate and self._draw_drop():
            fate = Fate.DROP
        elif (
            spec.corrupt_rate
            # Like ns-3, never corrupt Version Negotiation: it has no integrity
            # protection, and a VN that a corrupted Initial elicits lists the
            # client's own version, which the client must ignore.
            and not is_version_negotiation(data)
            and self._draw_corrupt()
        ):
            fate = Fate.CORRUPT
            data = self._corrupt(data)
        self.counts[fate] += 1
        return fate, data

    def _draw_drop(self) -> bool:
        burst = self.spec.burst
        if burst is not None and self._drops_in_a_row >= burst:
            self._drops_in_a_row = 0
            return False
        if self._rng.random() * 100.0 < self.spec.drop_rate:
            self._drops_in_a_row += 1
            return True
        self._drops_in_a_row = 0
        return False

    def _draw_corrupt(self) -> bool:
        burst = self.spec.burst
        if burst is not None and self._corrupts_in_a_row >= burst:
            self._corrupts_in_a_row = 0
            return False
        if self._rng.random() * 100.0 < self.spec.corrupt_rate:
            self._corrupts_in_a_row += 1
            return True
        self._corrupts_in_a_row = 0
        return False

    def _corrupt(self, data: bytes) -> bytes:
        if not data:
            return data
        position = self._rng.randrange(min(CORRUPT_WINDOW, len(data)))
        old = data[position]
        new = self._rng.randrange(255)
        if new >= old:
            new += 1  # any value but the old one, uniformly
        return data[:position] + bytes((new,)) + data[position + 1 :]
