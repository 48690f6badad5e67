"""Probes under sustained loss for a :class:`~.core.Qh3Core`.

Two gaps in qh3's Rust core that heavy loss turns into dead connections,
and what the facade does about each:

* **The probe timeout doubles without bound.**  RFC 9002 doubles it after
  every probe left unanswered, and the core offers no way to stop; under
  sustained loss the wait outgrows the idle timeout and a transfer that was
  still progressing dies (see
  :data:`~quicconn._core.rules.PROBES_PER_TIMEOUT`).  The aioquic core caps
  the backoff itself; here, once the handshake completed, the facade sends
  a PING (an ack-eliciting probe qh3 sends even when the congestion window
  is full) whenever the core's own next probe lies further away than
  :func:`~quicconn._core.rules.max_probe_interval`, counted from when the
  peer was last heard from or probed.  Its acknowledgement resets the
  core's backoff and lets it detect what was lost.  (qh3 sends PINGs in
  1-RTT packets only.)
* **A client goes quiet before its handshake is confirmed.**  RFC 9002
  (section 6.2.2.1) keeps a client's probe timer armed until the server has
  received a Handshake packet from it: a server that sent three times what
  it received may send nothing more, and only the client can unblock it.
  qh3's client disarms it once nothing ack-eliciting is in flight, so when
  its acknowledgements of the server's first flight are lost, both ends wait
  for the handshake timeout.  And between the end of its handshake and the
  server's HANDSHAKE_DONE, a qh3 client whose congestion window is full (of
  1-RTT data the server could not read yet) sends nothing at all, not even
  acknowledgements, so a lost HANDSHAKE_DONE is never sent again.  In both
  cases the facade's client *nudges*: it hands the core the end of the
  CRYPTO data it last sent again (at most :data:`NUDGE_BYTES`: the whole of
  a client's Finished), which goes out as an ack-eliciting packet of that
  epoch (an Initial is padded to 1200 bytes) and, in the second case,
  unblocks the core's sending, at the probe timeout's pace (doubling, up
  to :func:`~quicconn._core.rules.max_probe_interval`).  Bytes the peer
  already acknowledged are not sent again.
"""

from __future__ import annotations

#: How much of the CRYPTO data last sent in an epoch a nudge sends again:
#: a client's Finished (36 bytes with SHA-256) whole, one packet's worth of
#: the end of a ClientHello.
NUDGE_BYTES = 64
#: PING IDs of probes (the keep-alive's count up from 1).
_FIRST_PROBE_ID = 1 << 32
#: The first nudge's wait without an RTT sample: qh3's first probe timeout
#: (twice its initial RTT of 333 ms).
_FIRST_NUDGE = 0.666


class Prober:
    """When the peer was last heard from or probed; when the next probe or
    nudge is due."""

    __slots__ = (
        "last_crypto",
        "last_heard",
        "last_probe",
        "last_sent",
        "nudges",
        "probes",
    )

    def __init__(self) -> None:
        self.last_heard = 0.0
        self.last_probe = 0.0
        #: When the core last sent anything.
        self.last_sent = 0.0
        #: Probes sent so far.
        self.probes = 0
        #: Nudges sent since the peer was last heard from.
        self.nudges = 0
        #: Epoch -> (offset, bytes): the end of the CRYPTO data sent in it.
        self.last_crypto: dict[int, tuple[int, bytes]] = {}

    def heard(self, now: float) -> None:
        """A datagram arrived from the peer."""
        self.last_heard = now
        self.nudges = 0

    def sent(self, now: float) -> None:
        """The core sent datagrams."""
        self.last_sent = now

    def deadline(
        self, interval: float | None, core_probe_at: float | None
    ) -> float | None:
        """When to probe: ``interval`` after the later of the last datagram
        heard, the last one the core sent and the last probe (so only once
        the core has been silent that long: its doubling probe timeout
        outgrew the interval), if the core's own next probe
        (``core_probe_at``, None if it has none armed) would come later."""
        if interval is None or core_probe_at is None:
            return None
        due = max(self.last_heard, self.last_sent, self.last_probe) + interval
        return due if due < core_probe_at else None

    def probe(self, now: float) -> int:
        """Record a probe sent at ``now``; its PING ID."""
        self.probes += 1
        self.last_probe = now
        return _FIRST_PROBE_ID + self.probes

    def nudge_deadline(
        self, smoothed_rtt: float | None, interval: float | None
    ) -> float | None:
        """When a client nudges: a probe timeout after the later of the last
        datagram heard, the last one sent and the last nudge (a core that
        is sending needs no nudge: a nudge beside its own retransmissions
        would only duplicate them), doubling with each unanswered nudge up
        to ``interval`` (never below the first probe timeout)."""
        if not self.last_crypto:
            return None
        first = _FIRST_NUDGE if smoothed_rtt is None else 3.0 * smoothed_rtt
        wait: float = first * 2**self.nudges
        if interval is not None:
            wait = min(wait, max(first, interval))
        return max(self.last_heard, self.last_probe, self.last_sent) + wait

    def nudge(self, now: float) -> tuple[int, int, bytes] | None:
        """Record a nudge at ``now``: the CRYPTO to hand the core again
        (epoch, offset, data), from the latest epoch that sent any."""
        if not self.last_crypto:
            return None
        self.nudges += 1
        self.last_probe = now
        epoch = max(self.last_crypto)
        offset, data = self.last_crypto[epoch]
        return epoch, offset, data


__all__ = ["NUDGE_BYTES", "Prober"]
