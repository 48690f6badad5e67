"""``Domain``: OpenSSL 3.5's QUIC domain object (``SSL_new_domain``).

A domain is a group of listeners (and the connections they accept or make)
that share one concurrency model, chosen once with the domain flags:
single-threaded, contentive (multi-threaded, the default) or
thread-assisted, and whether blocking calls are supported.  See
openssl-quic-concurrency(7) and docs/event-loops.md.

In OpenSSL every object lives in a domain: an explicit one made by
:meth:`Context.new_domain` or an implicit one that ``SSL_new`` and
``SSL_new_listener`` make from the context's flags.  Here too: a
connection or listener made directly takes its context's
:meth:`~quicconn.Context.get_domain_flags` (``get0_domain()`` is then None,
as in OpenSSL).

A domain supports what OpenSSL's does: making listeners
(:meth:`Domain.new_listener_from`), event handling over all of them
(:meth:`handle_events`, :meth:`get_event_timeout`), ``poll()`` (a quicconn
extension: OpenSSL 3.5 answers "poll request not supported"), and
freeing.  quicconn's reactors are per socket, so a thread-assisted domain
has one assist thread per socket (OpenSSL: one per domain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._constants import POLL_EVENT_EL, POLL_EVENT_F, POLL_EVENT_IC
from .._quic.reactor import Reactor
from . import domain_flags
from .context_settings import ContextSettings
from .kinds import QuicObjectKind
from .listener import Listener, make_listener
from .surface import events_reactor


class Domain(QuicObjectKind):
    """A QUIC domain (``SSL_new_domain``); made by :meth:`Context.new_domain`."""

    _IS_DOMAIN = True

    def __init__(self, ctx: ContextSettings, flags: int) -> None:
        self._ctx = ctx
        self._flags = domain_flags.for_new_domain(ctx.get_domain_flags(), flags)
        self._listeners: list[Listener] = []
        self._freed = False

    # -- OpenSSL API ------------------------------------------------------

    def get0_domain(self) -> Domain:
        """The domain itself (SSL_get0_domain)."""
        return self

    def get_domain_flags(self) -> int:
        """The domain flags, fixed at creation (SSL_get_domain_flags)."""
        return self._flags

    def new_listener_from(self, where: Any, flags: int = 0) -> Listener:
        """Make a listener in this domain (SSL_new_listener_from + SSL_set_fd).

        ``where`` and ``flags`` as :meth:`Context.new_listener`.  The
        listener (and every connection it accepts) has this domain's
        concurrency model: in a thread-assisted domain an assist thread
        serves its socket from the start.
        """
        if self._freed:
            raise ValueError("the domain was freed (SSL_free)")
        listener = make_listener(self._ctx, where, flags, domain=self)
        self._listeners.append(listener)
        return listener

    def handle_events(self) -> None:
        """Handle due events on every socket of the domain (SSL_handle_events)."""
        for reactor in self.reactors():
            with reactor.lock:
                reactor.tick()

    def get_event_timeout(self) -> float | None:
        """Seconds until :meth:`handle_events` is due for any of the domain's
        sockets; 0.0 if now, None if never (SSL_get_event_timeout)."""
        timeouts = []
        for reactor in self.reactors():
            with reactor.lock:
                timeout = reactor.timeout()
            if timeout is not None:
                timeouts.append(timeout)
        return min(timeouts) if timeouts else None

    def get_blocking_mode(self) -> bool:
        """Whether objects of this domain start in blocking mode."""
        return domain_flags.blocking_by_default(self._flags)

    def free(self) -> None:
        """Release the domain (SSL_free).  Its listeners, and the connections
        they accepted, hold it until they are freed, as OpenSSL's reference
        counts do; no listener can be made in it any more."""
        self._freed = True

    def __enter__(self) -> Domain:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        return (
            f"<quicconn.Domain flags=0x{self._flags:x} "
            f"listeners={len(self.reactors())}>"
        )

    # -- for poll() and the event loops ---------------------------------------

    def reactors(self) -> list[Reactor]:
        """The sockets (reactors) of the domain's listeners still open."""
        found = []
        for listener in self._listeners:
            reactor = events_reactor(listener)
            if reactor is not None and not reactor.closed:
                found.append(reactor)
        return found


def poll_source(domain: Domain) -> tuple[list[Reactor], Callable[[int], int]]:
    """The reactors a poll() item on ``domain`` waits on, and its revents.

    F once freed; EL when a listener's socket failed; IC when a listener has
    connections waiting to be accepted (a quicconn extension).
    """

    def revents(events: int) -> int:
        if domain._freed:
            return POLL_EVENT_F
        found = 0
        for listener in domain._listeners:
            reactor = events_reactor(listener)
            if reactor is None:
                continue
            if reactor.transport.fatal_error is not None:
                found |= POLL_EVENT_EL
            with reactor.lock:
                if listener.get_accept_connection_queue_len():
                    found |= POLL_EVENT_IC
        return found & events

    return domain.reactors(), revents


def new_domain(ctx: ContextSettings, flags: int) -> Domain:
    """``SSL_new_domain(ctx, flags)``."""
    return Domain(ctx, flags)


__all__ = ["Domain", "new_domain", "poll_source"]
