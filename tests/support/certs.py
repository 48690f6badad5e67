"""Test certificates: see quicconn._certs (shared with the demo command)."""

from quicconn._certs import CertFiles, make_pki

__all__ = ["CertFiles", "make_pki"]
