"""The server gate: stateless answers to datagrams no connection claims.

Version Negotiation for unknown versions, Retry address validation (on by
default), stateless resets for short headers to unknown connection IDs, an
Initial CONNECTION_CLOSE for refusals and bad tokens; otherwise "accept".
Nothing here keeps per-client state.
"""

from __future__ import annotations

import os

from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

from ..initial import prove_initial
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


class AioquicGate:
    """A :class:`~quicconn._core.interface.ServerGate` on aioquic's packet code."""

    #: Stateless resets sent per second at most (they are unauthenticated).
    RESET_RATE_LIMIT = 100

    def __init__(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> None:
        self._versions = [int(v) for v in settings.supported_versions]
        self._cid_length = settings.connection_id_length
        self._retry = (
            RetryTokens(settings.retry_token_key) if validate_addresses else None
        )
        self._reset_key = reset_key
        self._reset_window = 0.0
        self._resets_in_window = 0

    @property
    def validates_addresses(self) -> bool:
        return self._retry is not None

    def inspect(self, data: bytes, addr: Address, now: float) -> GateDecision:
        version = long_header_version(data) if len(data) >= 7 else None
        if version is not None and version != 0 and version not in self._versions:
            # Only the version-independent header (RFC 8999) can be read:
            # the rest of the packet is in an unknown format.
            return self._negotiate_version(data)
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self._cid_length
            )
        except ValueError:
            return GateDecision(GateAction.DROP, "unparseable header")
        if header.version is None:
            return self._reset_for(data, bytes(header.destination_cid), now)
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return GateDecision(GateAction.DROP, "version negotiation to a server")
        if header.packet_type != QuicPacketType.INITIAL:
            return GateDecision(
                GateAction.DROP, "not an Initial for an unknown connection"
            )
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return GateDecision(
                GateAction.DROP, "Initial in a datagram under 1200 bytes"
            )
        dcid = bytes(header.destination_cid)
        scid = bytes(header.source_cid)
        if self._retry is None:
            return GateDecision(
                GateAction.ACCEPT,
                "new connection",
                version=header.version,
                client_dcid=dcid,
                client_scid=scid,
                original_destination_cid=dcid,
            )
        if not header.token:
            retry_scid = os.urandom(self._cid_length)
            token = self._retry.issue(addr, dcid, retry_scid, now)
            reply = encode_quic_retry(
                version=header.version,
                source_cid=retry_scid,
                destination_cid=scid,
                original_destination_cid=dcid,
                retry_token=token,
            )
            return GateDecision(
                GateAction.REPLY, "retry", reply=reply, reply_kind=GateReply.RETRY
            )
        try:
            original_dcid = self._retry.validate(addr, dcid, bytes(header.token), now)
        except ValueError as exc:
            reply = initial_close(
                header.version, dcid, scid, QuicErrorCode.INVALID_TOKEN, str(exc)
            )
            return GateDecision(
                GateAction.REPLY,
                f"invalid token: {exc}",
                reply=reply,
                reply_kind=GateReply.INVALID_TOKEN,
            )
        return GateDecision(
            GateAction.ACCEPT,
            "new connection, address validated",
            version=header.version,
            client_dcid=dcid,
            client_scid=scid,
            original_destination_cid=original_dcid,
            retry_source_cid=dcid,
        )

    def _negotiate_version(self, data: bytes) -> GateDecision:
        """Answer a long header of an unknown version (RFC 9000 section 6.1)."""
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            # A server may only answer datagrams at least as large as the
            # smallest Initial, so it cannot be used as an amplifier.
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
            QuicErrorCode.CONNECTION_REFUSED,
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


def initial_close(
    version: int, client_dcid: bytes, client_scid: bytes, error_code: int, reason: str
) -> bytes:
    """A server Initial packet carrying only CONNECTION_CLOSE (transport).

    Protected with the Initial keys derived from the client's chosen
    destination connection ID, so the client can read it.
    """
    crypto = CryptoPair()
    crypto.setup_initial(cid=client_dcid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=client_dcid,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        peer_cid=client_scid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode("utf8")[:100]
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=1 + 8 + 8 + 8 + len(phrase)
    )
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return bytes(datagrams[0])


__all__ = ["AioquicGate", "initial_close"]
