"""``DatagramRouter``: one per transport, the driver of DTLS calls.

It files incoming datagrams by peer address, so a
:class:`~quicconn.DTLSListener` serves many peers on one socket (one route
per peer, unrouted datagrams to the listener's ``DTLSv1_listen``), and it is
the :class:`~quicconn._objects.call.Driver` that blocking DTLS calls wait on.
Its waiting, locking and closing are the transport's
:class:`~quicconn._io.waiter.Waiter`, the same as a QUIC reactor's.

Unlike a QUIC reactor it keeps no timers: OpenSSL's DTLS event handling is
each connection's retransmission timer alone (``DTLSv1_handle_timeout``),
which stays with the connection; a blocking call passes its timer's deadline
as ``wake_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..._io.transport import Address, DatagramTransport
from ..._io.waiter import Waiter

__all__ = ["DatagramRouter"]

logger = logging.getLogger("quicconn.dtls")


def _no_wakeup() -> None:
    return None


class DatagramRouter:
    """Files datagrams by peer address; blocking DTLS calls wait here."""

    def __init__(self, transport: DatagramTransport) -> None:
        self.transport = transport
        self.clock = transport.clock
        self._waiter = Waiter(transport)
        #: The lock of every call on the DTLS objects sharing the transport.
        self.lock = self._waiter.lock
        self._routes: dict[Address, Callable[[bytes], None]] = {}
        #: Called (lock held) for datagrams from an address without a route.
        self.unrouted: Callable[[bytes, Address], None] | None = None
        self._users = 0

    @property
    def closed(self) -> bool:
        """True once the last object using the transport is gone."""
        return self._waiter.closed

    # -- routes and users -------------------------------------------------

    def add_route(self, peer: Address, deliver: Callable[[bytes], None]) -> None:
        """Give datagrams from ``peer`` to ``deliver``."""
        self._routes[peer] = deliver

    def remove_route(self, peer: Address) -> None:
        """Forget ``peer``'s route."""
        self._routes.pop(peer, None)

    def retain(self) -> None:
        """Count one more object sharing the transport."""
        self._users += 1

    def release(self) -> bool:
        """Count one user gone; True when none is left."""
        self._users -= 1
        return self._users <= 0

    # -- the Driver -------------------------------------------------------

    def tick(self) -> None:
        """Drain the transport and deliver every datagram (lock held).

        Every DTLS I/O attempt starts with it.  It is not OpenSSL's event
        handling (for DTLS that is the retransmission timer alone), so it
        never retransmits.
        """
        if self._waiter.closed:
            return
        transport = self.transport
        if transport.has_pending_writes():
            transport.flush()
            if not transport.has_pending_writes():
                # The backlog is gone: a write blocked in another thread can go.
                self._waiter.notify()
        batch = transport.recv_batch()
        if not batch:
            return
        routes = self._routes
        for data, addr in batch:
            deliver = routes.get(addr)
            if deliver is not None:
                deliver(data)
            elif self.unrouted is not None:
                try:
                    self.unrouted(data, addr)
                except Exception:
                    logger.exception("handling a datagram from %r failed", addr)
        self._waiter.notify()

    def block_until(
        self,
        predicate: Callable[[], bool],
        *,
        wake_at: Callable[[], float | None] | None = None,
    ) -> bool:
        """Wait until ``predicate()`` holds; False once the router is closed.

        Lock held.  ``predicate`` makes the attempt itself (DTLS attempts
        drain the transport first), so nothing is ticked in between.  The
        thread sleeps until datagrams arrive, until ``wake_at()`` (the
        calling connection's retransmission deadline), or until another
        thread delivers datagrams or frees an object here.
        """
        return self._waiter.block_until(
            predicate, _no_wakeup if wake_at is None else wake_at
        )

    def wake_waiters(self) -> None:
        """Make blocked calls look at their objects again (lock held)."""
        self._waiter.notify()

    # -- lifetime ---------------------------------------------------------

    def close(self, close_transport: bool) -> None:
        """Stop for good; optionally close the transport too.  Any thread."""
        self._routes.clear()
        self.unrouted = None
        self._waiter.close(close_transport)
