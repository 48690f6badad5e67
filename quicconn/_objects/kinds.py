"""What kind of SSL object an object is: ``SSL_is_quic``, ``SSL_is_connection``,
``SSL_is_listener``, ``SSL_is_domain``, written once for connections,
streams, listeners and domains."""

from __future__ import annotations

from typing import ClassVar


class QuicObjectKind:
    """Mixin: the kind predicates of a QUIC SSL object."""

    __slots__ = ()

    _IS_CONNECTION: ClassVar[bool] = False
    _IS_LISTENER: ClassVar[bool] = False
    _IS_DOMAIN: ClassVar[bool] = False

    def is_quic(self) -> bool:
        """Always True: a QUIC object (SSL_is_quic)."""
        return True

    def is_connection(self) -> bool:
        """True for a connection, False for a stream or listener (SSL_is_connection)."""
        return self._IS_CONNECTION

    def is_listener(self) -> bool:
        """True for a listener (SSL_is_listener)."""
        return self._IS_LISTENER

    def is_domain(self) -> bool:
        """True for a QUIC domain (SSL_is_domain)."""
        return self._IS_DOMAIN


__all__ = ["QuicObjectKind"]
