"""Keeping qh3 2.1 from dropping a stream that a reserved frame still names.

qh3 2.1's core reserves up to 16 stream frames (STREAM, RESET_STREAM,
STOP_SENDING) at a time for the packets it builds, and keeps those that did
not fit for the next packets.  Taking a stream-finished event
(``next_event``) drops the stream but not a reservation for it; the next
packet carrying that frame makes ``poll_transmit`` raise "reserved stream
is missing", and the connection is lost.  A reservation can outlive its
stream's end when it is

* a retransmission, reserved after a loss or a probe timeout, of bytes the
  peer then acknowledged in their first packet (a late or reordered ACK:
  common with many streams ending at once on a busy path), or
* a RESET_STREAM or STOP_SENDING asked for on a stream whose last bytes had
  been acknowledged.

Reservations carry over only when a send stops at the congestion window,
and the core does not show them, so :class:`ReservationGuard` reasons from
what it can see:

1. After a send that ended with room in the window and no pacing timer,
   the core holds no reservation and no retransmission it could reserve
   later without a new loss (a *clean* moment).
2. Since the last clean moment, a retransmission can be reserved only after
   a loss or probe timeout (qh3 counts both) and a control frame only after
   the application asked for one.
3. A stream can finish only if its sending ended (a FIN or RESET_STREAM
   written) or the application stopped its receiving: the ledger keeps
   those streams until they finish.

When all three allow an orphan, the core first sends what the window lets
through (the ACK that would finish a stream also frees window), and if the
window is still full, events stay in the core until a send frees it: the
next ACK, or a probe timeout, whose probes carry the reserved frames.  The
events wait at most until the core's own queued data leaves.
"""

from __future__ import annotations

from qh3._hazmat import QuicConnectionCore

__all__ = ["ReservationGuard"]


class ReservationGuard:
    """Decides when taking the core's events could orphan a reservation."""

    def __init__(self) -> None:
        #: Losses plus probe timeouts as of the last clean moment.
        self._retransmit_causes = 0
        #: A RESET_STREAM or STOP_SENDING was asked for since then.
        self._control_asked = False
        #: The last send stopped at the congestion window.
        self._window_full = False

    def control_asked(self) -> None:
        """The application reset a stream or stopped reading one."""
        self._control_asked = True

    def sent(self, native: QuicConnectionCore, max_datagram_size: int) -> None:
        """The core built every datagram it could; ``max_datagram_size`` is
        the most its packets can take (a larger figure only errs on the
        side of a full window)."""
        self._window_full = (
            native.congestion_window - native.bytes_in_flight < max_datagram_size
        )
        if not self._window_full:
            timer = native.get_timer()
            if timer is None or timer[0] != "pacing":
                self._retransmit_causes = native.loss_total + native.pto_total
                self._control_asked = False

    def at_risk(self, native: QuicConnectionCore, streams_ending: bool) -> bool:
        """Whether a reserved frame may name a stream about to be dropped."""
        return (
            self._window_full
            and streams_ending
            and (
                self._control_asked
                or native.loss_total + native.pto_total > self._retransmit_causes
            )
        )
