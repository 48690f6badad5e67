"""The core interface: what quicconn asks of a QUIC protocol engine.

A *core* is one connection's sans-I/O protocol state (packets, TLS, loss
recovery, congestion control, streams and credit).  A *backend* makes
cores, the stateless server gate and the HTTP/3 codec for one QUIC library;
it is the only code that imports that library.  Everything above this
module (the reactor, channels, listeners, the HTTP layer) sees only the
protocols below, so a second backend plugs in without changes there.

The interface was derived from what the layers above actually call:

* the reactor drives a core: :meth:`Core.receive_datagram`,
  :meth:`Core.handle_timer`, :meth:`Core.datagrams_to_send`, and
  :meth:`Core.dispatch_events`, which reports to a :class:`CoreSink`;
* a channel (one per connection) reads handshake facts, moves stream data
  and credit, and closes;
* a listener's port asks a :class:`ServerGate` what to do with datagrams
  no connection claims;
* the HTTP layer frames HTTP/3 with an :class:`H3Codec`.

What a backend cannot do is said by its :class:`Capability` set, so that a
context can refuse a setting at configuration time instead of failing later.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import ConnCloseInfo

if TYPE_CHECKING:
    from .._asyncjob.job import JobHost
    from .settings import CoreSettings

#: A socket address as the transport reports it: ``(host, port, ...)``.
Address = tuple[Any, ...]

#: One HTTP header field: name and value, as bytes.
HeaderField = tuple[bytes, bytes]


class Capability(enum.Enum):
    """Something a backend can do; the set a backend lacks is documented."""

    #: Client connections.
    CLIENT = "client"
    #: Server connections, the server gate (Version Negotiation, Retry,
    #: stateless reset) and listeners.
    SERVER = "server"
    #: Resumption from a session ticket, and 0-RTT early data.
    RESUMPTION = "resumption and 0-RTT"
    #: QUIC version 2 (RFC 9369) and compatible version negotiation.
    VERSION_2 = "QUIC v2"
    #: MODE_ASYNC: a private-key signature can pause the handshake in a job.
    ASYNC_SIGN = "MODE_ASYNC private-key offload"
    #: Receive credit granted as the application reads (a slow reader
    #: bounds the memory a peer can make it hold).
    CREDIT_ON_CONSUME = "flow-control credit granted as the application reads"
    #: MAX_STREAMS credit returned only for streams the application released.
    STREAM_CREDIT_ON_RELEASE = "MAX_STREAMS credit only for released streams"
    #: Initial stream limits (initial_max_streams_*) taken from the settings.
    STREAM_LIMITS = "configurable initial stream limits"
    #: Stateless reset tokens derived from a server secret.
    DERIVED_RESET_TOKENS = "stateless reset tokens derived from a server secret"
    #: A qlog trace per connection.
    QLOG = "qlog traces"
    #: TLS secrets in NSS key log format.
    KEYLOG = "key log (SSLKEYLOGFILE format)"
    #: HTTP/3 framing and QPACK (:class:`H3Codec`).
    HTTP3 = "HTTP/3 codec"
    #: qlog traces list each packet's frames (not only its header).
    QLOG_FRAMES = "qlog traces list each packet's frames"
    #: NewReno congestion control (``ctx.congestion_control = "reno"``).
    RENO = "Reno congestion control"
    #: CUBIC congestion control (``ctx.congestion_control = "cubic"``).
    CUBIC = "CUBIC congestion control"
    #: A server acknowledges a first Initial that carries no CRYPTO frame (a
    #: PING-only probe: OpenSSL's client sends one after losing its
    #: ClientHello); the ACK tells the client its ClientHello was lost.
    PING_FIRST_INITIAL = "a PING-only first Initial is acknowledged"
    #: Initial and Handshake ACKs repeated in every CRYPTO or probe packet
    #: until the peer has seen them (RFC 9000 section 13.2.4).
    REPEATED_HANDSHAKE_ACKS = "handshake ACKs repeated until acknowledged"
    #: An immediate ACK for a 1-RTT packet with missing packets below it
    #: (RFC 9000 section 13.2.1).
    GAP_ACK = "an immediate ACK when a packet arrives after a gap"
    #: 1-RTT ACKs wait up to 2 ms for more packets (one ACK for many on a
    #: fast path) instead of going out every second packet.
    ACK_THINNING = "1-RTT ACKs delayed up to 2 ms"
    #: Keep-alive PINGs (``CoreSettings.keep_alive``): :meth:`Core.get_timer`
    #: and :meth:`Core.handle_timer` include the keep-alive deadline.
    KEEP_ALIVE = "keep-alive PINGs"
    #: Every connection ID a server issues is quicconn's own
    #: (``CoreSettings.server_cid_factory``, QUIC-LB): none but the
    #: handshake's, as the QUIC-LB draft asks of its plaintext algorithm.
    #: Without it a core adds spare IDs of its own choosing in
    #: NEW_CONNECTION_ID frames, which no load balancer or worker steering
    #: can route (a client that moves to one on purpose loses its server).
    CHOSEN_CONNECTION_IDS = "every server connection ID chosen by quicconn"
    #: Server connection IDs of any length (a QUIC-LB configuration whose
    #: IDs are not 8 bytes).  qh3's core serves a client with a zero-length
    #: ID (OpenSSL's) only under the ID the client chose for it, 8 bytes
    #: long, so its own must be 8 bytes too.
    ANY_CID_LENGTH = "server connection IDs of any length"
    #: Unreliable DATAGRAM frames (RFC 9221): :meth:`Core.send_datagram_frame`,
    #: :meth:`Core.max_datagram_payload`, :meth:`CoreSink.on_datagram_frame`.
    DATAGRAMS = "DATAGRAM frames (RFC 9221)"
    #: :meth:`Core.receive_datagrams` processes a batch in one call into the
    #: library (the reactor then groups what a tick drained by connection
    #: and address); without it, the batch is fed one datagram at a time.
    BATCHED_RECEIVE = "a batch of datagrams processed in one call"
    #: A client raises its datagram size by path MTU discovery (RFC 9000
    #: section 14.3, DPLPMTUD of RFC 8899), up to ``max_datagram_size``.
    PMTUD_CLIENT = "path MTU discovery by clients"
    #: A server does too (the bulk of a download is the server's to send).
    PMTUD_SERVER = "path MTU discovery by servers"
    #: Path MTU discovery beyond an Ethernet path: a ``max_datagram_size``
    #: above 1472 bytes is probed for (a jumbo-frame path), not capped.
    PMTUD_JUMBO = "path MTU discovery above a 1500-byte MTU"


class CoreSink(Protocol):
    """Receives what a core has to report, as plain calls.

    Called from :meth:`Core.dispatch_events`, during a reactor tick, with
    the reactor lock held.
    """

    def on_handshake_complete(
        self, alpn: str | None, session_resumed: bool, early_data_accepted: bool
    ) -> None:
        """The handshake completed (or, for a server, was confirmed)."""

    def on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        """In-order stream data, ``fin`` with the last of it."""

    def on_stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset a stream's sending part (RESET_STREAM)."""

    def on_stop_sending(self, stream_id: int, error_code: int) -> None:
        """The peer asked this side to stop sending (STOP_SENDING)."""

    def on_connection_id_issued(self, cid: bytes) -> None:
        """A new connection ID of ours the peer may use: route it here."""

    def on_connection_id_retired(self, cid: bytes) -> None:
        """A connection ID of ours is no longer in use."""

    def on_closing(self, info: ConnCloseInfo) -> None:
        """A close began, locally or by the peer (once per connection)."""

    def on_datagram_frame(self, data: bytes) -> None:
        """A DATAGRAM frame's payload arrived (Capability.DATAGRAMS)."""

    def on_terminated(self) -> None:
        """The closing or draining period ended: nothing more is sent."""


