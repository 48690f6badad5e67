"""Session tickets as bytes and back, for every backend.

Both QUIC libraries quicconn runs on describe a TLS 1.3 session ticket with
the same fields (aioquic's ``SessionTicket``, and qh3's, which descends from
it); each backend turns its own class into those fields and back.  The
format is a small JSON document, never pickle: loading a saved session must
not be able to run code.

A server normally remembers the tickets it issued and finds them again by
the label the client presents.  Servers that must resume each other's
sessions (the workers of a group, the hosts behind a load balancer) share a
*ticket key* instead: :class:`TicketSealer` seals what a server needs to
resume (cipher suite, resumption secret, validity, 0-RTT allowance) into
the label itself, and :func:`replace_ticket_label` puts that label into the
NewSessionTicket message the TLS layer wrote, before it is sent.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


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


#: TLS HandshakeType new_session_ticket (RFC 8446, section 4).
_NEW_SESSION_TICKET = 4
_SEALED_VERSION = 1
_KEY_ID = 4
_NONCE = 12
#: version, flags, cipher suite, not before / not after (ms), age_add,
#: max_early_data_size
_SEALED_HEAD = struct.Struct("!BBHqqII")
_HAS_EARLY_DATA = 0x1
#: The ticket's times are naive (UTC) datetimes: qh3's are, aioquic's not.
_NAIVE_TIMES = 0x2


def _timestamp_ms(moment: datetime.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def _moment(ms: int, naive: bool) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return (moment.replace(tzinfo=None) if naive else moment).isoformat()


class TicketSealer:
    """Seals what a server needs to resume a session into its ticket label.

    Any server holding the same key (16, 24 or 32 bytes: AES-GCM) opens the
    labels any other one issued.  A label is a key identifier, a nonce and
    the sealed fields; about 110 bytes, where a remembered ticket's label
    is 64.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        digest = hashlib.sha256(b"quicconn ticket key id" + key).digest()
        self._key_id = digest[:_KEY_ID]

    def seal(self, ticket: Any) -> bytes:
        """The label that resumes ``ticket`` (a backend's SessionTicket)."""
        early = ticket.max_early_data_size
        name = (ticket.server_name or "").encode()
        secret = bytes(ticket.resumption_secret)
        flags = 0 if early is None else _HAS_EARLY_DATA
        if ticket.not_valid_before.tzinfo is None:
            flags |= _NAIVE_TIMES
        plain = (
            _SEALED_HEAD.pack(
                _SEALED_VERSION,
                flags,
                int(ticket.cipher_suite),
                _timestamp_ms(ticket.not_valid_before),
                _timestamp_ms(ticket.not_valid_after),
                ticket.age_add,
                early or 0,
            )
            + bytes([len(secret)])
            + secret
            + struct.pack("!H", len(name))
            + name
        )
        nonce = os.urandom(_NONCE)
        return self._key_id + nonce + self._aead.encrypt(nonce, plain, self._key_id)

    def open(self, label: bytes) -> bytes | None:
        """The session (:func:`encode_ticket`'s format) a label seals, or
        None if another key sealed it or it is not a sealed label."""
        if len(label) <= _KEY_ID + _NONCE or label[:_KEY_ID] != self._key_id:
            return None
        nonce = label[_KEY_ID : _KEY_ID + _NONCE]
        try:
            plain = self._aead.decrypt(nonce, label[_KEY_ID + _NONCE :], self._key_id)
            version, flags, suite, before, after, age_add, early = (
                _SEALED_HEAD.unpack_from(plain)
            )
            at = _SEALED_HEAD.size
            secret = plain[at + 1 : at + 1 + plain[at]]
            at += 1 + plain[at]
            (name_length,) = struct.unpack_from("!H", plain, at)
            name = plain[at + 2 : at + 2 + name_length].decode()
        except (InvalidTag, struct.error, IndexError, UnicodeDecodeError):
            return None
        if version != _SEALED_VERSION:
            return None
        fields = {
            "age_add": age_add,
            "cipher_suite": suite,
            "not_valid_after": _moment(after, bool(flags & _NAIVE_TIMES)),
            "not_valid_before": _moment(before, bool(flags & _NAIVE_TIMES)),
            "resumption_secret": secret.hex(),
            "server_name": name,
            "ticket": label.hex(),
            "max_early_data_size": early if flags & _HAS_EARLY_DATA else None,
            "other_extensions": [],
        }
        return json.dumps({"quicconn-session": 1, **fields}).encode()


def replace_ticket_label(message: bytes, label: bytes) -> bytes:
    """A TLS 1.3 NewSessionTicket message with its ticket field replaced.

    ``message`` is the whole handshake message (type, 24-bit length,
    lifetime, age_add, nonce, ticket, extensions); ValueError if it is not
    one.
    """
    if len(message) < 4 or message[0] != _NEW_SESSION_TICKET:
        raise ValueError("not a NewSessionTicket message")
    body = message[4:]
    if int.from_bytes(message[1:4], "big") != len(body) or len(body) < 9:
        raise ValueError("truncated NewSessionTicket message")
    nonce_end = 9 + body[8]
    ticket_length = int.from_bytes(body[nonce_end : nonce_end + 2], "big")
    ticket_end = nonce_end + 2 + ticket_length
    if ticket_end > len(body):
        raise ValueError("truncated NewSessionTicket message")
    new_body = (
        body[:nonce_end] + len(label).to_bytes(2, "big") + label + body[ticket_end:]
    )
    return bytes([_NEW_SESSION_TICKET]) + len(new_body).to_bytes(3, "big") + new_body


__all__ = ["TicketSealer", "decode_ticket", "encode_ticket", "replace_ticket_label"]
