"""``Session``: a resumable TLS session (OpenSSL's ``SSL_SESSION``)."""

from __future__ import annotations

from typing import Any

from .._core import registry
from .._core.interface import CoreBackend


class Session:
    """A session ticket from a server, for resumption and 0-RTT.

    Get one with ``conn.get1_session()`` after a handshake, give it to a new
    connection with ``conn.set_session()`` before connecting.  ``to_bytes()``
    / ``Session.from_bytes()`` mirror i2d_SSL_SESSION / d2i_SSL_SESSION (a
    JSON document; nothing in it is executed when loaded).
    """

    __slots__ = ("_backend", "_ticket")

    def __init__(self, ticket: Any, backend: CoreBackend) -> None:
        self._ticket = ticket
        self._backend = backend

    @property
    def ticket(self) -> Any:
        """The core's ticket object (for the core that made it)."""
        return self._ticket

    def to_bytes(self) -> bytes:
        """Serialise the session (i2d_SSL_SESSION)."""
        return self._backend.encode_session(self._ticket)

    @classmethod
    def from_bytes(cls, data: bytes, core: str | None = None) -> Session:
        """Load a serialised session (d2i_SSL_SESSION); ValueError if malformed.

        ``core`` names the QUIC core it is for (default: as ``Context``).
        """
        backend = registry.resolve(core)
        return cls(backend.decode_session(data), backend)

    def is_resumable(self) -> bool:
        """Whether the ticket is still valid (SSL_SESSION_is_resumable)."""
        return bool(self._ticket.is_valid)

    def get_max_early_data(self) -> int:
        """0-RTT bytes the server allows, 0 if none (SSL_SESSION_get_max_early_data)."""
        return int(self._ticket.max_early_data_size or 0)

    @property
    def server_name(self) -> str:
        """The server name the session was issued for."""
        return str(self._ticket.server_name)

    def get_core_name(self) -> str:
        """The QUIC core whose ticket this is (a quicconn extension).

        A session resumes on either core: it is converted when set on a
        connection running on the other one.
        """
        return self._backend.name

    def __repr__(self) -> str:
        return (
            f"<quicconn.Session server_name={self.server_name!r} "
            f"early_data={self.get_max_early_data()}>"
        )


def ticket_for(session: Session, backend: CoreBackend) -> Any:
    """The session's ticket as ``backend``'s core holds one.

    Both cores describe a TLS ticket with the same fields and serialise it
    the same way, so one made on the other core is converted through that
    form.
    """
    if session._backend is backend:
        return session._ticket
    return backend.decode_session(session._backend.encode_session(session._ticket))


__all__ = [
    "Session",
    "ticket_for",
]
