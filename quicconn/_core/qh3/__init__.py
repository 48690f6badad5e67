"""The qh3 backend: the only importer of qh3.

* :mod:`.backend` -- :class:`~.backend.Qh3Backend`, the ``BACKEND`` object
  :mod:`quicconn._core.registry` loads, and its capabilities;
* :mod:`.core` -- :class:`~.core.Qh3Core`, quicconn's own facade over qh3's
  Rust ``QuicConnectionCore`` and its ``QuicTlsBridge``, in parts:
  :mod:`.handshake` (making the core and the TLS bridge, TLS output into
  the core), :mod:`.streams` (stream bookkeeping and send accounting),
  :mod:`.closing` (close info from the core's events), :mod:`.packets`
  (datagrams sliced into packets, headers, qlog packet events),
  :mod:`.keepalive` (the keep-alive PING deadline);
* :mod:`.config` -- :class:`~quicconn._core.settings.CoreSettings` as qh3's
  TLS configuration, and the bridge with quicconn's transport parameters;
* :mod:`.gate` -- the server gate (Version Negotiation, Retry, stateless
  reset, Initial CONNECTION_CLOSE);
* :mod:`.tickets` -- session tickets as bytes and back;
* :mod:`.h3` -- an HTTP/3 codec over qh3's ``H3Connection``.

qh3's ``_hazmat`` module and its TLS bridge are outside qh3's semver
promise: ``pyproject.toml`` pins the qh3 versions this backend was tested
with, and a test checks the installed one is among them.
"""