class Core(Protocol):
    """One QUIC connection's protocol state, driven by a reactor.

    No method raises for bad network input: a datagram a core cannot
    process is logged and dropped.
    """

    # -- facts --------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        """Whether this is the client end."""

    @property
    def host_cid(self) -> bytes:
        """The connection ID of ours the peer currently addresses."""

    @property
    def handshake_complete(self) -> bool:
        """Whether the TLS handshake completed."""

    @property
    def alpn_protocol(self) -> str | None:
        """The negotiated ALPN protocol, once the handshake completed."""

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake resumed a session."""

    @property
    def early_data_attempted(self) -> bool:
        """A client started with a ticket that allows 0-RTT."""

    @property
    def early_data_accepted(self) -> bool:
        """The server accepted the client's 0-RTT data."""

    @property
    def close_info(self) -> ConnCloseInfo | None:
        """Why the connection is closing, once a close began."""

    @property
    def version(self) -> int | None:
        """The QUIC version in use, after any version negotiation."""

    @property
    def cipher_suite(self) -> int | None:
        """The negotiated TLS cipher suite's IANA value, once known."""

    @property
    def is_closing(self) -> bool:
        """A close began, locally or by the peer."""

    @property
    def is_terminated(self) -> bool:
        """The closing or draining period is over."""

    def peer_address(self) -> Address | None:
        """Where the peer is (it may move: migration, NAT rebinding)."""

    def received_a_packet(self) -> bool:
        """A packet from the peer was decrypted (or a close began).

        A datagram can be shaped like an Initial and still be junk; a
        server keeps a connection for it only if this turns True.
        """

    def idle_timeout(self) -> float:
        """The idle timeout this endpoint asked for, seconds (0: none)."""

    def peer_idle_timeout(self) -> float | None:
        """The idle timeout the peer asked for, once known, seconds."""

    def negotiated_idle_timeout(self) -> float | None:
        """The effective idle timeout: the smaller non-zero request."""

    def peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter, if sent."""

    def path_mtu(self) -> int:
        """The largest UDP payload the core sends now: 1200 until path MTU
        discovery validated more, never above ``max_datagram_size``."""

    # -- driving (the reactor) ----------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Start a client handshake towards ``addr``."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram; never raises."""

    def receive_datagrams(
        self, datagrams: list[bytes], addr: Address, now: float
    ) -> None:
        """Feed datagrams that arrived together from ``addr``, in order;
        never raises.  With :attr:`Capability.BATCHED_RECEIVE` one call
        into the library processes them all; otherwise this is
        :meth:`receive_datagram` for each."""

    def receive_coalesced(
        self, data: bytes, segment_size: int, addr: Address, now: float
    ) -> None:
        """Feed a run of datagrams from ``addr`` as UDP GRO hands it up:
        every ``segment_size`` bytes of ``data`` are one datagram (the last
        may be shorter); never raises.  With
        :attr:`Capability.BATCHED_RECEIVE` the library cuts the run itself."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything the core wants to send now."""

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due, or None."""

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now`` (loss detection, ACKs, idle timeout,
        and with ``CoreSettings.keep_alive`` a keep-alive PING after a
        silence of ``rules.keep_alive_interval()``)."""

    def dispatch_events(self) -> None:
        """Report everything since the last call to the sink."""

    # -- MODE_ASYNC -----------------------------------------------------------

    def attach_async_host(self, host: JobHost) -> None:
        """Run packet processing in async jobs from ``host`` (MODE_ASYNC)."""

    @property
    def async_held(self) -> bool:
        """An async job is paused in this core (or datagrams wait for one):
        the core is left alone until :meth:`resume_async`."""

    def resume_async(self, now: float) -> bool:
        """Resume a paused job; False if only another thread can."""

    # -- streams and credit ---------------------------------------------------

    def local_streams_available(self, unidirectional: bool) -> int:
        """Streams of this kind the peer lets us open now."""

    def remote_streams_available(self, unidirectional: bool) -> int:
        """Streams of this kind the peer may open now."""

    def open_stream(self, unidirectional: bool) -> int:
        """Allocate the next local stream ID (the caller checked the limit)."""

    def send_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        """Queue data (and the FIN) on a stream's sending part."""

    def send_credit(self, stream_id: int) -> int:
        """Bytes the peer's MAX_STREAM_DATA still lets this stream append."""

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream and not yet acknowledged."""

    def connection_send_credit(self) -> int:
        """Bytes the peer's MAX_DATA still lets all streams together append:
        the limit minus everything written (sent or waiting to be sent)."""

    def send_buffered_total(self) -> int:
        """Bytes written on all streams and not yet acknowledged."""

    def send_fully_acked(self, stream_id: int) -> bool:
        """Every byte written (and the FIN, if any) was acknowledged."""

    def all_sends_acked(self) -> bool:
        """:meth:`send_fully_acked` for every stream."""

    def consume(self, stream_id: int, nbytes: int) -> None:
        """The application consumed ``nbytes`` of the stream's data."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Send RESET_STREAM."""

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        """Send STOP_SENDING (nothing if the stream is already gone)."""

    def release_stream(self, stream_id: int) -> None:
        """The application is done with a stream (freed or rejected)."""

    def stream_discarded(self, stream_id: int) -> bool:
        """The core finished with a stream and dropped its state."""

    def forget_stream(self, stream_id: int) -> None:
        """Drop per-stream bookkeeping of a discarded stream."""

    # -- DATAGRAM frames (Capability.DATAGRAMS) --------------------------------

    def max_datagram_payload(self) -> int:
        """The largest DATAGRAM payload that may be sent now: what the peer's
        max_datagram_frame_size and one packet on the path allow (0: none,
        e.g. the peer did not enable DATAGRAM frames)."""

    def send_datagram_frame(self, data: bytes) -> None:
        """Queue one DATAGRAM frame (the caller checked the size); it is
        sent once and never retransmitted."""

    # -- connection-wide ------------------------------------------------------

    def close(self, error_code: int, reason: str, *, application: bool = True) -> None:
        """Begin closing: CONNECTION_CLOSE goes out with the next send."""

    def request_key_update(self) -> None:
        """Start a 1-RTT key update."""

    def finish_qlog(self) -> None:
        """Write the qlog trace now (a connection abandoned unclosed)."""


