"""What kind of host name a client was given.

Shared by the QUIC cores and the DTLS objects, which both follow RFC 6066
section 3 (no literal address in a ClientHello's server_name) and check an
address against a certificate's IP addresses rather than its DNS names.
"""

from __future__ import annotations

import ipaddress


def is_ip_address(name: str | None) -> bool:
    """Whether ``name`` is a literal IPv4 or IPv6 address."""
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


__all__ = ["is_ip_address"]
