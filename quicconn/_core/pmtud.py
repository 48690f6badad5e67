"""Path MTU discovery: the search of RFC 8899 (DPLPMTUD) for one path, sans I/O.

QUIC starts every path at 1200-byte datagrams, the size every path must
carry (RFC 9000, section 14), and may send larger ones only once it knows
the path carries them (section 14.3).  :class:`PathMtuSearch` decides which
size to probe next and what the probes' fate means; a core sends each probe
as one ack-eliciting packet padded to the size (PING + PADDING, nothing
that would need retransmitting) and reports whether it was acknowledged or
lost.  It never raises the datagram size past ``ceiling``.

The search (RFC 8899, section 5.3):

* The first probe is the ceiling itself: most paths (an Ethernet LAN,
  loopback) carry it, and then one round trip ends the search.
* An acknowledged probe validates its size (the PLPMTU).  A size is given
  up only after :data:`MAX_PROBES` consecutive probes of it were lost (a
  single loss may be congestion); the search then tries the *plateaus* it
  was given between the largest validated size and the smallest failed one
  (largest first: over IPv6, the same MTU as the ceiling carries 20 bytes
  less), then bisects, until fewer than :data:`SEARCH_STEP` bytes are
  unknown.
* Once complete below the ceiling, the search starts again after
  :data:`RAISE_INTERVAL` (RFC 8899's PMTU_RAISE_TIMER): a path can change.
* Black-hole detection (RFC 8899, section 4.3): when packets of the
  validated size stop getting through, the size falls back to the base and
  the search resumes below the size that failed.  The core says so at once
  (:meth:`PathMtuSearch.black_hole`) on a strong sign: repeated probe
  timeouts with no acknowledgement in between.  On a weak one, losses of
  only full-sized packets that congestion could explain too, it asks for a
  confirmation (:meth:`PathMtuSearch.confirm`): probes of the validated
  size, :data:`MAX_PROBES` of them lost make it a black hole.

Neutral between backends: the aioquic core runs it
(:mod:`quicconn._core.aioquic.connection`); qh3's Rust core has a search of
its own (docs/performance.md, "Path MTU discovery").
"""

from __future__ import annotations

#: The datagram size every QUIC path must carry (RFC 9000, section 14).
BASE_PLPMTU = 1200
#: The UDP payload of a 1500-byte (Ethernet) MTU: 1500 minus the IPv4 (20)
#: and UDP (8) headers.  The default ceiling.
ETHERNET_IPV4_PAYLOAD = 1472
#: The same MTU over IPv6 (a 40-byte header).
ETHERNET_IPV6_PAYLOAD = 1452
#: Consecutive losses after which a probed size is taken not to fit
#: (RFC 8899's MAX_PROBES).
MAX_PROBES = 3
#: The search ends when the unknown range is at most this many bytes.
SEARCH_STEP = 16
#: Seconds until a search that ended below the ceiling tries again
#: (RFC 8899's PMTU_RAISE_TIMER).
RAISE_INTERVAL = 600.0
#: Consecutive probe timeouts (PTOs) with no acknowledgement in between
#: that, above the base size, are taken for a black hole.
BLACK_HOLE_PTOS = 2


