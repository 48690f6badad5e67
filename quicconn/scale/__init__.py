"""Scaling out: a server on every core of a machine, behind load balancers.

* :class:`QuicLbConfig` / :class:`QuicLbDecoder`: connection IDs in the
  format of the IETF QUIC-LB draft, which a load balancer can route by.

See docs/scaling.md.
"""

from __future__ import annotations

from .._core.quic_lb import QuicLbConfig, QuicLbDecoder

__all__ = ["QuicLbConfig", "QuicLbDecoder"]
