"""``DTLSContext``: the ``SSL_CTX`` of quicconn's DTLS objects (DTLS 1.2).

OpenSSL picks the protocol with the method given to ``SSL_CTX_new``
(``DTLS_client_method()`` versus ``OSSL_QUIC_client_method()``); quicconn
picks it with the context class, so a DTLS context can never reach a QUIC
connection by mistake.  The certificate and verification API is the QUIC
:class:`~quicconn.Context`'s: same names, same defaults (clients verify the
peer and its host name; nothing is trusted until CA certificates are loaded).

The settings themselves are :class:`~quicconn._objects.dtls.settings.
DTLSSettings`; this class adds the factory of listeners, and sits above the
listener and connection modules, which only need the settings.  pyOpenSSL is
imported only by the modules of this package.
"""

from __future__ import annotations

from typing import Any

from .listener import DTLSListener, make_listener
from .settings import DTLSSettings

__all__ = ["DTLSContext"]


class DTLSContext(DTLSSettings):
    """Settings from which DTLS connections and listeners are made.

    Mirrors ``SSL_CTX_new(DTLS_client_method())`` (``DTLSContext(CLIENT)``)
    and ``SSL_CTX_new(DTLS_server_method())`` (``DTLSContext(SERVER)``),
    limited to DTLS 1.2.  Like the QUIC :class:`~quicconn.Context`, a client
    context verifies the server's certificate and host name by default
    (``VERIFY_PEER``) but trusts no CA until :meth:`load_verify_locations` or
    :meth:`load_default_verify_paths` is called; a server context needs
    :meth:`load_cert_chain`.
    """

    def new_listener(self, where: Any, flags: int = 0) -> DTLSListener:
        """Make a DTLS listener on a UDP socket (DTLSv1_listen, server side).

        ``where`` is a bound UDP socket (not closed by the listener), a
        ``(host, port)`` to bind (the listener owns that socket), or a
        datagram transport such as ``DatagramPair.server``.  Cookie exchange
        (HelloVerifyRequest) is on; ``LISTENER_FLAG_NO_VALIDATE`` turns it off.
        """
        return make_listener(self, where, flags)