class GateAction(enum.Enum):
    """What a server does with a datagram that no connection claims."""

    DROP = "drop"
    REPLY = "reply"  #: answer statelessly with :attr:`GateDecision.reply`
    ACCEPT = "accept"  #: create a connection for it


class GateReply(enum.Enum):
    """The kinds of stateless answer a gate gives."""

    VERSION_NEGOTIATION = "version negotiation"
    RETRY = "retry"
    INVALID_TOKEN = "invalid token"
    STATELESS_RESET = "stateless reset"


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A :class:`ServerGate`'s verdict on one datagram."""

    action: GateAction
    reason: str
    reply: bytes | None = None
    #: For :attr:`GateAction.REPLY`: what kind of answer :attr:`reply` is.
    reply_kind: GateReply | None = None
    version: int = 0
    #: The connection ID the client chose for us: later Initials carry it.
    client_dcid: bytes = b""
    client_scid: bytes = b""
    original_destination_cid: bytes | None = None
    retry_source_cid: bytes | None = None
    #: For :attr:`GateAction.ACCEPT`: whether the Initial starts the
    #: client's ClientHello.  False for the second Initial of a ClientHello
    #: that spans two (a post-quantum key share makes it 1.4 kB), which a
    #: refusal need not answer again.  None: not known yet, the Initial was
    #: not decrypted (see :meth:`ServerGate.prove`).
    starts_handshake: bool | None = None


