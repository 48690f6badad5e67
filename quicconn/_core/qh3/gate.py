"""The server gate on qh3: stateless answers to datagrams no connection claims.

Version Negotiation for unknown versions, Retry address validation (on by
default), stateless resets for short headers to unknown connection IDs, an
Initial CONNECTION_CLOSE for refusals and bad tokens; otherwise "accept".
Nothing here keeps per-client state.  An Initial that would earn a Retry
is decrypted first (junk gets none), which also tells whether it starts the
ClientHello: one with a post-quantum key share (1.4 kB) spans two Initials,
and a client gets one Retry, not two.  An Initial accepted as a new
connection is not: the connection's core decrypts it anyway (and one that
does not decrypt is freed at once); the listener asks :meth:`prove` only
when its tables are full, so junk never costs a real client its place and
a refused client gets one refusal.
Headers are read with qh3's Rust parser; Retry and Version Negotiation
packets are qh3's encoders; tokens (:mod:`quicconn._core.tokens`), Initial
decryption and the Initial CONNECTION_CLOSE (:mod:`quicconn._core.initial`)
are quicconn's own.
"""

from __future__ import annotations

import os

from qh3._hazmat import pull_quic_header
from qh3.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
)

from ..initial import initial_close, prove_initial, starts_client_hello
from ..interface import Address, GateAction, GateDecision, GateReply
from ..settings import CoreSettings
from ..tokens import RetryTokens
from ..wire import (
    long_header_cids,
    long_header_version,
    stateless_reset,
    stateless_reset_size,
    stateless_reset_token,
)

#: The smallest datagram that may carry a client's Initial (RFC 9000 14.1).
SMALLEST_INITIAL = 1200
_INITIAL = int(QuicPacketType.INITIAL)
_VERSION_NEGOTIATION = int(QuicPacketType.VERSION_NEGOTIATION)
#: QUIC transport error codes (RFC 9000 section 20.1).
_CONNECTION_REFUSED = 0x2
_INVALID_TOKEN = 0xB


class Qh3Gate:
    """A :class:`~quicconn._core.interface.ServerGate` on qh3's packet code."""

    #: Stateless resets sent per second at most (they are unauthenticated).
    RESET_RATE_LIMIT = 100

    def __init__(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> None:
        self._versions = [int(v) for v in settings.supported_versions]
        self._cid_length = settings.connection_id_length
        self._tokens = (
            RetryTokens(settings.retry_token_key) if validate_addresses else None
        )
        self._reset_key = reset_key
        self._reset_window = 0.0
        self._resets_in_window = 0

    @property
    def validates_addresses(self) -> bool:
        return self._tokens is not None

    def inspect(self, data: bytes, addr: Address, now: float) -> GateDecision:
        version = long_header_version(data) if len(data) >= 7 else None
        if version is not None and version != 0 and version not in self._versions:
            return self._negotiate_version(data)
        try:
            header = pull_quic_header(data, 0, self._cid_length)
        except ValueError:
            return GateDecision(GateAction.DROP, "unparseable header")
        version, packet_type, _, dcid, scid, token = header[:6]
        if version is None:
            return self._reset_for(data, bytes(dcid), now)
        if packet_type == _VERSION_NEGOTIATION:
            return GateDecision(GateAction.DROP, "version negotiation to a server")
        if packet_type != _INITIAL:
            return GateDecision(
                GateAction.DROP, "not an Initial for an unknown connection"
            )
        if len(data) < SMALLEST_INITIAL:
            return GateDecision(
                GateAction.DROP, "Initial in a datagram under 1200 bytes"
            )
        dcid, scid = bytes(dcid), bytes(scid)
        tokens = self._tokens
        if tokens is None:
            return GateDecision(
                GateAction.ACCEPT,
                "new connection",
                version=version,
                client_dcid=dcid,
                client_scid=scid,
                original_destination_cid=dcid,
            )
        if not token:
            starts = starts_client_hello(data)
            if starts is None:
                return GateDecision(GateAction.DROP, "undecryptable Initial")
            if not starts:
                # The rest of a ClientHello spanning two Initials: the Retry
                # for its first makes the client send both again.
                return GateDecision(GateAction.DROP, "Initial continuing a ClientHello")
            retry_scid = os.urandom(self._cid_length)
            reply = encode_quic_retry(
                version=version,
                source_cid=retry_scid,
                destination_cid=scid,
                original_destination_cid=dcid,
                retry_token=tokens.issue(addr, dcid, retry_scid, now),
            )
            return GateDecision(
                GateAction.REPLY, "retry", reply=reply, reply_kind=GateReply.RETRY
            )
        try:
            original_dcid = tokens.validate(addr, dcid, bytes(token), now)
        except ValueError as exc:
            reply = initial_close(version, dcid, scid, _INVALID_TOKEN, str(exc))
            return GateDecision(
                GateAction.REPLY,
                f"invalid token: {exc}",
                reply=reply,
                reply_kind=GateReply.INVALID_TOKEN,
            )
        return GateDecision(
            GateAction.ACCEPT,
            "new connection, address validated",
            version=version,
            client_dcid=dcid,
            client_scid=scid,
            original_destination_cid=original_dcid,
            retry_source_cid=dcid,
        )

    def _negotiate_version(self, data: bytes) -> GateDecision:
        """Answer a long header of an unknown version (RFC 9000 section 6.1)."""
        if len(data) < SMALLEST_INITIAL:
            # Only datagrams at least as large as the smallest Initial get an
            # answer, so a server cannot be used as an amplifier.
            return GateDecision(GateAction.DROP, "unknown version, short datagram")
        cids = long_header_cids(data)
        if cids is None:
            return GateDecision(GateAction.DROP, "unparseable long header")
        client_dcid, client_scid = cids
        reply = encode_quic_version_negotiation(
            source_cid=client_dcid,
            destination_cid=client_scid,
            supported_versions=self._versions,
        )
        return GateDecision(
            GateAction.REPLY,
            "version negotiation",
            reply=reply,
            reply_kind=GateReply.VERSION_NEGOTIATION,
        )

    def prove(self, decision: GateDecision, data: bytes) -> GateDecision:
        return prove_initial(decision, data)

    def refuse(self, decision: GateDecision, reason: str) -> bytes:
        """An Initial CONNECTION_CLOSE(CONNECTION_REFUSED) for ``decision``."""
        return initial_close(
            decision.version,
            decision.client_dcid,
            decision.client_scid,
            _CONNECTION_REFUSED,
            reason,
        )

    def _reset_for(self, data: bytes, dcid: bytes, now: float) -> GateDecision:
        size = stateless_reset_size(len(data))
        if size is None:
            return GateDecision(GateAction.DROP, "short packet, too small to reset")
        if now - self._reset_window >= 1.0:
            self._reset_window = now
            self._resets_in_window = 0
        if self._resets_in_window >= self.RESET_RATE_LIMIT:
            return GateDecision(GateAction.DROP, "stateless reset rate limit")
        self._resets_in_window += 1
        token = stateless_reset_token(self._reset_key, dcid)
        return GateDecision(
            GateAction.REPLY,
            "stateless reset",
            reply=stateless_reset(size, token),
            reply_kind=GateReply.STATELESS_RESET,
        )


__all__ = ["Qh3Gate"]
