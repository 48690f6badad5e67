"""The qh3 backend: what :mod:`quicconn._core.registry` loads as ``"qh3"``."""

from __future__ import annotations

from typing import Any

from qh3.tls import SessionTicket

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
from .core import Qh3Core
from .gate import Qh3Gate
from .h3 import Qh3H3Codec
from .keys import offloadable_key, plain_key
from .tickets import decode_session_ticket, encode_session_ticket, ticket_label


class Qh3Backend:
    """Cores, gates and HTTP/3 codecs over qh3 (a Rust connection core).

    What it cannot do is what its Rust core decides by itself: see
    docs/cores.md for the table, generated from :attr:`capabilities`.
    """

    name = "qh3"
    capabilities = frozenset(
        {
            Capability.CLIENT,
            Capability.SERVER,
            Capability.RESUMPTION,
            Capability.VERSION_2,
            Capability.ASYNC_SIGN,
            Capability.STREAM_LIMITS,
            Capability.QLOG,
            Capability.KEYLOG,
            Capability.HTTP3,
            Capability.CUBIC,
            Capability.KEEP_ALIVE,
            Capability.DATAGRAMS,
            Capability.BATCHED_RECEIVE,
            Capability.PMTUD_CLIENT,
        }
    )
    #: qh3's only controller: CUBIC with HyStart++.
    default_congestion_control = "cubic"

    def new_client(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None,
        session_ticket: Any | None,
        on_session_ticket: TicketHandler,
    ) -> Core:
        return Qh3Core(
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
        return Qh3Core(
            settings,
            sink,
            client_dcid=decision.client_dcid,
            client_scid=decision.client_scid,
            original_destination_cid=decision.original_destination_cid,
            retry_source_cid=decision.retry_source_cid,
            version=decision.version,
            reset_key=reset_key,
            session_ticket_fetcher=fetch_ticket,
            session_ticket_issuer=store_ticket if settings.num_tickets else None,
            cid_factory=settings.server_cid_factory,
        )

    def new_gate(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> ServerGate:
        return Qh3Gate(
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
        return Qh3H3Codec(
            transport,
            is_client=is_client,
            max_field_section_size=max_field_section_size,
        )


#: The backend object the registry looks up.
BACKEND: CoreBackend = Qh3Backend()

__all__ = ["BACKEND", "Qh3Backend"]
