"""The aioquic backend: the only importer of aioquic.

* :mod:`.backend` -- :class:`~.backend.AioquicBackend`, the ``BACKEND``
  object :mod:`quicconn._core.registry` loads, and its capabilities;
* :mod:`.core` -- :class:`~.core.AioquicCore`, the
  :class:`~quicconn._core.interface.Core` of one connection;
* :mod:`.connection` -- ``QuicConnection`` with quicconn's policies, the
  only module that reads aioquic's private names (listed there);
* :mod:`.config` -- :class:`~quicconn._core.settings.CoreSettings` as a
  ``QuicConfiguration``, qlog loggers;
* :mod:`.gate` -- the server gate (Version Negotiation, Retry, stateless
  reset, Initial CONNECTION_CLOSE);
* :mod:`.keys` -- MODE_ASYNC private keys whose signatures can pause a job;
* :mod:`.tickets` -- session tickets as bytes and back;
* :mod:`.h3` -- an HTTP/3 codec over aioquic's ``H3Connection``.
"""
