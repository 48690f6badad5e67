"""Half-open connections: silent ClientHellos against a listener.

A client that sends a ClientHello and goes silent makes a server start a
handshake and wait.  Such connections must not take the places a real
client needs (the accept queue counts only completed handshakes), must end
soon (the handshake timeout, 5 s by default, not the 30 s idle timeout) and
are bounded in number (the oldest makes room for a new one).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import quicconn
from quicconn._objects.connection import channel_of
from quicconn._objects.listener import port_of
from quicconn.testing import DatagramPair, FakeClock
from tests.support.certs import CertFiles
from tests.support.hostile import silent_client_hellos
from tests.support.loop import pump

ALPN = ["quicconn-test"]


def server_context(pki: CertFiles) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    return ctx


def client_context(pki: CertFiles) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    return ctx


class Flood:
    """Sends recorded first flights to ``target`` from a thread, at
    ``per_second`` flights a second, until it is stopped (after the last,
    it starts over: ClientHellos sent again, still never continued), or
    for at most a minute."""

    def __init__(
        self, flights: list[list[bytes]], target: tuple[str, int], per_second: float
    ) -> None:
        self.flights = flights
        self.target = target
        self.interval = 1.0 / per_second
        self.sent = 0
        self.bytes = 0
        self.elapsed = 0.0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        i = 0
        while self.elapsed < 60.0:
            due = started + i * self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            for datagram in self.flights[i % len(self.flights)]:
                self._sock.sendto(datagram, self.target)
                self.bytes += len(datagram)
            i += 1
            self.sent = i
            self.elapsed = time.monotonic() - started

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def listener(pki: CertFiles) -> Iterator[quicconn.Listener]:
    # Retry off: an attacker that answers Retry gets exactly this far.
    lst = server_context(pki).new_listener(
        ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    lst.set_blocking_mode(False)
    lst.listen()
    yield lst
    lst.free()


def test_silent_client_hellos_do_not_lock_out_a_real_client(
    pki: CertFiles, listener: quicconn.Listener
) -> None:
    """More silent ClientHellos than the accept queue has places (256), at
    well over 10 KB/s, against a server that is not accepting: a real
    client still connects, and is the one connection the server accepts."""
    target = ("127.0.0.1", int(listener.local_address()[1]))
    assert listener.max_pending_connections == 256
    flights = silent_client_hellos(client_context(pki), 400, target)
    with Flood(flights, target, per_second=100) as flood:
        # The server hears more ClientHellos than its accept queue holds ...
        stats = listener.stats
        pump(
            [listener],
            lambda: stats.connections_accepted + stats.connections_refused > 300,
            timeout=30,
            what="300 silent ClientHellos",
        )
        # ... and, the flood going on, a real client connects.
        client = quicconn.Connection(client_context(pki))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        client.set_fd(sock)
        client.set1_initial_peer_addr(target)
        client.set1_host("localhost")
        client.set_blocking_mode(False)
        accepted: list[quicconn.Connection] = []

        def connected() -> bool:
            try:
                client.connect()
            except quicconn.WantReadError:
                return False
            return listener.get_accept_connection_queue_len() > 0

        try:
            pump([listener, client], connected, timeout=30, what="the real client")
            assert flood.running, "the flood ended before the client connected"
            while (conn := listener.accept_connection()) is not None:
                accepted.append(conn)
            # Only the completed handshake was queued.
            assert len(accepted) == 1
            host, port = sock.getsockname()
            assert channel_of(accepted[0]).describe_peer() == f"{host}:{port}"
            assert listener.stats.connections_refused == 0
            rate = flood.bytes / flood.elapsed
            assert rate > 10_000, f"the flood ran at {rate:.0f} B/s"
        finally:
            for conn in accepted:
                conn.free()
            client.free()
            sock.close()


# -- on a fake clock ---------------------------------------------------------


def paired(
    pki: CertFiles, **settings: float
) -> tuple[FakeClock, DatagramPair, quicconn.Listener, quicconn.Connection]:
    clock = FakeClock()
    pair = DatagramPair(clock)
    ctx = server_context(pki)
    for name, value in settings.items():
        setattr(ctx, name, value)
    lst = ctx.new_listener(pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    lst.listen()
    client = quicconn.Connection(client_context(pki))
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    return clock, pair, lst, client


def run_until(
    clock: FakeClock,
    objs: list[quicconn.Listener],
    done: Callable[[], bool],
    limit: float,
) -> float:
    """Step the clock through ``objs``' deadlines until ``done()``; the time
    it took (fail past ``limit`` seconds)."""
    start = clock.now()
    while not done():
        waits = [t for obj in objs if (t := obj.get_event_timeout()) is not None]
        assert waits, "no timer is armed"
        clock.advance(min(waits))
        for obj in objs:
            obj.handle_events()
        assert clock.now() - start <= limit, f"not done within {limit} s"
    return clock.now() - start


@pytest.mark.usefixtures("each_core")
@pytest.mark.parametrize("handshake_timeout", [5.0, 2.0])
def test_a_half_open_connection_ends_at_the_handshake_timeout(
    pki: CertFiles, handshake_timeout: float
) -> None:
    settings = {} if handshake_timeout == 5.0 else {"handshake_timeout": 2.0}
    clock, pair, lst, client = paired(pki, **settings)
    try:
        with pytest.raises(quicconn.WantReadError):
            client.connect()
        lst.handle_events()  # the ClientHello: a connection is made ...
        port = port_of(lst)
        assert port.live == 1
        assert lst.get_accept_connection_queue_len() == 0  # ... half-open
        client.free()  # and its client goes silent
        pair.to_client.blackhole = True
        took = run_until(clock, [lst], lambda: port.live == 0, limit=30.0)
        # Gone at the handshake timeout, not at the 30 s idle timeout.
        assert took == pytest.approx(handshake_timeout, abs=0.01)
        assert lst.stats.handshakes_timed_out == 1
        assert lst.get_event_timeout() is None  # nothing of it is left
    finally:
        lst.free()


@pytest.mark.usefixtures("each_core")
def test_a_client_gives_up_a_silent_server_at_its_handshake_timeout(
    pki: CertFiles,
) -> None:
    clock = FakeClock()
    pair = DatagramPair(clock)
    pair.to_server.blackhole = True  # nobody answers
    ctx = client_context(pki)
    ctx.handshake_timeout = 1.5
    client = quicconn.Connection(ctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    start = clock.now()
    try:
        with pytest.raises(quicconn.ConnectionTerminatedError) as failure:
            while True:
                try:
                    client.connect()
                except quicconn.WantReadError:
                    timeout = client.get_event_timeout()
                    assert timeout is not None
                    clock.advance(timeout)
        assert clock.now() - start == pytest.approx(1.5, abs=0.01)
        assert "1.5 s handshake timeout" in str(failure.value)
        info = client.get_conn_close_info()
        assert info is not None and info.is_local
        assert info.error_code == quicconn.QUIC_LOCAL_ERR_IDLE_TIMEOUT
        assert pair.to_server.sent > 1  # it probed before giving up
    finally:
        client.free()


def test_the_oldest_half_open_connection_makes_room(pki: CertFiles) -> None:
    clock, pair, lst, client = paired(pki)
    lst.max_handshakes = 4
    try:
        flights = silent_client_hellos(client_context(pki), 6, pair.SERVER_ADDRESS)
        for i, flight in enumerate(flights):
            for datagram in flight:
                lst.inject_net_dgram(datagram, ("192.0.2.66", 40000 + i))
            lst.handle_events()
        port = port_of(lst)
        assert port.live == 4
        assert lst.stats.handshakes_evicted == 2
        assert lst.stats.connections_refused == 0
        # A real client still gets through, evicting the oldest again.
        while True:
            try:
                client.connect()
                break
            except quicconn.WantReadError:
                client.handle_events()
                lst.handle_events()
                if pair.in_flight() == 0:
                    timeout = min(
                        t
                        for t in (client.get_event_timeout(), lst.get_event_timeout())
                        if t is not None
                    )
                    clock.advance(timeout)
        lst.handle_events()
        assert lst.get_accept_connection_queue_len() == 1
        assert lst.stats.handshakes_evicted == 3
    finally:
        client.free()
        lst.free()


@pytest.mark.usefixtures("each_core")
def test_an_initial_that_does_not_decrypt_never_evicts_a_half_open_connection(
    pki: CertFiles,
) -> None:
    """With the half-open table full, a new Initial is decrypted before it
    may cost a real client its place: forged ones (a real Initial with its
    payload damaged) are dropped and
    evict nobody; with room, the new connection's own core finds them out
    and frees them."""
    _clock, pair, lst, client = paired(pki)
    lst.max_handshakes = 4
    try:
        *real, spare = silent_client_hellos(client_context(pki), 5, pair.SERVER_ADDRESS)
        forged = bytearray(spare[0])
        forged[200:240] = bytes(40)  # inside the encrypted payload
        port = port_of(lst)
        lst.inject_net_dgram(bytes(forged), ("192.0.2.77", 40100))
        lst.handle_events()
        assert port.live == 0  # room: created, found out by its core, freed
        assert lst.stats.datagrams_dropped == 1
        for i, flight in enumerate(real):
            for datagram in flight:
                lst.inject_net_dgram(datagram, ("192.0.2.66", 40000 + i))
            lst.handle_events()
        assert port.live == 4
        lst.inject_net_dgram(bytes(forged), ("192.0.2.77", 40101))
        lst.handle_events()
        assert port.live == 4
        assert lst.stats.handshakes_evicted == 0
        assert lst.stats.datagrams_dropped == 2
        # The undamaged Initial still makes room, as a real client's would.
        lst.inject_net_dgram(spare[0], ("192.0.2.77", 40102))
        lst.handle_events()
        assert lst.stats.handshakes_evicted == 1
    finally:
        client.free()
        lst.free()


def test_the_half_open_limits_are_settings() -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    assert ctx.handshake_timeout == 5.0
    assert ctx.max_handshakes == 1024
    ctx.handshake_timeout = 0  # off: only the idle timeout applies
    assert ctx.handshake_timeout == 0.0
    with pytest.raises(ValueError, match="handshake_timeout"):
        ctx.handshake_timeout = -1
