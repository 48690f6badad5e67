"""Keep-alive PINGs (``CoreSettings.keep_alive``) for a :class:`~.core.Qh3Core`.

qh3's Rust core sends a PING when asked (``send_ping``) but keeps no
keep-alive schedule of its own.  OpenSSL's channel pings after a silence
of half the effective idle timeout, at most 25 s
(:func:`~quicconn._core.rules.keep_alive_interval`), so that a connection
whose application waits (or is thread-assisted) outlives the idle timeout;
:class:`KeepAlive` keeps that deadline, as the aioquic core does.
"""

from __future__ import annotations

from ..rules import keep_alive_interval


class KeepAlive:
    """When the peer was last heard from and when we last pinged: a PING
    is due one keep-alive interval after the later of the two."""

    __slots__ = ("last_ping", "last_receipt", "pings")

    def __init__(self) -> None:
        self.last_receipt = 0.0
        self.last_ping = 0.0
        #: PINGs sent so far (each gets its own ID in the core).
        self.pings = 0

    def received(self, now: float) -> None:
        """A datagram arrived from the peer."""
        self.last_receipt = now

    def deadline(self, idle_timeout: float | None) -> float | None:
        """When the next PING is due, for the negotiated ``idle_timeout``
        (None: no idle timeout, no keep-alive)."""
        interval = keep_alive_interval(idle_timeout)
        if interval is None:
            return None
        return max(self.last_receipt, self.last_ping) + interval

    def ping(self, now: float) -> int:
        """Record a PING sent at ``now``; its ID."""
        self.pings += 1
        self.last_ping = now
        return self.pings


__all__ = ["KeepAlive"]