class ServerGate(Protocol):
    """Stateless server-side handling of datagrams for unknown connections."""

    @property
    def validates_addresses(self) -> bool:
        """Whether Retry address validation is on."""

    def inspect(self, data: bytes, addr: Address, now: float) -> GateDecision:
        """Drop, answer statelessly, or accept as a new connection.

        An accepted Initial need not have been decrypted yet: the new
        connection's core decrypts it anyway, and one that does not
        decrypt is freed at once.  A listener asks :meth:`prove` first
        when the Initial could cost a real client its place (its tables
        are full).
        """

    def prove(self, decision: GateDecision, data: bytes) -> GateDecision:
        """An accepted ``decision`` for ``data`` once its Initial was
        decrypted: DROP if it does not decrypt (junk), else ACCEPT saying
        whether it starts the ClientHello."""

    def refuse(self, decision: GateDecision, reason: str) -> bytes:
        """An Initial CONNECTION_CLOSE(CONNECTION_REFUSED) for ``decision``."""


class SessionTicket(Protocol):
    """A TLS session ticket, as much of it as quicconn reads."""

    @property
    def server_name(self) -> str | None:
        """The server name the ticket was issued for."""

    @property
    def max_early_data_size(self) -> int | None:
        """0-RTT bytes the server allows, if any."""

    @property
    def is_valid(self) -> bool:
        """Whether the ticket is still within its lifetime."""


