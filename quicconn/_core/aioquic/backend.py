"""The aioquic backend: cores, gates and codecs on aioquic's sans-I/O stack."""

from __future__ import annotations

from typing import Any

from ..interface import (
    Capability,
    Core,
    CoreSink,
    GateDecision,
    H3Codec,
    H3Transport,
    ServerGate,
    SessionTicket,
    TicketFetcher,
    TicketHandler,
)
from ..settings import CoreSettings
from .core import (
    QuicCore,
    decode_session_ticket,
    encode_session_ticket,
    offloadable_key,
    plain_key,
)
from .core import ServerGate as AioquicGate


class AioquicBackend:
    """quicconn's pure-Python core: aioquic with quicconn's policies."""

    name = "aioquic"
    capabilities = frozenset(Capability)

    def new_client(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None,
        session_ticket: Any | None,
        on_session_ticket: TicketHandler,
    ) -> Core:
        return QuicCore(
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
        store_ticket: TicketHandler,
    ) -> Core:
        return QuicCore(
            settings,
            sink,
            original_destination_connection_id=decision.original_destination_cid,
            retry_source_connection_id=decision.retry_source_cid,
            reset_key=reset_key,
            session_ticket_fetcher=fetch_ticket,
            session_ticket_handler=store_ticket,
        )

    def new_gate(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> ServerGate:
        return AioquicGate(
            settings, validate_addresses=validate_addresses, reset_key=reset_key
        )

    def ticket_label(self, ticket: Any) -> bytes:
        return bytes(ticket.ticket)

    def encode_session(self, ticket: Any) -> bytes:
        return encode_session_ticket(ticket)

    def decode_session(self, data: bytes) -> SessionTicket:
        ticket: SessionTicket = decode_session_ticket(data)
        return ticket

    def prepare_private_key(self, key: Any, *, offload: bool) -> Any:
        return offloadable_key(key) if offload else plain_key(key)

    def new_h3_codec(self, transport: H3Transport, *, is_client: bool) -> H3Codec:
        raise NotImplementedError("the HTTP/3 codec moves here in the core split")


BACKEND = AioquicBackend()


__all__ = ["BACKEND", "AioquicBackend"]
