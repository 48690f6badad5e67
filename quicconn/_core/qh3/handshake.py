"""The Rust core and the TLS bridge of a :class:`~.core.Qh3Core`: making
them, and moving what TLS produces into the core.

qh3's ``QuicConnectionCore`` does packets, recovery and streams; TLS 1.3
runs in Python (``QuicTlsBridge``, here :class:`~.config.TlsBridge`).
Between them the facade carries CRYPTO data, traffic secrets (installed as
packet keys), the peer's transport parameters, and version changes.  The
functions here are those steps; the facade decides when to take them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from qh3._hazmat import Buffer, QuicConnectionCore
from qh3.quic.crypto import CIPHER_SUITES
from qh3.quic.packet import (
    QuicTransportParameters,
    get_retry_integrity_tag,
    pull_quic_transport_parameters,
)
from qh3.tls import Direction, Epoch, ExtensionType, SessionTicket, State

from ..._constants import QUIC_VERSION_1, QUIC_VERSION_2
from ..initial import client_initial_keys, server_initial_keys
from ..interface import Address
from ..pmtud import BASE_PLPMTU
from ..settings import CoreSettings
from .config import TlsBridge
from .probing import NUDGE_BYTES

#: RFC 9002's kInitialRtt, and qh3's own default (the aioquic core's is
#: 100 ms: against a busy peer that fires spurious handshake PTOs).
INITIAL_RTT = 0.333
#: The peer's max_ack_delay assumed until it announces one (seconds).
MAX_ACK_DELAY = 0.025
#: The peer connection IDs a client (server) keeps (active_connection_id_limit).
CLIENT_CID_LIMIT = 2
SERVER_CID_LIMIT = 8
#: The largest max_early_data_size quicconn's servers issue (0-RTT allowed).
MAX_EARLY_DATA = 0xFFFFFFFF
#: The versions compatible version negotiation moves between (RFC 9368).
COMPATIBLE_VERSIONS = frozenset({QUIC_VERSION_1, QUIC_VERSION_2})
#: The AEAD tag ending a Retry packet (RFC 9001, section 5.8).
_RETRY_TAG_SIZE = 16

#: A client's TLS states in which a step may write a ClientHello (the first,
#: or the second after a HelloRetryRequest).
_SENDING_CLIENT_HELLO = frozenset(
    {State.CLIENT_HANDSHAKE_START, State.CLIENT_EXPECT_SERVER_HELLO}
)

__all__ = [
    "CLIENT_CID_LIMIT",
    "COMPATIBLE_VERSIONS",
    "INITIAL_RTT",
    "MAX_ACK_DELAY",
    "MAX_EARLY_DATA",
    "SERVER_CID_LIMIT",
    "apply_peer_parameters",
    "install_initial_keys",
    "move_tls_output",
    "new_native",
    "remembered_parameters",
    "retry_is_genuine",
    "start_limits",
    "without_ip_server_name",
]


def remembered_parameters(
    ticket: SessionTicket | None, server_name: str | None
) -> QuicTransportParameters | None:
    """The server's transport parameters a client's 0-RTT ticket carries."""
    if (
        ticket is None
        or not ticket.is_valid
        or ticket.server_name != server_name
        or ticket.max_early_data_size != MAX_EARLY_DATA
    ):
        return None
    for kind, data in ticket.other_extensions:
        if kind == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
            try:
                return pull_quic_transport_parameters(Buffer(data=data))
            except ValueError:
                return None
    return None


def start_limits(parameters: QuicTransportParameters | None) -> tuple[int, ...]:
    """The peer's send limits a core starts with (0 until it announces)."""
    if parameters is None:
        return (0, 0, 0, 0, 0, 0)
    return (
        parameters.initial_max_data or 0,
        parameters.initial_max_stream_data_bidi_local or 0,
        parameters.initial_max_stream_data_bidi_remote or 0,
        parameters.initial_max_stream_data_uni or 0,
        parameters.initial_max_streams_bidi or 0,
        parameters.initial_max_streams_uni or 0,
    )


def new_native(
    settings: CoreSettings,
    version: int,
    addr: Address,
    host_cid: bytes,
    peer_cid: bytes,
    *,
    address_validated: bool,
    remembered: QuicTransportParameters | None,
    now: float,
) -> QuicConnectionCore:
    """A Rust connection core with quicconn's settings."""
    is_client = settings.is_client
    limits = start_limits(remembered)
    return QuicConnectionCore(
        is_client,
        version,
        ("0.0.0.0", 0),
        addr,
        host_cid,
        peer_cid,
        address_validated,
        CLIENT_CID_LIMIT if is_client else SERVER_CID_LIMIT,
        # Every path starts at the size all paths carry.  A client probes
        # for more (qh3's own search: 1280, 1350, 1452, 1472 bytes, each
        # validated by its ACK); the ceiling comes with the peer's
        # transport parameters (apply_peer_parameters).  qh3's servers
        # never probe.
        BASE_PLPMTU,
        is_client and settings.max_datagram_size > BASE_PLPMTU,
        settings.idle_timeout or None,
        3,
        settings.max_datagram_frame_size,
        None if remembered is None else remembered.max_datagram_frame_size,
        settings.max_data,
        limits[0],
        settings.max_stream_data,
        limits[1],
        limits[2],
        limits[3],
        settings.max_stream_data,
        settings.max_streams_bidi,
        settings.max_streams_uni,
        limits[4],
        limits[5],
        INITIAL_RTT,
        MAX_ACK_DELAY,
        now,
    )