class PathMtuSearch:
    """Which datagram size one path carries, discovered by probing.

    :attr:`current` is the validated size (the PLPMTU): what the core may
    fill its packets to.  The core asks :meth:`next_probe` when it could
    send one, reports :meth:`probe_sent`, then exactly one of
    :meth:`probe_acked` or :meth:`probe_lost` with the probe's token, and
    :meth:`black_hole` when full-sized packets stop getting through.  Both
    ``probe_acked`` and ``black_hole`` say whether :attr:`current` changed.
    """

    __slots__ = (
        "_confirming",
        "_failed",
        "_in_flight",
        "_losses",
        "_plateaus",
        "_restart_at",
        "_token",
        "base",
        "black_holes",
        "ceiling",
        "current",
        "probes_lost",
        "probes_sent",
    )

    def __init__(
        self, ceiling: int, *, plateaus: tuple[int, ...] = (), base: int = BASE_PLPMTU
    ) -> None:
        if base < BASE_PLPMTU:
            raise ValueError(f"the base datagram size is at least {BASE_PLPMTU}")
        self.base = base
        self.ceiling = max(int(ceiling), base)
        self._plateaus = sorted(set(plateaus), reverse=True)
        #: The validated datagram size (RFC 8899's PLPMTU).
        self.current = base
        #: The smallest size known (or believed) not to fit; above the
        #: ceiling while no probe failed.
        self._failed = self.ceiling + 1
        #: The token and size of the probe in flight, if any.
        self._in_flight: tuple[int, int] | None = None
        #: Consecutive losses of the size being probed.
        self._losses = 0
        #: Probing the validated size itself (see :meth:`confirm`).
        self._confirming = False
        #: When a search that completed starts again (None: not complete).
        self._restart_at: float | None = None
        self._token = 0
        self.probes_sent = 0
        self.probes_lost = 0
        self.black_holes = 0

    def limit(self, ceiling: int) -> bool:
        """Lower the ceiling (the peer's max_udp_payload_size); True if
        :attr:`current` had to come down with it."""
        ceiling = max(int(ceiling), self.base)
        if ceiling >= self.ceiling:
            return False
        self.ceiling = ceiling
        self._failed = min(self._failed, ceiling + 1)
        if self._in_flight is not None and self._in_flight[1] > ceiling:
            self._in_flight = None
            self._losses = 0
        if self.current > ceiling:
            self.current = ceiling
            return True
        return False

    @property
    def searching(self) -> bool:
        """Whether sizes between :attr:`current` and the ceiling are unknown."""
        return self._failed - self.current > SEARCH_STEP and self.current < self.ceiling

    def _candidate(self) -> int:
        if self._failed > self.ceiling:
            return self.ceiling  # optimistic: most paths carry the ceiling
        for size in self._plateaus:
            if self.current < size < self._failed:
                return size
        return (self.current + self._failed) // 2

    def next_probe(self, now: float) -> int | None:
        """The size to probe now, or None: a probe is in flight, or the
        search is complete (until :data:`RAISE_INTERVAL` has passed)."""
        if self._in_flight is not None:
            return None
        if self._confirming:
            return self.current
        if not self.searching:
            if self.current >= self.ceiling:
                return None
            if self._restart_at is None:
                self._restart_at = now + RAISE_INTERVAL
                return None
            if now < self._restart_at:
                return None
            self._restart_at = None
            self._failed = self.ceiling + 1  # try the ceiling again
            self._losses = 0
        return self._candidate()

    def probe_sent(self, size: int) -> int:
        """A probe of ``size`` bytes left; the token to report its fate with."""
        self._token += 1
        self._in_flight = (self._token, size)
        self.probes_sent += 1
        return self._token

    def probe_acked(self, token: int) -> bool:
        """The probe was acknowledged: its size fits.  True if
        :attr:`current` grew."""
        if self._in_flight is None or self._in_flight[0] != token:
            return False  # superseded (a black hole or a lower ceiling)
        size = self._in_flight[1]
        self._in_flight = None
        self._losses = 0
        if size <= self.current:
            self._confirming = False  # the validated size still fits
            return False
        self.current = size
        return True

    def probe_lost(self, token: int) -> bool:
        """The probe was declared lost.  True if :attr:`current` changed:
        confirmation probes all lost, a black hole."""
        if self._in_flight is None or self._in_flight[0] != token:
            return False
        size = self._in_flight[1]
        self._in_flight = None
        self.probes_lost += 1
        self._losses += 1
        if self._losses < MAX_PROBES:
            return False
        self._losses = 0
        if size <= self.current:
            return self.black_hole()
        self._failed = min(self._failed, size)
        return False

    def confirm(self) -> None:
        """Losses suggest packets of the validated size may no longer get
        through: probe that size until one probe is acknowledged, or
        :data:`MAX_PROBES` are lost (then :meth:`black_hole`)."""
        if self.current > self.base and not self._confirming:
            self._confirming = True
            self._losses = 0
            if self._in_flight is not None and self._in_flight[1] > self.current:
                self._in_flight = None  # a search probe's fate no longer matters

    def black_hole(self) -> bool:
        """Full-sized packets stop getting through: fall back to the base
        size and search again below the size that failed.  True if
        :attr:`current` changed (False at the base already)."""
        if self.current <= self.base:
            return False
        self.black_holes += 1
        self._failed = self.current
        self.current = self.base
        self._in_flight = None
        self._losses = 0
        self._confirming = False
        self._restart_at = None
        return True


__all__ = [
    "BASE_PLPMTU",
    "BLACK_HOLE_PTOS",
    "ETHERNET_IPV4_PAYLOAD",
    "ETHERNET_IPV6_PAYLOAD",
    "MAX_PROBES",
    "RAISE_INTERVAL",
    "SEARCH_STEP",
    "PathMtuSearch",
]
