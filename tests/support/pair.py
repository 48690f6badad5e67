"""A quicconn client and listener joined by a DatagramPair on a FakeClock."""

from __future__ import annotations

from dataclasses import dataclass, field

import quicconn
from quicconn.testing import DatagramPair, FakeClock
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]


@dataclass
class PairedEndpoints:
    clock: FakeClock
    pair: DatagramPair
    client: quicconn.Connection
    listener: quicconn.Listener
    server: quicconn.Connection | None = None
    steps: list[float] = field(default_factory=list)

    def tick_all(self) -> None:
        self.client.handle_events()
        self.listener.handle_events()
        if self.server is None:
            self.server = self.listener.accept_connection(
                quicconn.ACCEPT_CONNECTION_NO_BLOCK
            )

    def next_deadline(self) -> float | None:
        """Seconds until either side has something to do: a timer, or a
        datagram arriving (which would make a socket readable)."""
        timeouts = [
            t
            for t in (
                self.client.get_event_timeout(),
                self.listener.get_event_timeout(),
            )
            if t is not None
        ]
        now = self.clock.now()
        for endpoint in (self.pair.client, self.pair.server):
            arrival = endpoint.next_arrival()
            if arrival is not None:
                timeouts.append(max(0.0, arrival - now))
        return min(timeouts) if timeouts else None

    def step(self) -> float:
        """Advance the clock to the next deadline and tick both sides."""
        wait = self.next_deadline()
        if wait is None:
            raise AssertionError("no timer armed on either side")
        self.clock.advance(wait)
        self.steps.append(wait)
        self.tick_all()
        return wait

    def handshake(self, limit: int = 50) -> None:
        for _ in range(limit):
            try:
                self.client.connect()
            except quicconn.WantReadError:
                self.tick_all()
                if self.pair.in_flight() == 0:
                    self.step()
                continue
            while self.server is None:
                self.tick_all()
            return
        raise AssertionError("handshake did not complete")


def make_pair(
    pki: CertFiles,
    *,
    validate: bool = False,
    client_idle_ms: int | None = None,
    datagram_frame_size: int | None = None,
) -> PairedEndpoints:
    clock = FakeClock()
    pair = DatagramPair(clock)
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(ALPN)
    sctx.set_max_datagram_frame_size(datagram_frame_size)
    flags = 0 if validate else quicconn.LISTENER_FLAG_NO_VALIDATE
    listener = sctx.new_listener(pair.server, flags)
    listener.set_blocking_mode(False)
    listener.listen()
    cctx = quicconn.Context(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(ALPN)
    cctx.set_max_datagram_frame_size(datagram_frame_size)
    client = quicconn.Connection(cctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    if client_idle_ms is not None:
        client.set_value_uint(
            quicconn.VALUE_CLASS_FEATURE_REQUEST,
            quicconn.VALUE_QUIC_IDLE_TIMEOUT,
            client_idle_ms,
        )
    return PairedEndpoints(clock, pair, client, listener)
