"""Path MTU discovery for aioquic, which sends every datagram at one fixed size.

:class:`MtuDiscoveringConnection` is the part of
:class:`~.connection.AdaptedQuicConnection` that runs quicconn's DPLPMTUD
search (:class:`~quicconn._core.pmtud.PathMtuSearch`) over aioquic: it
starts at 1200 bytes, sends probes once the handshake is confirmed, and
moves aioquic's datagram size to what the search validated (RFC 9000
section 14.3, RFC 8899).  Both clients and servers probe.

* **A probe** is one 1-RTT packet of exactly the probed size: a PING whose
  delivery handler reports the probe's fate, then PADDING.  It is not
  counted in flight (RFC 9000 section 14.4: losing a probe says nothing
  about congestion), so its loss never shrinks the congestion window; it
  still arms the probe timeout like any ack-eliciting packet.
* **The size** aioquic builds packets with (``_max_datagram_size``) and the
  one its congestion controller counts in change together.  Its pacer
  keeps counting 1200-byte packets: it paces packets, not bytes, at
  cwnd/srtt, so with 1472-byte packets the pace is about 1.23 x cwnd/srtt
  (RFC 9002 section 7.7 suggests 1.25 x).  Moving the pacer too armed
  pacing timers a few microseconds apart that sent nothing (a bucket
  emptied by one packet), which the conformance suite caught.
* **The ceiling** is ``CoreSettings.max_datagram_size``, lowered to the
  peer's max_udp_payload_size transport parameter.
* **Black holes** (RFC 8899 section 4.3): two probe timeouts in a row with
  no acknowledgement in between, above 1200 bytes, fall back to 1200 at
  once; loss events made only of full-sized packets, three in a row, make
  the search confirm the size with a probe of it (three of those lost: a
  black hole).  DATAGRAM frames queued for the larger size that no longer
  fit are dropped (they are unreliable; aioquic would hold one forever).
* **A new path** (migration) starts again at 1200.

aioquic privates this reaches (17), all for the above: the connection's
``_max_datagram_size``, ``_network_paths``, ``_cryptos``, ``_peer_cid``,
``_peer_token``, ``_spin_bit``, ``_version``, ``_quic_logger``,
``_is_client``, ``_packet_number`` (through ``_flush_builder``, called),
``_handshake_confirmed``, ``_state``, ``_close_pending``,
``_datagrams_pending``; the recovery's ``_loss._pto_count`` and
``_loss._time_of_last_sent_ack_eliciting_packet``, and the
``_max_datagram_size`` of its congestion controller, ``_loss._cc``.
Overridden: ``_parse_transport_parameters`` (the peer's
max_udp_payload_size).  The congestion controller's ``on_packets_lost`` is
wrapped per connection to see lost packets' sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    pull_quic_transport_parameters,
)
from aioquic.quic.packet_builder import (
    QuicDeliveryState,
    QuicPacketBuilder,
    QuicSentPacket,
)
from aioquic.tls import Epoch

from ..pmtud import BASE_PLPMTU, BLACK_HOLE_PTOS, PathMtuSearch

#: Loss events made only of packets above the base size, in a row, after
#: which the search confirms its size with a probe.
SUSPICIOUS_LOSSES = 3
#: IPv4 addresses mapped into IPv6 (a dual-stack socket) are IPv4 paths.
_MAPPED_PREFIX = "::ffff:"


class _ProbeBuilder(QuicPacketBuilder):
    """Builds a probe packet that does not count in flight."""

    def flush(self) -> tuple[list[bytes], list[QuicSentPacket]]:
        datagrams, packets = super().flush()
        for packet in packets:
            packet.in_flight = False
        return datagrams, packets


def _is_ipv6(addr: Any) -> bool:
    host = str(addr[0]) if addr else ""
    return ":" in host and not host.startswith(_MAPPED_PREFIX)


class MtuDiscoveringConnection(QuicConnection):
    """``QuicConnection`` whose datagram size follows path MTU discovery."""

    def __init__(self, *, pmtu_ceiling: int = BASE_PLPMTU, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The largest datagram size to probe for (``max_datagram_size``).
        self.pmtu_ceiling = max(pmtu_ceiling, BASE_PLPMTU)
        #: The peer's max_udp_payload_size transport parameter, once known.
        self._peer_max_udp_payload: int | None = None
        #: The search of the current path, made at the first chance to probe.
        self.mtu_search: PathMtuSearch | None = None
        self._mtu_path: Any = None
        self._suspicious_losses = 0
        self._watched_cc: Any = None

    # -- what the core asks -------------------------------------------------

    def path_mtu(self) -> int:
        """The datagram size packets are built to now."""
        return int(self._max_datagram_size)

    # -- probing --------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        datagrams = super().datagrams_to_send(now=now)
        if (
            self.pmtu_ceiling > BASE_PLPMTU
            and self._handshake_confirmed
            and self._state is QuicConnectionState.CONNECTED
            and not self._close_pending
        ):
            datagrams += self._send_mtu_probe(now)
        return datagrams

    def _current_search(self) -> PathMtuSearch:
        """The search for the active path; a new path starts from scratch."""
        path = self._network_paths[0]
        search = self.mtu_search
        if search is None or path.addr != self._mtu_path:
            ceiling = self.pmtu_ceiling
            if self._peer_max_udp_payload is not None:
                ceiling = min(ceiling, self._peer_max_udp_payload)
            # Over IPv6 the MTU of the ceiling carries 20 bytes less.
            plateaus = (ceiling - 20,) if _is_ipv6(path.addr) else ()
            search = self.mtu_search = PathMtuSearch(ceiling, plateaus=plateaus)
            self._mtu_path = path.addr
            self._set_datagram_size(search.current)
            self._watch_losses()
        return search

    def _send_mtu_probe(self, now: float) -> list[tuple[bytes, Any]]:
        search = self._current_search()
        size = search.next_probe(now)
        if size is None:
            return []
        crypto = self._cryptos[Epoch.ONE_RTT]
        if not crypto.send.is_valid():
            return []
        path = self._network_paths[0]
        version = self._version
        assert version is not None  # set before any packet was built
        builder = _ProbeBuilder(
            host_cid=self.host_cid,
            is_client=self._is_client,
            max_datagram_size=size,
            packet_number=self._packet_number,
            peer_cid=self._peer_cid.cid,
            peer_token=self._peer_token,
            quic_logger=self._quic_logger,
            spin_bit=self._spin_bit,
            version=version,
        )
        builder.start_packet(QuicPacketType.ONE_RTT, crypto)
        token = search.probe_sent(size)
        builder.start_frame(
            QuicFrameType.PING, handler=self._on_mtu_probe, handler_args=(token,)
        )
        padding = builder.remaining_buffer_space
        if padding > 0:
            # One PADDING frame is one zero byte: the frame type, then zeros.
            buf = builder.start_frame(QuicFrameType.PADDING, capacity=padding)
            buf.push_bytes(bytes(padding - 1))
        datagrams = self._flush_builder(
            builder=builder, network_path=path, peer_cid=self._peer_cid.cid, now=now
        )
        # Not in flight, but ack-eliciting: the probe timeout runs from it.
        self._loss._time_of_last_sent_ack_eliciting_packet = now
        return datagrams

    def _on_mtu_probe(self, delivery: QuicDeliveryState, token: int) -> None:
        search = self.mtu_search
        if search is None:
            return
        if delivery == QuicDeliveryState.ACKED:
            if search.probe_acked(token):
                self._set_datagram_size(search.current)
            self._suspicious_losses = 0
        elif search.probe_lost(token):
            self._fall_back(search.current)

    # -- black holes ------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now=now)
        search = self.mtu_search
        if (
            search is not None
            and self._loss._pto_count >= BLACK_HOLE_PTOS
            and search.black_hole()
        ):
            self._fall_back(search.current)

    def _watch_losses(self) -> None:
        """See the sizes of packets the congestion controller is told were
        lost (PTO retransmissions and probes never get there)."""
        cc = self._loss._cc
        if cc is self._watched_cc:
            return
        self._watched_cc = cc
        lost = cc.on_packets_lost

        def on_packets_lost(*, now: float, packets: Iterable[QuicSentPacket]) -> None:
            packets = list(packets)
            lost(now=now, packets=packets)
            self._packets_lost(packets)

        cc.on_packets_lost = on_packets_lost  # type: ignore[method-assign]

    def _packets_lost(self, packets: list[QuicSentPacket]) -> None:
        search = self.mtu_search
        if search is None or search.current <= search.base:
            return
        if packets and all(p.sent_bytes > search.base for p in packets):
            self._suspicious_losses += 1
            if self._suspicious_losses >= SUSPICIOUS_LOSSES:
                self._suspicious_losses = 0
                search.confirm()
        else:
            self._suspicious_losses = 0

    def _fall_back(self, size: int) -> None:
        self._set_datagram_size(size)
        # DATAGRAM frames queued for the larger size may no longer fit one
        # packet; they are unreliable, and one stuck at the head of aioquic's
        # queue would block the rest forever.
        limit = size - (1 + 20 + 4 + 16) - 3
        pending = self._datagrams_pending
        if any(len(data) > limit for data in pending):
            kept = [data for data in pending if len(data) <= limit]
            pending.clear()
            pending.extend(kept)

    def _set_datagram_size(self, size: int) -> None:
        """Build packets of ``size`` bytes from now on, and count in them."""
        self._max_datagram_size = size
        cc = self._loss._cc
        if hasattr(cc, "_max_datagram_size"):
            cc._max_datagram_size = size

    # -- the peer's limit -------------------------------------------------------

    def _parse_transport_parameters(
        self, data: bytes, from_session_ticket: bool = False
    ) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if from_session_ticket:
            return
        parameters = pull_quic_transport_parameters(Buffer(data=data))
        limit = parameters.max_udp_payload_size
        if limit is not None:
            self._peer_max_udp_payload = int(limit)
            search = self.mtu_search
            if search is not None and search.limit(int(limit)):
                self._fall_back(search.current)


__all__ = ["SUSPICIOUS_LOSSES", "MtuDiscoveringConnection"]
