"""``handle_events(obj)`` / ``get_event_timeout(obj)`` for any object.

OpenSSL's SSL_handle_events(3) and SSL_get_event_timeout(3) accept every kind
of SSL object: on a QUIC object they run its event loop, on a DTLS object
they are DTLSv1_handle_timeout / DTLSv1_get_timeout, and "calling
SSL_handle_events() on any other kind of SSL object is a no-op.  This is
considered a success case", with an infinite timeout.  The methods of the
same names on quicconn's objects are the first two cases; these functions
add the third, so an event loop can treat every object alike.
"""

from __future__ import annotations

from typing import Protocol, cast

from .connection import Connection
from .domain import Domain
from .dtls.connection import DTLSConnection
from .dtls.listener import DTLSListener
from .listener import Listener
from .stream import Stream


class _HasEvents(Protocol):
    def handle_events(self) -> None: ...

    def get_event_timeout(self) -> float | None: ...


#: quicconn's QUIC and DTLS objects: the kinds with events of their own.
EVENT_OBJECT_TYPES: tuple[type, ...] = (
    Connection,
    Stream,
    Listener,
    Domain,
    DTLSConnection,
    DTLSListener,
)


def handle_events(obj: object) -> None:
    """Handle due events on ``obj`` (SSL_handle_events).

    A QUIC object ticks (timers, receive, send); a DTLS object runs
    DTLSv1_handle_timeout (retransmits an expired flight, nothing else);
    any other object: a successful no-op.  Never raises for network trouble.
    """
    if isinstance(obj, EVENT_OBJECT_TYPES):
        cast(_HasEvents, obj).handle_events()


def get_event_timeout(obj: object) -> float | None:
    """Seconds until ``handle_events(obj)`` is due (SSL_get_event_timeout).

    0.0 when due now; None (OpenSSL's ``is_infinite``) when no timer is
    armed, and always for objects that are neither QUIC nor DTLS.
    """
    if isinstance(obj, EVENT_OBJECT_TYPES):
        return cast(_HasEvents, obj).get_event_timeout()
    return None


__all__ = ["EVENT_OBJECT_TYPES", "get_event_timeout", "handle_events"]
