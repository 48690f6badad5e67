"""``Context``: the ``SSL_CTX`` of quicconn — settings, and the factories of
objects that need more than settings (``SSL_new_listener``)."""

from __future__ import annotations

from typing import Any

from .context_settings import ContextSettings
from .domain import Domain
from .listener import Listener, make_listener


class Context(ContextSettings):
    """Settings from which connections and listeners are made (``SSL_CTX_new``).

    ``Context(quicconn.CLIENT)`` verifies the server's certificate and host
    name by default (``VERIFY_PEER``) but, like OpenSSL, trusts no CA until
    :meth:`load_default_verify_paths` or :meth:`load_verify_locations` is
    called.  ``Context(quicconn.SERVER)`` needs :meth:`load_cert_chain`.
    Connections come from ``Connection(ctx)`` (``SSL_new``), listeners from
    :meth:`new_listener`.
    """

    def new_listener(self, where: Any, flags: int = 0) -> Listener:
        """Make a QUIC listener (SSL_new_listener + SSL_set_fd).

        ``where`` is a bound UDP socket (not closed by the listener), a
        ``(host, port)`` to bind (the listener owns that socket), or a
        datagram transport such as ``DatagramPair.server``.  Flags:
        ``LISTENER_FLAG_NO_VALIDATE`` turns off Retry address validation,
        ``LISTENER_FLAG_NO_ACCEPT`` makes a listener only for
        ``new_from_listener()`` clients.
        """
        return make_listener(self, where, flags)

    def new_domain(self, flags: int = 0) -> Domain:
        """Make a QUIC domain (SSL_new_domain).

        ``flags`` are ``DOMAIN_FLAG_*``: if they name a concurrency model
        (SINGLE_THREAD, MULTI_THREAD, THREAD_ASSISTED) they are the
        domain's flags, otherwise they are added to the context's
        (:meth:`get_domain_flags`).  Conflicting flags raise ValueError.
        Listeners are made in it with :meth:`Domain.new_listener_from`.
        """
        return Domain(self, flags)


__all__ = ["Context"]