def install_initial_keys(
    native: QuicConnectionCore, version: int, initial_dcid: bytes
) -> None:
    """Initial keys from the connection ID the client chose.

    qh3's core derives them from its destination connection ID, which is
    also where it sends: a client with a zero-length connection ID
    (OpenSSL's) must get packets without one, so the server core is made
    with none, adopts the one the client chose as its own (the client
    keeps sending to it until it learns ours: now the same), and gets
    its Initial keys here.
    """
    algorithms = ("aes-128-gcm", "aes-128-ecb")
    for direction, keys in (
        ("send", server_initial_keys(version, initial_dcid)),
        ("receive", client_initial_keys(version, initial_dcid)),
    ):
        key, iv, hp = keys
        native.install_packet_key(direction, 0, algorithms, key, iv, hp, 0)


def move_tls_output(
    tls: TlsBridge,
    native: QuicConnectionCore,
    last_crypto: dict[int, tuple[int, bytes]] | None = None,
    relabel: Callable[[int, int, bytes], bytes] | None = None,
) -> bool:
    """Move what TLS produced into the core: its version, traffic secrets
    as packet keys, CRYPTO data (``relabel(epoch, offset, data)`` may
    rewrite it first).  True if a 0-RTT key was installed.

    ``last_crypto``, if given, keeps the end of the CRYPTO data sent in each
    epoch (its last :data:`~.probing.NUDGE_BYTES` bytes and their offset),
    for :meth:`~.probing.Prober.nudge`."""
    if native.version != tls.version:
        native.set_version(tls.version)
    zero_rtt = False
    while (secret := tls.next_traffic_secret()) is not None:
        hp_name, aead_name = CIPHER_SUITES[secret.cipher_suite]
        native.install_packet_key(
            "send" if secret.direction == Direction.ENCRYPT else "receive",
            int(secret.epoch),
            (aead_name.decode(), hp_name.decode()),
            secret.key,
            secret.iv,
            secret.hp,
            0,
            secret.secret,
            secret.version,
        )
        if secret.epoch == Epoch.ZERO_RTT:
            zero_rtt = True
    while (crypto := tls.next_crypto_data()) is not None:
        data = crypto.data
        if relabel is not None:
            data = relabel(int(crypto.epoch), crypto.offset, data)
        native.send_crypto(int(crypto.epoch), crypto.offset, data)
        if last_crypto is not None and data:
            tail = bytes(data[-NUDGE_BYTES:])
            end = crypto.offset + len(data)
            last_crypto[int(crypto.epoch)] = (end - len(tail), tail)
    return zero_rtt


def apply_peer_parameters(
    native: QuicConnectionCore, parameters: QuicTransportParameters, ceiling: int
) -> None:
    """Give the core the peer's transport parameters, and the ceiling of
    path MTU discovery with them.

    qh3's core caps its datagram size and its probes at the peer's
    max_udp_payload_size; given the smaller of that and ``ceiling``, it
    never probes past the ceiling.  Applied again with the same
    parameters (they only raise limits, so nothing else changes) and a
    ``ceiling`` of 1200, it falls back to 1200 bytes for good: the only
    way to shrink qh3's datagram size after the start.
    """
    peer_limit = parameters.max_udp_payload_size
    native.apply_peer_transport_parameters(
        parameters.initial_max_data or 0,
        parameters.initial_max_stream_data_bidi_local or 0,
        parameters.initial_max_stream_data_bidi_remote or 0,
        parameters.initial_max_stream_data_uni or 0,
        parameters.initial_max_streams_bidi or 0,
        parameters.initial_max_streams_uni or 0,
        3 if parameters.ack_delay_exponent is None else parameters.ack_delay_exponent,
        MAX_ACK_DELAY
        if parameters.max_ack_delay is None
        else parameters.max_ack_delay / 1000,
        parameters.max_idle_timeout / 1000 if parameters.max_idle_timeout else None,
        parameters.max_datagram_frame_size,
        parameters.stateless_reset_token,
        parameters.active_connection_id_limit or 2,
        bool(parameters.disable_active_migration),
        ceiling if peer_limit is None else min(peer_limit, ceiling),
    )


def retry_is_genuine(packet: bytes, initial_dcid: bytes, version: int) -> bool:
    """Whether a Retry packet's integrity tag is right (RFC 9001, 5.8)."""
    try:
        expected = get_retry_integrity_tag(
            packet[:-_RETRY_TAG_SIZE], initial_dcid, version=version
        )
    except ValueError:
        return False
    return bool(expected == packet[-_RETRY_TAG_SIZE:])


@contextmanager
def without_ip_server_name(bridge: TlsBridge) -> Iterator[None]:
    """Keep a client's server name, a literal IP address, out of the
    ClientHellos written meanwhile.

    RFC 6066 section 3 does not permit addresses in the server_name
    extension, and GnuTLS refuses a ClientHello naming an IPv6 one with
    illegal_parameter; qh3's client sends whatever name it verifies.  The
    name is hidden from qh3's TLS only while a ClientHello may be written,
    so the certificate is still checked against the address and session
    tickets still carry it (qh3 2.1 keeps it in ``Context._server_name``).
    The caller tells an address (:func:`quicconn._names.is_ip_address`,
    once per connection).
    """
    context = bridge.tls
    if context.state not in _SENDING_CLIENT_HELLO:
        yield
        return
    name = context._server_name
    context._server_name = None
    try:
        yield
    finally:
        context._server_name = name