@dataclass(frozen=True, slots=True)
class H3HeadersReceived:
    """A complete HEADERS frame (request, response or trailers)."""

    stream_id: int
    headers: list[HeaderField]
    stream_ended: bool


@dataclass(frozen=True, slots=True)
class H3DataReceived:
    """Body bytes of a request or response stream."""

    stream_id: int
    data: bytes
    stream_ended: bool


@dataclass(frozen=True, slots=True)
class H3DatagramReceived:
    """An HTTP Datagram (RFC 9297) for the request stream ``stream_id``."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class H3StreamError:
    """A message on ``stream_id`` broke HTTP/3's rules for messages
    (malformed, RFC 9114 section 4.1.2: H3_MESSAGE_ERROR; a field section
    over the limit: H3_EXCESSIVE_LOAD).  A stream error, not a connection
    error: the codec has forgotten the stream, and the session resets it."""

    stream_id: int
    error_code: int
    reason: str


H3Event = H3HeadersReceived | H3DataReceived | H3DatagramReceived | H3StreamError


class H3Transport(Protocol):
    """The stream operations an :class:`H3Codec` needs from its connection."""

    def open_stream(self, unidirectional: bool) -> int:
        """Open a local stream (control and QPACK streams); its ID."""

    def write(self, stream_id: int, data: bytes, fin: bool) -> None:
        """Send on a stream; never blocks (the rest waits in a backlog)."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Reset a stream's sending part."""

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Stop reading a stream."""

    def close(self, error_code: int, reason: str) -> None:
        """Close the connection for an HTTP/3 protocol error."""

    def peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter."""

    def local_max_datagram_frame_size(self) -> int | None:
        """Ours: DATAGRAM frames are on if it is not None (then the codec
        sends SETTINGS_H3_DATAGRAM=1, RFC 9297)."""

    def send_datagram(self, data: bytes) -> None:
        """Send one QUIC DATAGRAM frame (ValueError if it does not fit)."""


