"""Scaling out: a server on every core of a machine, and behind load balancers.

* :class:`WorkerGroup`: N worker processes on one UDP address, each with
  its own SO_REUSEPORT socket; a classic BPF program steers every datagram
  to the worker whose index the connection ID carries, so a connection's
  packets reach its worker even after the client's address changed.
  Dead workers are replaced; ``stop()`` closes every connection cleanly.
* :class:`Worker`: what each worker's target function is given.
* :class:`QuicLbConfig` / :class:`QuicLbDecoder`: connection IDs in the
  format of the IETF QUIC-LB draft (plaintext algorithm), which a load
  balancer routes by; the decoder is what such a load balancer does.
* :class:`ServerKeys`: the keys servers of a pool share (Retry tokens,
  stateless resets, session tickets).

A quicconn extension (OpenSSL has none of this).  See docs/scaling.md.
"""

from __future__ import annotations

from .._core.quic_lb import QuicLbConfig, QuicLbDecoder
from ._group import WorkerGroup
from ._keys import ServerKeys
from ._worker import SHUTDOWN_REASON, Worker, WorkerReport

__all__ = [
    "SHUTDOWN_REASON",
    "QuicLbConfig",
    "QuicLbDecoder",
    "ServerKeys",
    "Worker",
    "WorkerGroup",
    "WorkerReport",
]
