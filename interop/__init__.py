"""Interop tooling for quicconn: independent peers and a network simulator.

* :mod:`interop.peers` installs the independent QUIC peers the tests and the
  local interop runner talk to (ngtcp2, OpenSSL 3.5 ``s_client -quic``,
  aioquic's example programs) into the project-local ``.peers/`` directory,
  and tells where they are (``python -m interop.peers install|check|paths``).
* :mod:`interop.netsim` is a userspace UDP relay that reproduces the QUIC
  interop runner's ns-3 links (delay, rate, drop-tail queue, loss, corruption,
  blackholes, rebinding, MTU) on loopback (``python -m interop.netsim``).

Nothing here is imported by :mod:`quicconn`; this package sits above it.
"""