class H3Codec(Protocol):
    """HTTP/3 framing and QPACK for one connection (RFC 9114, RFC 9204)."""

    def handle_stream_data(
        self, stream_id: int, data: bytes, fin: bool
    ) -> Sequence[H3Event]:
        """Feed stream data; the HTTP events it completed."""

    def handle_stream_reset(self, stream_id: int, error_code: int) -> None:
        """The peer reset a stream."""

    def handle_stop_sending(self, stream_id: int, error_code: int) -> None:
        """The peer asked us to stop sending on a stream."""

    def send_headers(
        self, stream_id: int, headers: list[HeaderField], end_stream: bool
    ) -> None:
        """Encode and send a HEADERS frame."""

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Send a DATA frame."""

    def datagrams_allowed(self) -> bool:
        """Both ends sent SETTINGS_H3_DATAGRAM=1 (RFC 9297, section 2.1.1)."""

    def handle_datagram(self, data: bytes) -> Sequence[H3Event]:
        """Feed a QUIC DATAGRAM frame's payload; the HTTP datagram in it."""

    def send_datagram(self, stream_id: int, data: bytes) -> None:
        """Send an HTTP datagram for request stream ``stream_id``."""

    def discard_stream(self, stream_id: int) -> None:
        """Forget a request stream the session gave up (nothing more of it
        will be fed)."""

    def received_settings(self) -> dict[int, int] | None:
        """The peer's SETTINGS (identifier: value); None until they arrive."""


#: ``fetch(label)`` finds a ticket a server issued, for resumption.
TicketFetcher = Callable[[bytes], Any]
#: ``store(ticket)`` keeps a ticket: a client's new session, or a server's
#: issued ticket for later resumption.
TicketHandler = Callable[[Any], None]
#: ``issue(ticket)``: a server issued ``ticket``; returns the label the
#: client gets in its place (a self-contained, sealed ticket that any
#: server with the same ticket key resumes), or None to send the TLS
#: layer's own label (then ``issue`` keeps the ticket for resumption).
TicketIssuer = Callable[[Any], "bytes | None"]


class CoreBackend(Protocol):
    """A QUIC library behind the interface: makes cores, gates and codecs."""

    @property
    def name(self) -> str:
        """The name ``Context(core=...)`` and ``QUICCONN_CORE`` use."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this backend can do."""

    @property
    def default_congestion_control(self) -> str:
        """The congestion controller used unless a context chooses one."""

    def new_client(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None,
        session_ticket: Any | None,
        on_session_ticket: TicketHandler,
    ) -> Core:
        """A client core (not started: call :meth:`Core.connect`)."""

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
        """A server core for the Initial a gate accepted.

        Its connection ID comes from ``settings.server_cid_factory`` when
        one is set (then it issues no spare IDs, unless it lacks
        :attr:`Capability.CHOSEN_CONNECTION_IDS`); a label returned by
        ``store_ticket`` replaces the one in the NewSessionTicket sent, and
        none is sent when ``settings.num_tickets`` is 0.
        """

    def new_gate(
        self, settings: CoreSettings, *, validate_addresses: bool, reset_key: bytes
    ) -> ServerGate:
        """The stateless server gate of one listener."""

    def ticket_label(self, ticket: Any) -> bytes:
        """The label a client presents to resume ``ticket``."""

    def encode_session(self, ticket: Any) -> bytes:
        """Serialise a ticket (no pickle: loading must not run code)."""

    def decode_session(self, data: bytes) -> SessionTicket:
        """The inverse of :meth:`encode_session`; ValueError if malformed."""

    def prepare_private_key(self, key: Any, *, offload: bool) -> Any:
        """The key as the core should hold it: wrapped so that its
        signatures can pause an async job (``offload``), or plain."""

    def new_h3_codec(
        self, transport: H3Transport, *, is_client: bool, max_field_section_size: int
    ) -> H3Codec:
        """An HTTP/3 codec speaking through ``transport``.

        It announces ``max_field_section_size`` (SETTINGS_MAX_FIELD_SECTION_SIZE),
        offers no server push, and reports malformed messages as
        :class:`H3StreamError` instead of closing the connection.
        """


__all__ = [
    "Address",
    "Capability",
    "Core",
    "CoreBackend",
    "CoreSink",
    "GateAction",
    "GateDecision",
    "GateReply",
    "H3Codec",
    "H3DataReceived",
    "H3DatagramReceived",
    "H3Event",
    "H3HeadersReceived",
    "H3StreamError",
    "H3Transport",
    "HeaderField",
    "ServerGate",
    "SessionTicket",
    "TicketFetcher",
    "TicketHandler",
    "TicketIssuer",
]
