"""Session tickets as bytes and back, for every backend.

Both QUIC libraries quicconn runs on describe a TLS 1.3 session ticket with
the same fields (aioquic's ``SessionTicket``, and qh3's, which descends from
it); each backend turns its own class into those fields and back.  The
format is a small JSON document, never pickle: loading a saved session must
not be able to run code.
"""

from __future__ import annotations

import datetime
import json
from typing import Any


def encode_ticket(ticket: Any) -> bytes:
    """Serialise a ticket object (no pickle: a file must not run code)."""
    fields = {
        "age_add": ticket.age_add,
        "cipher_suite": int(ticket.cipher_suite),
        "not_valid_after": ticket.not_valid_after.isoformat(),
        "not_valid_before": ticket.not_valid_before.isoformat(),
        "resumption_secret": ticket.resumption_secret.hex(),
        "server_name": ticket.server_name,
        "ticket": ticket.ticket.hex(),
        "max_early_data_size": ticket.max_early_data_size,
        "other_extensions": [[t, v.hex()] for t, v in ticket.other_extensions],
    }
    return json.dumps({"quicconn-session": 1, **fields}).encode()


def decode_ticket(data: bytes) -> dict[str, Any]:
    """The inverse of :func:`encode_ticket`: keyword arguments for a
    ticket class (``cipher_suite`` as an int); ValueError if malformed."""
    try:
        fields = json.loads(data)
        if fields.pop("quicconn-session") != 1:
            raise ValueError("unknown session format version")
        return {
            "age_add": int(fields["age_add"]),
            "cipher_suite": int(fields["cipher_suite"]),
            "not_valid_after": datetime.datetime.fromisoformat(
                fields["not_valid_after"]
            ),
            "not_valid_before": datetime.datetime.fromisoformat(
                fields["not_valid_before"]
            ),
            "resumption_secret": bytes.fromhex(fields["resumption_secret"]),
            "server_name": str(fields["server_name"]),
            "ticket": bytes.fromhex(fields["ticket"]),
            "max_early_data_size": fields["max_early_data_size"],
            "other_extensions": [
                (int(t), bytes.fromhex(v)) for t, v in fields["other_extensions"]
            ],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a quicconn session: {exc}") from exc


__all__ = ["decode_ticket", "encode_ticket"]
