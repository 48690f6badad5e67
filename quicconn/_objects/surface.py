"""The event surface every reactor-driven QUIC object shares.

OpenSSL gives connections and listeners alike ``SSL_handle_events``,
``SSL_get_event_timeout``, ``SSL_net_write_desired`` and the poll
descriptors; here they are written once, over the object's reactor.
``net_read_desired`` too: from the first tick of the object's socket on.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._io.transport import Address
from .._quic.reactor import Reactor
from .call import api
from .context_settings import ContextSettings

if TYPE_CHECKING:
    from .._types import Buffer


class EventSurface:
    """Mixin: the event methods of an object driven by one reactor."""

    def _events_reactor(self) -> Reactor | None:
        """The object's reactor; None before a transport is attached."""
        raise NotImplementedError

    def _require_events_reactor(self) -> Reactor:
        """The object's reactor, or ValueError saying why there is none."""
        raise NotImplementedError

    _last_error: int
    _ctx: ContextSettings
    #: The explicit QUIC domain a listener was made in (SSL_new_listener_from).
    _domain: Any = None

    def _call_lock(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    def get0_listener(self) -> Any:
        raise NotImplementedError

    # -- QUIC domains ---------------------------------------------------------

    def get0_domain(self) -> Any:
        """The explicit QUIC domain this object belongs to, or None
        (SSL_get0_domain): a listener made by ``Domain.new_listener_from``
        and the connections it accepted have one; objects in the implicit
        domain of their context have none."""
        listener = self.get0_listener()
        return None if listener is None else listener._domain

    def get_domain_flags(self) -> int:
        """The domain flags (concurrency model) of this object's domain,
        explicit or implicit (SSL_get_domain_flags)."""
        domain = self.get0_domain()
        if domain is not None:
            flags: int = domain.get_domain_flags()
            return flags
        return self._ctx.get_domain_flags()

    @api
    def handle_events(self) -> None:
        """Perform one tick: timers, receive, send (SSL_handle_events).

        Never blocks and never raises for network trouble; failures surface
        on the next I/O call.  A no-op before a transport is set.
        """
        reactor = self._events_reactor()
        if reactor is not None:
            reactor.tick()

    @api
    def get_event_timeout(self) -> float | None:
        """Seconds until :meth:`handle_events` is due; 0.0 if now, None if never.

        Mirrors SSL_get_event_timeout (``None`` is OpenSSL's
        ``is_infinite``).  It covers every connection on the same socket.
        As in OpenSSL 3.5, a listener, or a client connection whose
        handshake has not started, is due at once (0.0) until its socket's
        first event handling.
        """
        reactor = self._events_reactor()
        if reactor is None:
            return None
        if not reactor.ticked and self._due_before_first_tick():
            return 0.0
        return reactor.timeout()

    def _inject_default_peer(self) -> Address | None:
        """Where an injected datagram comes from when no ``peer`` is given."""
        return None

    @api
    def inject_net_dgram(
        self, data: Buffer, peer: Address | None = None, local: Address | None = None
    ) -> None:
        """Process ``data`` as if it had been received from ``peer``
        (SSL_inject_net_dgram).

        The datagram is queued and handled by the next event handling
        (:meth:`handle_events`, or the implicit tick of the next call),
        before what the socket has.  ``peer`` defaults to a connection's
        peer address; a listener needs it.  ``local`` is accepted for
        OpenSSL's signature and ignored (one socket, one local address).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"inject_net_dgram() takes bytes, not {type(data).__name__}"
            )
        if len(data) == 0:
            raise ValueError("inject_net_dgram(): an empty datagram")
        addr = peer if peer is not None else self._inject_default_peer()
        if addr is None:
            raise ValueError("inject_net_dgram() needs the peer address it came from")
        self._require_events_reactor().inject(bytes(data), addr)

    def _io_started(self) -> bool:
        """The object started network I/O of its own (a handshake)."""
        return False

    def _due_before_first_tick(self) -> bool:
        """Whether, before its reactor's first tick, the object is due at once."""
        return True

    def net_read_desired(self) -> bool:
        """Whether the object wants to read the network (SSL_net_read_desired).

        As in OpenSSL 3.5: from the first event handling on its socket (or
        a connection's handshake start) on, and still after a connection
        terminated; False before.
        """
        reactor = self._events_reactor()
        if reactor is None:
            return False
        return reactor.ticked or self._io_started()

    def net_write_desired(self) -> bool:
        """Whether datagrams wait for the socket to drain (SSL_net_write_desired)."""
        reactor = self._events_reactor()
        return reactor is not None and reactor.net_write_desired()

    def get_rpoll_descriptor(self) -> int:
        """The descriptor to poll for readability (SSL_get_rpoll_descriptor)."""
        return self._require_events_reactor().transport.fileno()

    def get_wpoll_descriptor(self) -> int:
        """The descriptor to poll for writability (SSL_get_wpoll_descriptor)."""
        return self._require_events_reactor().transport.fileno()

    def fileno(self) -> int:
        """The socket's descriptor (SSL_get_fd), for selectors and asyncio."""
        return self._require_events_reactor().transport.fileno()


def events_reactor(obj: EventSurface) -> Reactor | None:
    """The reactor under a connection or listener (None before a transport
    is attached): what an event-loop driver or an assist thread drives."""
    return obj._events_reactor()


__all__ = ["EventSurface", "events_reactor"]
