"""The qh3 :class:`~quicconn._core.interface.Core`: one connection's state.

:class:`Qh3Core` is quicconn's own facade over qh3's Rust connection core
(``qh3._hazmat.QuicConnectionCore``: packets, loss recovery, congestion
control, streams, flow control) and its TLS bridge (``QuicTlsBridge``, TLS
1.3 in Python).  qh3's public ``QuicConnection`` does the same job for
qh3's asyncio stack, but re-parses every outgoing datagram's headers for
logging even with qlog off (about 30% of a sender's CPU) and drops the
events quicconn needs (peer credit, streams finished); this facade talks to
the core directly and reports to a :class:`~quicconn._core.interface.CoreSink`.

What it adds on top of the Rust core, and why (the modules beside this
one hold the parts: :mod:`.handshake` makes the core and the TLS bridge and
moves TLS output into the core, :mod:`.streams` keeps stream bookkeeping
and send accounting, :mod:`.closing` turns the core's close events into
close info, :mod:`.packets` slices datagrams into packets):

* **Coalesced handshake packets are fed one at a time**, so that TLS can
  install the keys of a Handshake packet that follows an Initial in the
  same datagram; the *last* slice keeps the datagram's trailing padding,
  so the server's anti-amplification budget is credited with the whole
  datagram (qh3 credits each slice's length: a padded 1200-byte Initial
  with a 526-byte packet would otherwise allow 3 x 526 bytes, and the
  send path then fails with "packet builder capacity exhausted").
* **Receive credit follows what the application holds, not only what it
  polled.**  The Rust core grants flow-control credit when an event is
  taken from it.  Events are taken only while the application holds fewer
  than ``max_data`` unread bytes of this connection; past that they stay
  in the core, which grants nothing for them, so a receiver that never
  reads holds at most about ``2 x max_data`` (what it holds, plus what the
  core buffers within the window it granted), not an unbounded amount.
* **Streams opened beyond the peer's limit** (``STREAM_FLAG_ADVANCE``) get
  their ID at once; the core opens them, in order, when MAX_STREAMS
  allows, and their writes wait here until then.
* **A Retry or Version Negotiation restarts the core** (qh3 keeps no state
  across them); stream operations made before the handshake completed
  (0-RTT) are replayed on the new one.
* **A first Initial without CRYPTO** (a PING-only probe after a lost
  ClientHello) makes qh3 close the connection; here the server forgets the
  attempt instead, so the client's retransmitted ClientHello starts afresh.
* **A client probes while the server may be held by its amplification
  limit** (RFC 9002 section 6.2.2.1; :mod:`.probe`): qh3 arms no probe
  timeout once the ClientHello is acknowledged, so a lost server flight
  and lost acknowledgements of it left both ends waiting.
* **A client with a zero-length connection ID** (OpenSSL's) gets packets
  without one: qh3 sends to the connection ID its Initial keys come from.
* **A client follows a compatible version change** (RFC 9368) after an ACK
  in the original version; qh3 follows one only before any packet decrypted.
* **Close reports when a close begins**, local or remote, with the same
  :class:`~quicconn._errors.ConnCloseInfo` as on the aioquic core.
* **Acknowledged bytes per stream**, which qh3 does not report, are
  inferred from moments with nothing in flight (:meth:`Qh3Core.send_buffered`).
* **Path MTU discovery has a ceiling and a fallback.**  qh3's client
  probes (1280, 1350, 1452 and 1472 bytes; its server never does); the
  ceiling ``max_datagram_size`` reaches it as a lower peer
  max_udp_payload_size, and repeated probe timeouts above 1200 bytes (a
  black hole, RFC 8899 section 4.3), which qh3 does not look for, cap the
  size at 1200 for the rest of the connection (:meth:`Qh3Core.path_mtu`).
* **Runs of datagrams go to the core in one call** after the handshake
  (``receive_many_datagrams``, Capability.BATCHED_RECEIVE).
* **Nothing the core raises is ignored**: a core that raised ends its
  connection at once with an error naming the exception
  (:func:`~quicconn._core.rules.core_failure_close`; an exception out of
  TLS while it checks the peer's certificate is a bad_certificate alert),
  instead of dropping datagrams until the idle timeout.
* **An unfinished handshake is abandoned** after
  ``settings.handshake_timeout`` without a datagram from the peer, silently.
* **Probes keep coming under sustained loss**: once the core's doubling
  probe timeout outgrows :func:`~quicconn._core.rules.max_probe_interval`,
  the facade sends PINGs at that interval (:mod:`.probing`).
* **The stateless reset token** of the server's handshake connection ID is
  derived from the listener's secret
  (:func:`~quicconn._core.wire.stateless_reset_token`); qh3 draws random
  ones for the spare connection IDs it issues (Capability.DERIVED_RESET_TOKENS
  is not claimed).

docs/cores.md lists what this costs against the aioquic core.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from qh3._hazmat import QuicConnectionCore
from qh3.quic.packet import QuicTransportParameters
from qh3.quic.tls_bridge import QuicTlsBridgeError
from qh3.tls import Epoch, SessionTicket, State

from ..._asyncjob.job import JobHost, Resumed
from ..._errors import ConnCloseInfo
from ..._names import is_ip_address
from ..interface import Address, CoreSink
from ..pmtud import BASE_PLPMTU, BLACK_HOLE_PTOS
from ..rules import (
    core_failure_close,
    handshake_deadline,
    handshake_timeout_close,
    max_probe_interval,
    negotiated_idle_timeout,
    tls_exception_close,
)
from ..settings import CoreSettings
from ..tickets import replace_ticket_label
from ..wire import long_header_version, split_run, stateless_reset_token
from .closing import (
    PADDING_FRAME,
    CloseReport,
    local_error_info,
    peer_close_info,
    protocol_error_info,
    termination_info,
    tls_failure_info,
)
from .config import TlsBridge, build_configuration
from .handshake import (
    COMPATIBLE_VERSIONS,
    apply_peer_parameters,
    install_initial_keys,
    move_tls_output,
    new_native,
    remembered_parameters,
    retry_is_genuine,
    without_ip_server_name,
)
from .keepalive import KeepAlive
from .packets import datagram_payload_limit, log_packets, packet_ends, source_cid
from .probing import Prober
from .reservations import ReservationGuard
from .streams import OPEN_STATES, StreamLedger

logger = logging.getLogger("quicconn.core")

#: Added to the time a due timer is handled at: qh3 holds deadlines in
#: nanoseconds, and a deadline turned into float seconds and back can land
#: a nanosecond short of itself, which a FakeClock stepping to deadlines
#: exactly would never pass.
TIMER_SLACK = 1e-6
#: Taken off the deadlines reported: qh3's clock has nanosecond resolution,
#: so a deadline computed from a float ``now`` can lie up to half a
#: nanosecond past the float instant it stands for (an idle timeout of
#: 0.3 s would read 0.30000000000007 s).  Firing a nanosecond early is
#: harmless: :data:`TIMER_SLACK` covers it.
TIMER_EARLY = 1e-9

#: QUIC transport error codes and frame types used here (RFC 9000, 20.1, 19).
_INTERNAL_ERROR = 0x1
_PROTOCOL_VIOLATION = 0xA
_CRYPTO_FRAME = 0x6
#: The core's name for the timer of its loss detection and probes.
_LOSS_TIMER = "loss_detection"
#: TLS states in which a client is checking the server's certificate.
_CHECKING_CERTIFICATE = frozenset(
    {
        State.CLIENT_EXPECT_CERTIFICATE_REQUEST_OR_CERTIFICATE,
        State.CLIENT_EXPECT_CERTIFICATE_CERTIFICATE,
        State.CLIENT_EXPECT_CERTIFICATE_VERIFY,
    }
)


class Qh3Core:
    """One QUIC connection's protocol state on qh3; see the module docstring.

    The reactor calls :meth:`receive_datagram`, :meth:`handle_timer` and
    :meth:`datagrams_to_send`; the objects layer calls the stream and close
    methods; :meth:`dispatch_events` reports progress to the sink.  Made by
    :class:`~.backend.Qh3Backend`.
    """

    def __init__(
        self,
        settings: CoreSettings,
        sink: CoreSink,
        *,
        server_name: str | None = None,
        session_ticket: SessionTicket | None = None,
        session_ticket_handler: Callable[[SessionTicket], None] | None = None,
        session_ticket_fetcher: Callable[[bytes], SessionTicket | None] | None = None,
        session_ticket_issuer: Callable[[SessionTicket], bytes | None] | None = None,
        cid_factory: Callable[[], bytes] | None = None,
        client_dcid: bytes = b"",
        client_scid: bytes | None = None,
        original_destination_cid: bytes | None = None,
        retry_source_cid: bytes | None = None,
        version: int | None = None,
        reset_key: bytes | None = None,
    ) -> None:
        self._settings = settings
        #: Path MTU discovery's ceiling (lowered to 1200 by a black hole).
        self._pmtu_ceiling = settings.max_datagram_size
        self._sink = sink
        self._is_client = settings.is_client
        self._cid_length = settings.connection_id_length
        #: Server, client with a zero-length connection ID (OpenSSL's):
        #: see :func:`~.handshake.install_initial_keys`.
        self._empty_peer_cid = (
            not self._is_client
            and client_scid == b""
            and len(client_dcid) == self._cid_length
        )
        self._host_cid = (
            client_dcid
            if self._empty_peer_cid
            else os.urandom(self._cid_length)
            if cid_factory is None
            else cid_factory()
        )
        self._configuration = build_configuration(settings, server_name, session_ticket)
        #: Client: the server is named by its IP address, which goes in no
        #: ClientHello (:func:`~.handshake.without_ip_server_name`).
        self._ip_server_name = self._is_client and is_ip_address(server_name)
        self._ticket_handler = session_ticket_handler
        #: Server: the label the next NewSessionTicket gets (a sealed one).
        self._ticket_issuer = session_ticket_issuer
        self._ticket_label: bytes | None = None
        if session_ticket_issuer is not None:
            self._ticket_handler = self._issue_ticket
        self._ticket_fetcher = session_ticket_fetcher
        self._reset_token = (
            None
            if reset_key is None
            else stateless_reset_token(reset_key, self._host_cid)
        )
        #: Client: the DCID of the first Initial (from it the Initial keys
        #: come); server: the DCID the client chose.
        self._initial_dcid = (
            os.urandom(self._cid_length) if self._is_client else client_dcid
        )
        self._original_dcid = (
            self._initial_dcid if self._is_client else original_destination_cid
        )
        self._retry_scid = retry_source_cid
        self._version = version
        self._native: QuicConnectionCore | None = None
        self._tls: TlsBridge | None = None
        self._remembered = (
            remembered_parameters(session_ticket, self._configuration.server_name)
            if self._is_client
            else None
        )
        self._retried = False
        self._negotiated = False
        self._peer_addr: Address | None = None
        self._trace: Any = None
        self._key_update_wanted = False
        # -- handshake facts ------------------------------------------------
        self.handshake_complete = False
        self.alpn_protocol: str | None = None
        self.session_resumed = False
        self.early_data_attempted = False
        self.early_data_accepted = False
        self._zero_rtt_resolved = False
        self._applied_parameters: QuicTransportParameters | None = None
        self._peer_parameters: QuicTransportParameters | None = None
        self._crypto_seen = False
        # -- close ----------------------------------------------------------
        self.close_info: ConnCloseInfo | None = None
        self._close_report = CloseReport()
        self._terminated = False
        # -- events ---------------------------------------------------------
        #: Events taken from the core during the handshake (TLS had to see
        #: its CRYPTO at once), reported at the next dispatch, in order.
        self._pending: deque[tuple[Any, ...]] = deque()
        # -- streams --------------------------------------------------------
        self._streams = StreamLedger(settings)
        #: MODE_ASYNC: runs packet processing in async jobs.
        self._async_host: JobHost | None = None
        #: Keep-alive PINGs (settings.keep_alive), or None.
        self._keep_alive = KeepAlive() if settings.keep_alive else None
        #: PINGs that keep probing under sustained loss (:mod:`.probing`).
        self._prober = Prober()
        #: A client's handshake is confirmed (HANDSHAKE_DONE arrived).
        self._confirmed = False
        #: Until the handshake completes: when the peer was last heard from
        #: (or the client started); None before either.
        self._heard_at: float | None = None
        #: Why quicconn (not the core) ended the connection: the core raised.
        self._failure: ConnCloseInfo | None = None
        #: The core raised again after a failure: it is left alone from now
        #: on (no timers, no output) and counts as terminated.
        self._broken = False
        # -- qh3 2.1's reservations (see :mod:`.reservations`) ---------------
        self._reservations = ReservationGuard()
        #: The latest time the reactor gave this core (a send ahead's time).
        self._now = 0.0
        #: Datagrams sent ahead of events, returned by the next
        #: datagrams_to_send().
        self._sent_ahead: list[tuple[bytes, Address]] = []

    # -- identity ---------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self._is_client

    @property
    def host_cid(self) -> bytes:
        return self._host_cid

    def peer_address(self) -> Address | None:
        native = self._native
        if native is not None:
            return tuple(native.active_path[2])
        return self._peer_addr

    # -- creating the Rust core and the TLS bridge ------------------------

    def _start(self, addr: Address, dcid: bytes, now: float) -> None:
        """Create the Rust core and the TLS bridge (again after a Retry)."""
        settings = self._settings
        version = self._version
        assert version is not None
        remembered = self._remembered if self._is_client else None
        self._native = new_native(
            settings,
            version,
            addr,
            self._host_cid,
            b"" if self._empty_peer_cid else dcid,
            address_validated=self._is_client or self._retry_scid is not None,
            remembered=remembered,
            now=now,
        )
        if self._empty_peer_cid:
            install_initial_keys(self._native, version, self._initial_dcid)
        self._applied_parameters = remembered
        if remembered is not None:
            self._peer_parameters = remembered
        config = self._configuration
        if config.quic_logger is not None and self._trace is None:
            self._trace = config.quic_logger.start_trace(
                is_client=self._is_client, odcid=self._original_dcid or b""
            )
        self._tls = TlsBridge(
            config,
            stream_limits=(settings.max_streams_bidi, settings.max_streams_uni),
            version=version,
            local_initial_source_connection_id=self._host_cid,
            original_destination_connection_id=self._original_dcid,
            retry_source_connection_id=self._retry_scid,
            stateless_reset_token=self._reset_token,
            session_ticket_fetcher=self._ticket_fetcher,
            session_ticket_handler=self._ticket_handler,
            quic_logger=self._trace,
            version_change_handler=self._on_version_change,
        )

    def _on_version_change(self, version: int) -> None:
        """A server moved the connection to a compatible version (RFC 9368)."""
        native = self._native
        if native is not None and native.version != version:
            native.set_version(version)
            if self._empty_peer_cid:
                install_initial_keys(native, version, self._initial_dcid)
        self._version = version

    # -- driving ----------------------------------------------------------

    def connect(self, addr: Address, now: float) -> None:
        """Start the client handshake towards ``addr``."""
        settings = self._settings
        self._peer_addr = addr
        self._heard_at = now
        self._version = int(settings.original_version or settings.supported_versions[0])
        self._start(addr, self._initial_dcid, now)
        tls = self._tls
        assert tls is not None
        self._guard_tls(tls.start)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram.  Never raises: bad input is logged and dropped."""
        host = self._async_host
        if host is not None and host.intercepts(self.handshake_complete):
            host.run(lambda at: self._receive_now(data, addr, at), now)
            return
        self._receive_now(data, addr, now)

    def receive_datagrams(
        self, datagrams: list[bytes], addr: Address, now: float
    ) -> None:
        """Feed a run of datagrams from ``addr``: in one call into the core
        once the handshake is complete (one at a time before: TLS must see
        each handshake packet, and a MODE_ASYNC job may pause)."""
        native = self._batch_receiver(now)
        if native is None or len(datagrams) == 1:
            for data in datagrams:
                self.receive_datagram(data, addr, now)
            return
        try:
            native.receive_many_datagrams(datagrams, addr, now)
        except Exception as exc:
            self._core_failed(exc, "processing datagrams")

    def receive_coalesced(
        self, data: bytes, segment_size: int, addr: Address, now: float
    ) -> None:
        """Feed a GRO run: cut by qh3's core (``receive_gro_buffer``) once
        the handshake is complete, else datagram by datagram."""
        native = self._batch_receiver(now) if segment_size < len(data) else None
        if native is None:
            for datagram in split_run(data, segment_size):
                self.receive_datagram(datagram, addr, now)
            return
        try:
            native.receive_gro_buffer(data, segment_size, addr, now)
        except Exception as exc:
            self._core_failed(exc, "processing datagrams")

    def _batch_receiver(self, now: float) -> QuicConnectionCore | None:
        """The core, if datagrams arriving at ``now`` may go to it in one
        call (counted as heard from the peer), else None: before the
        handshake completed (TLS must see each handshake packet, and a
        MODE_ASYNC job may pause), with a trace (it logs each datagram), or
        after the core raised (nothing is fed, in batch or not)."""
        native = self._native
        if (
            native is None
            or not self.handshake_complete
            or self._trace is not None
            or self._async_host is not None
            or self._broken
            or self._failure is not None
        ):
            return None
        if self._keep_alive is not None:
            self._keep_alive.received(now)
        self._prober.heard(now)
        self._heard_at = self._now = now
        return native

    def _receive_now(self, data: bytes, addr: Address, now: float) -> None:
        if self._broken or self._failure is not None:
            return  # a core that raised is only trusted to close
        if self._keep_alive is not None:
            self._keep_alive.received(now)
        self._prober.heard(now)
        self._heard_at = self._now = now
        try:
            if self._native is None:
                if self._is_client or self._terminated:
                    return
                self._peer_addr = addr
                self._start(addr, self._initial_dcid, now)
            native = self._native
            assert native is not None
            if self._trace is not None:
                log_packets(self._trace, "packet_received", data, self._cid_length)
            if self.handshake_complete:
                native.receive_datagram(data, addr, now)
                return
            self._receive_handshake(data, addr, now)
        except Exception as exc:
            self._core_failed(exc, "processing a datagram")

    def _core_failed(self, exc: Exception, doing: str) -> None:
        """The core raised: end the connection, naming the exception.

        CONNECTION_CLOSE(INTERNAL_ERROR) goes out if the core can still
        send it; if the core raises again, it is abandoned at once.
        """
        native = self._native
        info = core_failure_close(exc, doing)
        if self.close_info is None:
            self.close_info = info
        if self._failure is not None or native is None:
            logger.error("the QUIC core failed again %s: %r", doing, exc)
            self._broken = True
            return
        logger.error("the QUIC core failed %s; closing", doing, exc_info=exc)
        self._failure = info
        try:
            if native.state not in OPEN_STATES:
                raise RuntimeError(f"the core is {native.state}")
            native.close(_INTERNAL_ERROR, PADDING_FRAME, info.reason.encode("utf8"))
        except Exception:
            self._broken = True

    def _receive_handshake(self, data: bytes, addr: Address, now: float) -> None:
        """Feed a handshake datagram packet by packet; TLS sees each one's
        CRYPTO before the next is decrypted (its keys may come from it)."""
        size = len(data)
        ends = packet_ends(data, self._cid_length)
        start = 0
        for i, end in enumerate(ends):
            # The last slice runs to the end of the datagram: trailing
            # padding counts towards the anti-amplification budget.
            stop = size if i == len(ends) - 1 else end
            packet = data[start:stop]
            native = self._native
            assert native is not None
            switched = self._follow_version(packet, native)
            report = native.receive_datagram(packet, addr, now, size)
            if switched is not None and not report[2]:
                native.set_version(switched)  # not genuine: back again
            if report[2] and data[start] & 0x80:
                self._learn_peer_cid(packet)
            if self._take_handshake_events(packet, addr, now):
                return  # the core was replaced (Retry, version negotiation)
            if self._forget_crypto_less_initial():
                return
            if self.handshake_complete and stop < size:
                native.receive_datagram(data[stop:], addr, now, size)
                return
            start = stop

    def _follow_version(self, packet: bytes, native: QuicConnectionCore) -> int | None:
        """Client: move to the compatible version a server's packet is in.

        With compatible version negotiation (RFC 9368) a server can answer
        a ClientHello that spans two Initials with an ACK in the original
        version, then continue in the negotiated one; qh3 follows a version
        change only before any packet decrypted.  The previous version is
        returned, to go back to if the packet does not decrypt.
        """
        if not self._is_client:
            return None
        version = long_header_version(packet)
        if version is None:
            return None
        current = int(native.version)
        if (
            version == current
            or version not in self._settings.supported_versions
            or {version, current} != COMPATIBLE_VERSIONS
        ):
            return None
        try:
            native.set_version(version)
        except ValueError:
            return None
        return current

    def _learn_peer_cid(self, packet: bytes) -> None:
        """The peer's initial source connection ID, for the TLS bridge's
        transport parameter check."""
        tls = self._tls
        if tls is None:
            return
        cid = source_cid(packet, self._cid_length)
        if cid is not None:
            # Even an empty one: the peer's transport parameters must match it.
            tls.remote_initial_source_connection_id = cid

    def _forget_crypto_less_initial(self) -> bool:
        """A server whose first packet had no CRYPTO frame: start over.

        RFC 9000 asks for CRYPTO in the first Initial a client *sends*; when
        that is lost, the first to arrive can be a PING-only probe (OpenSSL's
        client sends those), and qh3 closes the connection over it.  The
        attempt is forgotten instead (no packet counts as received), and
        the client's retransmitted ClientHello is a new first Initial.
        """
        native = self._native
        if (
            self._is_client
            or self._crypto_seen
            or native is None
            or native.state != "closing"
        ):
            return False
        error = native.local_error
        if error is None or error[0] != _PROTOCOL_VIOLATION:
            return False
        self._native = None
        self._tls = None
        self._pending.clear()
        self._terminated = True
        return True

    def _take_handshake_events(self, packet: bytes, addr: Address, now: float) -> bool:
        """Take every event the core has: CRYPTO to TLS at once, the rest
        kept for :meth:`dispatch_events`.  True if the core was replaced."""
        native = self._native
        while native is not None:
            event = native.next_event()
            if event is None:
                break
            kind = event[0]
            if kind == "crypto_data":
                self._crypto(event)
            elif kind == "retry":
                if self._on_retry(event, packet, addr, now):
                    return True
            elif kind == "version_negotiation":
                if self._on_version_negotiation(event, addr, now):
                    return True
            else:
                self._pending.append(event)
            native = self._native
        return False

    def received_a_packet(self) -> bool:
        """True once a packet from the peer was decrypted (or a close began).

        A job paused to sign counts too: signing follows a decrypted
        ClientHello.
        """
        if self.async_held or self.close_info is not None:
            return True
        native = self._native
        return native is not None and native.received_authenticated_packet

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        native = self._native
        if native is None or self.async_held or self._broken:
            return []
        self._streams.open_deferred(native)
        if self._key_update_wanted:
            self._try_key_update()
        out, self._sent_ahead = self._sent_ahead, []
        self._now = now
        self._transmit(native, now, out)
        self._reservations.sent(native, self._pmtu_ceiling)
        self._streams.flushed(native, now + TIMER_SLACK)  # a timer's moment
        self._streams.after_send(native)
        if out:
            self._prober.sent(now)
        if self._trace is not None:
            for datagram, _ in out:
                log_packets(self._trace, "packet_sent", datagram, self._cid_length)
        return out

    def _transmit(
        self, native: QuicConnectionCore, now: float, out: list[tuple[bytes, Address]]
    ) -> None:
        """Take every datagram the core has to send into ``out``."""
        try:
            self._poll_transmit(native, now, out)
        except Exception as exc:
            # Under the anti-amplification limit nothing may be sent until
            # the client sends more: not a failure.
            if not (
                self._amplification_limited(native, exc) or self._keys_not_ready(exc)
            ):
                self._core_failed(exc, "building a datagram")
                if not self._broken:  # the CONNECTION_CLOSE, if it can still
                    try:
                        self._poll_transmit(native, now, out)
                    except Exception as again:
                        self._core_failed(again, "building a datagram")

    def _events_may_orphan(self, native: QuicConnectionCore) -> bool:
        """Whether taking the core's events now could drop a stream that a
        frame it reserved still names (:mod:`.reservations`).  If so, it
        first sends what the congestion window lets through."""
        guard = self._reservations
        ending = self._streams.has_ending_streams
        if not (
            guard.at_risk(native, ending)
            and self.handshake_complete
            and self._failure is None
            and native.state in OPEN_STATES
            and native.has_events
        ):
            return False
        self._transmit(native, self._now, self._sent_ahead)
        guard.sent(native, self._pmtu_ceiling)
        return guard.at_risk(native, ending)

    def _amplification_limited(
        self, native: QuicConnectionCore, exc: Exception
    ) -> bool:
        """Whether ``exc`` is qh3's packet builder finding no room under the
        anti-amplification limit (a server before the client's address is
        validated: three times what it received, RFC 9000 section 8.1).
        qh3 raises there instead of sending nothing; it is not a failure."""
        if self._is_client or self.handshake_complete:
            return False
        if not isinstance(exc, RuntimeError) or "capacity exhausted" not in str(exc):
            return False
        path = native.active_path
        budget = 3 * int(path[4]) - int(path[3])
        return budget < self._settings.max_datagram_size

    def _keys_not_ready(self, exc: Exception) -> bool:
        """Whether ``exc`` is qh3's packet builder asked for a packet whose
        keys are not installed yet (1-RTT data queued during the handshake,
        as a 0-RTT answer is): the data waits for the keys; not a failure."""
        return (
            not self.handshake_complete
            and isinstance(exc, RuntimeError)
            and "missing" in str(exc)
            and "packet key" in str(exc)
        )

    @staticmethod
    def _poll_transmit(
        native: QuicConnectionCore, now: float, out: list[tuple[bytes, Address]]
    ) -> None:
        while True:
            transmit = native.poll_transmit(now)
            if transmit is None:
                return
            out.append((transmit[0], transmit[1]))

    def get_timer(self) -> float | None:
        native = self._native
        if native is None or self.async_held or self._broken:
            return None
        if self._sent_ahead:
            return self._now  # datagrams sent ahead of events wait to leave
        timer = native.get_timer()
        deadline = None if timer is None else float(timer[1]) - TIMER_EARLY
        for other in (
            self._keep_alive_at(),
            self._handshake_deadline(),
            self._probe_at(timer),
            self._nudge_at(),
            self._streams.flush_due_at(),
        ):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def _handshake_deadline(self) -> float | None:
        if self._heard_at is None or self.is_closing:
            return None
        return handshake_deadline(
            self._heard_at, self._settings.handshake_timeout, self.handshake_complete
        )

    def _probe_at(self, timer: tuple[str, float] | None) -> float | None:
        """When the facade's next probe is due (:mod:`.probing`), or None."""
        native = self._native
        if (
            not self.handshake_complete
            or timer is None
            or timer[0] != _LOSS_TIMER
            or native is None
            or not native.bytes_in_flight
            or self.is_closing
        ):
            return None
        interval = max_probe_interval(
            self.negotiated_idle_timeout(), self._settings.handshake_timeout, True
        )
        return self._prober.deadline(interval, float(timer[1]))

    def _nudge_at(self) -> float | None:
        """When a client nudges the server (:mod:`.probing`): until its
        handshake is confirmed (HANDSHAKE_DONE), once its core has sent
        nothing for a probe timeout (before completion it may have no probe
        armed; after, it can be stuck with a full congestion window and send
        nothing at all); None otherwise."""
        native = self._native
        if not self._is_client or self._confirmed or native is None or self.is_closing:
            return None
        interval = max_probe_interval(
            self.negotiated_idle_timeout(), self._settings.handshake_timeout, False
        )
        return self._prober.nudge_deadline(native.smoothed_rtt, interval)

    def _keep_alive_at(self) -> float | None:
        """When a keep-alive PING is due, or None (OpenSSL's ping deadline)."""
        keep_alive = self._keep_alive
        if keep_alive is None or not self.handshake_complete or self.is_closing:
            return None
        return keep_alive.deadline(self.negotiated_idle_timeout())

    def handle_timer(self, now: float) -> None:
        native = self._native
        if native is None or self.async_held or self._broken:
            return
        self._now = now
        abandon_at = self._handshake_deadline()
        if abandon_at is not None and abandon_at <= now:
            self._abandon_handshake()
            return
        try:
            ping_at = self._keep_alive_at()
            if ping_at is not None and ping_at <= now:
                assert self._keep_alive is not None
                native.send_ping(self._keep_alive.ping(now))
            timer = native.get_timer()
            probe_at = self._probe_at(timer)
            if probe_at is not None and probe_at <= now:
                native.send_ping(self._prober.probe(now))
            nudge_at = self._nudge_at()
            if nudge_at is not None and nudge_at <= now:
                self._nudge(native, now)
            native.handle_timer(now + TIMER_SLACK)
            if native.pto_count >= BLACK_HOLE_PTOS and self.path_mtu() > BASE_PLPMTU:
                self._black_hole()
        except Exception as exc:
            self._core_failed(exc, "handling its timer")

    def _nudge(self, native: QuicConnectionCore, now: float) -> None:
        """Hand the core the last CRYPTO byte again: an ack-eliciting packet
        of that epoch goes out (see :mod:`.probing`)."""
        again = self._prober.nudge(now)
        if again is None:
            return
        epoch, offset, data = again
        try:
            native.send_crypto(epoch, offset, data)
        except (ValueError, RuntimeError) as exc:
            # That epoch's keys are gone: its probes are the core's own.
            logger.debug("no nudge in epoch %d: %s", epoch, exc)

    def _abandon_handshake(self) -> None:
        """The handshake timeout expired: end at once, sending nothing (the
        peer of a half-open connection may not exist)."""
        if self.close_info is None:
            self.close_info = handshake_timeout_close(self._settings.handshake_timeout)
        self._native = None
        self._tls = None
        self._pending.clear()
        self._terminated = True

    def path_mtu(self) -> int:
        """The datagram size the core fills packets to now."""
        native = self._native
        return BASE_PLPMTU if native is None else int(native.active_path[5])

    def _black_hole(self) -> None:
        """Probe timeouts in a row with nothing acknowledged, above 1200
        bytes: packets of the discovered size no longer get through (RFC
        8899 section 4.3).  qh3 has no black-hole detection and can only
        lower its size by a lower peer limit: 1200 bytes, for good."""
        native = self._native
        parameters = self._applied_parameters
        if native is None or parameters is None:
            return
        logger.info(
            "path MTU black hole at %d bytes: back to %d", self.path_mtu(), BASE_PLPMTU
        )
        self._pmtu_ceiling = BASE_PLPMTU
        apply_peer_parameters(native, parameters, BASE_PLPMTU)

    # -- MODE_ASYNC --------------------------------------------------------

    def attach_async_host(self, host: JobHost) -> None:
        self._async_host = host

    @property
    def async_held(self) -> bool:
        host = self._async_host
        return host is not None and host.busy

    def resume_async(self, now: float) -> bool:
        host = self._async_host
        if host is None:
            return True
        outcome = host.resume(now)
        if outcome is Resumed.LOST:
            self.close(_INTERNAL_ERROR, "handshake abandoned", application=False)
        return outcome is not Resumed.ELSEWHERE

    # -- TLS --------------------------------------------------------------

    def _crypto(self, event: tuple[Any, ...]) -> None:
        """CRYPTO data from the peer: to TLS, and what TLS made to the core."""
        tls = self._tls
        native = self._native
        if tls is None or native is None:
            return
        self._crypto_seen = True
        _, epoch, offset, data = event
        self._guard_tls(
            lambda: tls.receive_crypto(
                Epoch(epoch), data, offset, version=native.version
            )
        )

    def _guard_tls(self, step: Callable[[], None]) -> None:
        """Run a TLS step, then move its output into the core; a TLS failure
        closes the connection (a CRYPTO_ERROR carrying the alert)."""
        try:
            if self._ip_server_name:
                tls = self._tls
                assert tls is not None
                with without_ip_server_name(tls):
                    step()
            else:
                step()
            self._drain_tls()
        except QuicTlsBridgeError as exc:
            self._fail(exc.error_code, int(exc.frame_type), exc.reason_phrase)
        except Exception as exc:
            # Not an alert: TLS itself failed.  The connection still ends
            # at once, with an error naming the exception.
            logger.error("TLS failed", exc_info=exc)
            tls = self._tls
            code, reason = tls_exception_close(
                exc,
                checking_certificate=tls is not None
                and tls.tls.state in _CHECKING_CERTIFICATE,
            )
            self._fail(code, _CRYPTO_FRAME, reason)

    def _fail(self, code: int, frame_type: int, reason: str) -> None:
        native = self._native
        if native is not None and native.state in OPEN_STATES:
            native.close(code, frame_type, reason.encode("utf8", "replace"))
        if self.close_info is None:
            tls = self._tls
            chain = [] if tls is None else tls.tls.peer_certificate_chain
            leaf = None if tls is None else tls.tls.peer_certificate
            self.close_info = tls_failure_info(
                code,
                frame_type,
                reason,
                self._configuration.server_name,
                self._is_client,
                self_signed_in_chain=any(c.self_signed for c in chain),
                leaf_der=None if leaf is None else leaf.public_bytes(),
            )

    def _drain_tls(self) -> None:
        tls = self._tls
        native = self._native
        assert tls is not None and native is not None
        self._version = tls.version
        last_crypto = self._prober.last_crypto if self._is_client else None
        relabel = self._relabel if self._ticket_label is not None else None
        if move_tls_output(tls, native, last_crypto, relabel) and self._is_client:
            self.early_data_attempted = True
        parameters = tls.remote_transport_parameters
        if parameters is not None and parameters is not self._applied_parameters:
            self._apply_parameters(parameters)
        while tls.next_event() is not None:
            pass  # HandshakeCompleted is read from the bridge below
        if tls.handshake_complete and not self.handshake_complete:
            self._complete_handshake()

    def _issue_ticket(self, ticket: SessionTicket) -> None:
        """TLS issued ``ticket`` (server): the label it gets, if another."""
        assert self._ticket_issuer is not None
        self._ticket_label = self._ticket_issuer(ticket)

    def _relabel(self, epoch: int, offset: int, data: bytes) -> bytes:
        """The NewSessionTicket (the server's one 1-RTT CRYPTO message) with
        the issuer's label in place of the TLS layer's."""
        label = self._ticket_label
        if label is None or epoch != Epoch.ONE_RTT or offset != 0:
            return data
        self._ticket_label = None
        try:
            return replace_ticket_label(data, label)
        except ValueError:
            logger.warning("session ticket sent unsealed: no NewSessionTicket found")
            return data

    def _apply_parameters(self, parameters: QuicTransportParameters) -> None:
        native = self._native
        tls = self._tls
        assert native is not None and tls is not None
        if (
            self._is_client
            and self.early_data_attempted
            and not self._zero_rtt_resolved
        ):
            if not tls.tls.early_data_accepted:
                native.reject_zero_rtt()
            self._zero_rtt_resolved = True
        apply_peer_parameters(native, parameters, self._pmtu_ceiling)
        self._applied_parameters = parameters
        self._peer_parameters = parameters

    def _complete_handshake(self) -> None:
        tls = self._tls
        native = self._native
        assert tls is not None and native is not None
        context = tls.tls
        self.handshake_complete = True
        self.alpn_protocol = context.alpn_negotiated
        self.session_resumed = bool(context.session_resumed)
        self.early_data_accepted = bool(context.early_data_accepted)
        native.handshake_complete()
        if self._is_client and not self.early_data_accepted:
            if self.early_data_attempted and not self._zero_rtt_resolved:
                native.reject_zero_rtt()
                self._zero_rtt_resolved = True
            else:
                native.discard_keys(int(Epoch.ZERO_RTT))
        self._streams.handshake_completed()
        self._pending.append(("handshake_completed",))

    # -- Retry and Version Negotiation (client) ----------------------------

    def _on_retry(
        self, event: tuple[Any, ...], packet: bytes, addr: Address, now: float
    ) -> bool:
        """A Retry: start over with its token, if it is genuine and the first."""
        _, token, scid = event
        if not self._is_client or self._retried or not packet:
            return False
        if not retry_is_genuine(packet, self._initial_dcid, self._version or 1):
            return False
        if not token:
            return False
        self._retried = True
        self._retry_scid = scid
        self._restart(addr, scid, now, token)
        return True

    def _on_version_negotiation(
        self, event: tuple[Any, ...], addr: Address, now: float
    ) -> bool:
        """Version Negotiation: start over in a common version, or give up."""
        offered = list(event[1])
        if not self._is_client or self._negotiated or self._version in offered:
            return False
        common = [v for v in self._settings.supported_versions if v in offered]
        if not common:
            self.close_info = ConnCloseInfo(
                error_code=_INTERNAL_ERROR,
                frame_type=None,
                reason="Could not find a common protocol version",
                is_local=True,
                is_transport=False,
            )
            self._native = None
            self._tls = None
            self._terminated = True
            return True
        self._negotiated = True
        self._version = int(common[0])
        self._restart(addr, self._initial_dcid, now, None)
        return True

    def _restart(
        self, addr: Address, dcid: bytes, now: float, token: bytes | None
    ) -> None:
        self._pending.clear()
        self._start(addr, dcid, now)
        native = self._native
        tls = self._tls
        assert native is not None and tls is not None
        if token is not None:
            native.set_initial_token(token)
        # Streams opened before (0-RTT) are opened again on the new core.
        self._streams.restart()
        self._prober.last_crypto.clear()
        self._guard_tls(tls.start)

    # -- reporting --------------------------------------------------------

    def dispatch_events(self) -> None:
        """Report everything that happened since the last call to the sink."""
        if self.async_held:
            return
        pending = self._pending
        while pending:
            self._report(pending.popleft())
        native = self._native
        streams = self._streams
        if native is not None:
            if not self._events_may_orphan(native):
                self._report_core_events(native)
            streams.open_deferred(native)
            if streams.has_unconfirmed:
                streams.confirm_if_quiescent(native)
        self._report_close_state()

    def _report_core_events(self, native: QuicConnectionCore) -> None:
        """Take the core's events and report them, until it has none or the
        application holds enough unread (credit then waits in the core)."""
        pending = self._pending
        streams = self._streams
        while not (streams.holds_enough and native.state in OPEN_STATES):
            event = native.next_event()
            if event is None:
                return
            kind = event[0]
            if kind == "crypto_data":
                self._crypto(event)
                while pending:
                    self._report(pending.popleft())
            elif kind not in ("retry", "version_negotiation"):
                self._report(event)

    def _report(self, event: tuple[Any, ...]) -> None:
        sink = self._sink
        if self._streams.report(sink, event):
            return
        kind = event[0]
        if kind == "handshake_completed":
            sink.on_handshake_complete(
                self.alpn_protocol, self.session_resumed, self.early_data_accepted
            )
        elif kind == "handshake_done":
            self._confirmed = True
            native = self._native
            if native is not None:
                native.handshake_confirmed()
        elif kind == "datagram":
            sink.on_datagram_frame(bytes(event[1]))
        elif kind == "connection_id_issued":
            sink.on_connection_id_issued(event[1])
        elif kind == "connection_id_retired":
            sink.on_connection_id_retired(event[1])
        elif kind == "peer_closed":
            if self.close_info is None:
                self.close_info = peer_close_info(event)
        elif kind == "protocol_error":
            if self.close_info is None:
                self.close_info = protocol_error_info(event)
        elif kind == "connection_terminated":
            self._terminated = True
            if self.close_info is None:
                self.close_info = termination_info(event)

    def _report_close_state(self) -> None:
        native = self._native
        if (
            self.close_info is None
            and native is not None
            and native.state not in OPEN_STATES
        ):
            error = native.local_error
            if error is not None:
                self.close_info = local_error_info(error)
        self._close_report.report(self._sink, self.close_info, self.is_terminated)

    # -- state ------------------------------------------------------------

    @property
    def is_closing(self) -> bool:
        native = self._native
        if self._broken or (native is not None and native.state not in OPEN_STATES):
            return True
        return self.close_info is not None

    @property
    def is_terminated(self) -> bool:
        if self._broken:
            return True
        native = self._native
        if native is not None:
            return native.state == "terminated"
        return self._terminated

    @property
    def version(self) -> int | None:
        native = self._native
        return None if native is None else int(native.version)

    @property
    def cipher_suite(self) -> int | None:
        tls = self._tls
        suite = None if tls is None else tls.cipher_suite
        return None if suite is None else int(suite)

    def idle_timeout(self) -> float:
        return float(self._settings.idle_timeout)

    def peer_idle_timeout(self) -> float | None:
        parameters = self._peer_parameters
        if parameters is None:
            return None
        value = parameters.max_idle_timeout
        return None if value is None else value / 1000

    def peer_max_datagram_frame_size(self) -> int | None:
        parameters = self._peer_parameters
        return None if parameters is None else parameters.max_datagram_frame_size

    def negotiated_idle_timeout(self) -> float | None:
        return negotiated_idle_timeout(self.idle_timeout(), self.peer_idle_timeout())

    # -- DATAGRAM frames (RFC 9221) ----------------------------------------

    def max_datagram_payload(self) -> int:
        """The largest DATAGRAM payload that fits the peer's limit and one
        1-RTT packet (0 before the handshake completed, or if the peer
        takes no DATAGRAM frames)."""
        peer = self.peer_max_datagram_frame_size()
        if peer is None or not self.handshake_complete:
            return 0
        # 1200 bytes, the size every path carries: a frame queued for a
        # larger size could be stranded by a fallback (see path_mtu).
        return datagram_payload_limit(peer, BASE_PLPMTU)

    def send_datagram_frame(self, data: bytes) -> None:
        """Queue a DATAGRAM frame; the core sends it once, never again."""
        native = self._native
        if native is None or native.state not in OPEN_STATES:
            return  # closing: nothing more goes out
        native.send_datagram(data)

    # -- streams (kept in :mod:`.streams`) ----------------------------------

    def local_streams_available(self, unidirectional: bool) -> int:
        return self._streams.local_streams_available(self._native, unidirectional)

    def remote_streams_available(self, unidirectional: bool) -> int:
        return self._streams.remote_streams_available(unidirectional)

    def open_stream(self, unidirectional: bool) -> int:
        return self._streams.open_stream(self._native, unidirectional)

    def send_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        self._streams.send_stream_data(self._native, stream_id, data, fin)

    def send_credit(self, stream_id: int) -> int:
        return self._streams.send_credit(stream_id, self._peer_parameters)

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to the stream and not known to be acknowledged
        (:meth:`~.streams.StreamLedger.send_buffered`)."""
        return self._streams.send_buffered(self._native, stream_id)

    def connection_send_credit(self) -> int:
        return self._streams.connection_send_credit(self._peer_parameters)

    def send_buffered_total(self) -> int:
        return self._streams.send_buffered_total(self._native)

    def send_fully_acked(self, stream_id: int) -> bool:
        return self._streams.send_fully_acked(self._native, stream_id)

    def all_sends_acked(self) -> bool:
        return self._streams.all_sends_acked(self._native)

    def consume(self, stream_id: int, nbytes: int) -> None:
        self._streams.consume(stream_id, nbytes)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._reservations.control_asked()
        self._streams.reset_stream(self._native, stream_id, error_code)

    def stop_sending(self, stream_id: int, error_code: int) -> None:
        self._reservations.control_asked()
        self._streams.stop_sending(self._native, stream_id, error_code)

    def release_stream(self, stream_id: int) -> None:
        """Nothing to do: qh3 returns a peer's stream slot as soon as the
        stream is finished on the wire (Capability.STREAM_CREDIT_ON_RELEASE
        is not claimed)."""

    def stream_discarded(self, stream_id: int) -> bool:
        return self._streams.stream_discarded(stream_id)

    def forget_stream(self, stream_id: int) -> None:
        self._streams.forget_stream(stream_id)

    # -- connection-wide --------------------------------------------------

    def close(self, error_code: int, reason: str, *, application: bool = True) -> None:
        native = self._native
        frame_type = None if application else PADDING_FRAME
        if native is not None and native.state in OPEN_STATES:
            try:
                native.close(error_code, frame_type, reason.encode("utf8"))
            except (ValueError, RuntimeError):
                logger.exception("the QUIC core refused to close")
        elif native is None:
            self._terminated = True
        if self.close_info is None:
            self.close_info = ConnCloseInfo(
                error_code=error_code,
                frame_type=frame_type,
                reason=reason,
                is_local=True,
                is_transport=not application,
            )

    def request_key_update(self) -> None:
        """Start a 1-RTT key update, or as soon as RFC 9001 allows one.

        An endpoint may not update again before a packet of the current key
        phase was acknowledged (section 6.1), nor before the handshake is
        confirmed; qh3 refuses such a request, and quicconn, as OpenSSL,
        keeps it and makes it when allowed.
        """
        if self._native is None:
            raise ValueError("no connection to update keys on")
        self._key_update_wanted = True
        self._try_key_update()

    def _try_key_update(self) -> None:
        native = self._native
        if native is None or native.state not in OPEN_STATES:
            self._key_update_wanted = False
            return
        try:
            native.request_key_update()
        except (ValueError, RuntimeError):
            return  # not yet allowed: tried again before each send
        self._key_update_wanted = False

    def finish_qlog(self) -> None:
        trace = self._trace
        logger_ = self._configuration.quic_logger
        if trace is not None and logger_ is not None:
            self._trace = None
            logger_.end_trace(trace)


__all__ = ["TIMER_SLACK", "Qh3Core"]
