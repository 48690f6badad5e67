"""The aioquic backend: what :mod:`quicconn._core.registry` loads as ``"aioquic"``."""

from __future__ import annotations

from typing import Any

from aioquic.tls import SessionTicket

from ..interface import (
    Capability,
    Core,
    CoreBackend,
    CoreSink,
    GateDecision,
    H3Codec,
    H3Transport,
    ServerGate,
    TicketFetcher,
    TicketHandler,
    TicketIssuer,
)
from ..settings import CoreSettings
from .core import AioquicCore
from .gate import AioquicGate
from .h3 import AioquicH3Codec
from .keys import offloadable_key, plain_key
from .tickets import decode_session_ticket, encode_session_ticket, ticket_label


class AioquicBackend:
    """Cores, gates and HTTP/3 codecs over aioquic (pure Python).

    It can do everything quicconn asks of a core; some of it (credit on
    consume, derived reset tokens, prompt close reports) through the
    policies of :mod:`.connection`.
    """

    name = "aioquic"
    capabilities = frozenset(
        {
            Capability.CLIENT,
            Capability.SERVER,
            Capability.RESUMPTION,
            Capability.VERSION_2,
            Capability.ASYNC_SIGN,
            Capability.CREDIT_ON_CONSUME,
            Capability.STREAM_CREDIT_ON_RELEASE,
            Capability.STREAM_LIMITS,
            Capability.DERIVED_RESET_TOKENS,
            Capability.QLOG,
            Capability.KEYLOG,
            Capability.HTTP3,
            Capability.QLOG_FRAMES,
            Capability.RENO,
            Capability.CUBIC,
            Capability.PING_FIRST_INITIAL,
            Capability.REPEATED_HANDSHAKE_ACKS,
            Capability.GAP_ACK,
            Capability.ACK_THINNING,
            Capability.KEEP_ALIVE,
            Capability.DATAGRAMS,
            Capability.PMTUD_CLIENT,
            Capability.PMTUD_SERVER,
            Capability.PMTUD_JUMBO,
            Capability.CHOSEN_CONNECTION_IDS,
            Capability.ANY_CID_LENGTH,
        }
    )
    default_congestion_control = "reno"

    def new_client(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None,
        session_ticket: Any | None,
        on_session_ticket: TicketHandler,
    ) -> Core:
        return AioquicCore(
            settings,
            sink,
            server_name=server_name,
            session_ticket=session_ticket,
            session_ticket_handler=on_session_ticket,
        )

    def new_server(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        decision: GateDecision,
        *,
        reset_key: bytes,
        fetch_ticket: TicketFetcher,
        store_ticket: TicketIssuer,
    ) -> Core:
        return AioquicCore(
            settings,
            sink,
            original_destination_connection_id=decision.original_destination_cid,
            retry_source_connection_id=decision.retry_source_cid,
            reset_key=reset_key,
            session_ticket_fetcher=fetch_ticket,
            session_ticket_issuer=store_ticket if settings.num_tickets else None,
        )

    def new_gate(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> ServerGate:
        return AioquicGate(
            settings, validate_addresses=validate_addresses, reset_key=reset_key
        )

    def ticket_label(self, ticket: Any) -> bytes:
        return ticket_label(ticket)

    def encode_session(self, ticket: Any) -> bytes:
        return encode_session_ticket(ticket)

    def decode_session(self, data: bytes) -> SessionTicket:
        return decode_session_ticket(data)

    def prepare_private_key(self, key: Any, *, offload: bool) -> Any:
        return offloadable_key(key) if offload else plain_key(key)

    def new_h3_codec(
        self, transport: H3Transport, *, is_client: bool, max_field_section_size: int
    ) -> H3Codec:
        return AioquicH3Codec(
            transport,
            is_client=is_client,
            max_field_section_size=max_field_section_size,
        )


#: The backend object the registry looks up.
BACKEND: CoreBackend = AioquicBackend()

__all__ = ["BACKEND", "AioquicBackend"]
