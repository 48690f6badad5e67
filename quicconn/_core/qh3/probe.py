"""The client's anti-deadlock probe, which qh3's core does not send.

RFC 9002 section 6.2.2.1: until the server has validated the client's
address, a server that spent its anti-amplification budget (3 x what it
received) cannot send, so a client must keep a probe timeout armed even
with nothing in flight, and send an ack-eliciting Initial (or Handshake)
packet when it fires.  qh3's recovery arms none once the ClientHello is
acknowledged; when the server's flight is then lost, and the client's
acknowledgements of it too, each side waits for the other until the idle
timeout (the interop matrix's handshakeloss and handshakecorruption between
qh3-core ends, 1 of 50 handshakes each).

:class:`HandshakeProbe` watches a client's core until its handshake
completes: when qh3 has no recovery timer armed and nothing was sent or
received for a probe timeout (3 x the smoothed RTT, doubling with each
probe), it queues the ClientHello's first byte again as CRYPTO data at
offset 0 of the Initial space: a duplicate the server acknowledges, in a
padded Initial datagram that raises the server's budget by 3600 bytes.
"""

from __future__ import annotations

from typing import Any

from .handshake import INITIAL_RTT

#: The first byte of every ClientHello (its handshake message type, 1).
_CLIENT_HELLO_TYPE = b"\x01"
_INITIAL_EPOCH = 0


class HandshakeProbe:
    """When a client should probe, and the probe itself."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._count = 0
        #: False once it can never be needed (handshake complete, closing).
        self.active = True

    def sent(self, now: float) -> None:
        self._since = now

    def received(self, now: float) -> None:
        """Nothing: as RFC 9002 section 6.2.1 says, a client does not reset
        its backoff on what arrives before the server validated it (an
        ACK-only Initial answering each probe would otherwise keep the
        probes at their shortest interval)."""

    def deadline(self, native: Any) -> float | None:
        """When to probe, or None while qh3's own recovery has a timer."""
        if not self.active or self._since is None:
            return None
        timer = native.get_timer()
        if timer is not None and timer[0] != "idle":
            return None
        sample = native.smoothed_rtt  # None until the first RTT sample
        rtt = float(sample) if sample else INITIAL_RTT
        return float(self._since + 3 * rtt * 2**self._count)

    def fire(self, native: Any, now: float) -> bool:
        """Queue the probe if it is due; True if it was."""
        deadline = self.deadline(native)
        if deadline is None or now < deadline:
            return False
        native.send_crypto(_INITIAL_EPOCH, 0, _CLIENT_HELLO_TYPE)
        self._count += 1
        self._since = now
        return True


__all__ = ["HandshakeProbe"]
