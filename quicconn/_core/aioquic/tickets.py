"""TLS session tickets (aioquic's ``SessionTicket``) as bytes and back.

The format is :mod:`quicconn._core.tickets`' (JSON, never pickle).
"""

from __future__ import annotations

from aioquic.tls import CipherSuite, SessionTicket

from ..tickets import decode_ticket, encode_ticket


def ticket_label(ticket: SessionTicket) -> bytes:
    """The opaque label a client presents to resume ``ticket``."""
    return bytes(ticket.ticket)


def encode_session_ticket(ticket: SessionTicket) -> bytes:
    """Serialise a TLS session ticket (no pickle: a file must not run code)."""
    return encode_ticket(ticket)


def decode_session_ticket(data: bytes) -> SessionTicket:
    """The inverse of :func:`encode_session_ticket`; ValueError if malformed."""
    fields = decode_ticket(data)
    try:
        suite = CipherSuite(fields.pop("cipher_suite"))
    except ValueError as exc:
        raise ValueError(f"not a quicconn session: {exc}") from exc
    return SessionTicket(cipher_suite=suite, **fields)


__all__ = ["decode_session_ticket", "encode_session_ticket", "ticket_label"]
