"""100,000 malformed datagrams during live transfers.

Random bytes, captured datagrams truncated, bit-flipped and replayed,
unknown versions, short headers aimed at live connection IDs, Initials that
do not decrypt, real packets coalesced with junk (tests/support/junk.py),
hypothesis choosing the mix.  Most are fed to a listener and its client on
the in-memory pair (``inject_net_dgram``, the same routing as the socket's
datagrams, on a fake clock so that the suite stays fast); a share goes over
real loopback UDP while two clients stream through the listener.  The
transfers must come back byte-exact, nothing may be raised out of
``handle_events()``, and nothing may be logged as a core failure.
"""

from __future__ import annotations

import hashlib
import logging
import random
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quicconn
from quicconn._objects.connection import channel_of
from quicconn._objects.listener import port_of
from quicconn.testing import DatagramPair, FakeClock
from tests.support.certs import CertFiles
from tests.support.echo import EchoServer
from tests.support.junk import KINDS, make_datagram

ALPN = ["quicconn-test"]
#: Examples x datagrams per example: the pair's share of the 100,000 ...
EXAMPLES = 90
PER_EXAMPLE = 1000
#: ... and what goes over real UDP.
OVER_UDP = 10_000
#: A tenth of the injected datagrams go to the client, the rest to the listener.
TO_CLIENT = 0.1

#: The UDP barrage's sender: length-prefixed datagrams on stdin, sent to
#: argv's host and port from two sockets, with a 5 ms pause every 200.
_JUNK_SENDER = """
import socket, sys, time
data = sys.stdin.buffer.read()
target = (sys.argv[1], int(sys.argv[2]))
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
offset = count = 0
while offset < len(data):
    size = int.from_bytes(data[offset:offset + 2], "big")
    socks[count % 2].sendto(data[offset + 2:offset + 2 + size], target)
    offset += 2 + size
    count += 1
    if count % 200 == 0:
        time.sleep(0.005)
"""


def _contexts(pki: CertFiles) -> tuple[quicconn.Context, quicconn.Context]:
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(ALPN)
    cctx = quicconn.Context(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(ALPN)
    for ctx in (sctx, cctx):
        ctx.idle_timeout = 600  # the barrage must not outlast a live connection
    return sctx, cctx


class Streamer:
    """Streams a pattern through an echoing server on one client's default
    stream, checking what comes back as it arrives."""

    CHUNK = 32 * 1024

    def __init__(self, conn: quicconn.Connection, seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()
        self.nsent = 0
        self.nreceived = 0
        self.pending = b""
        self.stopping = False
        self.concluded = False
        self.finished = False

    def step(self) -> None:
        conn = self.conn
        while not self.concluded:
            if not self.pending:
                if self.stopping:
                    conn.stream_conclude()
                    self.concluded = True
                    break
                self.pending = self.rng.randbytes(self.CHUNK)
            try:
                n = conn.write(self.pending)
            except (quicconn.WantWriteError, quicconn.WantReadError):
                break
            self.sent.update(self.pending[:n])
            self.nsent += n
            self.pending = self.pending[n:]
        while not self.finished:
            try:
                data = conn.read(65536)
            except quicconn.WantReadError:
                break
            except quicconn.ZeroReturnError:
                self.finished = True
                break
            self.received.update(data)
            self.nreceived += len(data)

    def byte_exact(self) -> bool:
        return (
            self.finished
            and self.nreceived == self.nsent
            and self.sent.digest() == self.received.digest()
        )


def _capture(log: list[bytes]) -> Callable[[int, bytes], bool]:
    def drop(_index: int, data: bytes) -> bool:
        if len(log) < 2000:
            log.append(data)
        return False  # keep it: only a copy is taken

    return drop


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_malformed_datagrams_during_live_transfers_on_the_pair(
    pki: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quicconn")
    sctx, cctx = _contexts(pki)
    clock = FakeClock()
    pair = DatagramPair(clock)
    from_client: list[bytes] = []
    from_server: list[bytes] = []
    pair.to_server.drop = _capture(from_client)
    pair.to_client.drop = _capture(from_server)
    lst = sctx.new_listener(pair.server)  # Retry validation on (the default)
    server = EchoServer(lst)
    client = quicconn.Connection(cctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    streamer = Streamer(client, seed=1)
    injected = {"server": 0, "client": 0}

    def tick() -> None:
        client.handle_events()  # never raises, whatever arrived
        lst.handle_events()
        server.step()
        if client.is_init_finished():
            streamer.step()

    def advance() -> None:
        if pair.in_flight():
            arrivals = [
                a
                for a in (pair.client.next_arrival(), pair.server.next_arrival())
                if a is not None
            ]
            clock.advance_to(max(clock.now(), min(arrivals)))
            return
        waits = [t for t in (client.get_event_timeout(), lst.get_event_timeout()) if t]
        if waits:
            clock.advance(min(waits))

    def connected() -> bool:
        try:
            client.connect()
        except quicconn.WantReadError:
            return False
        return True

    try:
        for _ in range(1000):
            if connected():
                break
            tick()
            advance()
        assert client.is_init_finished()
        server_port = port_of(lst)
        reactor = lst._reactor
        assert reactor is not None
        server_cids = list(reactor._by_cid)
        client_cids = [channel_of(client).require_core().host_cid]
        examples = 0

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(seed=st.integers(0, 2**32), kinds=st.sets(st.sampled_from(KINDS)))
        def barrage(seed: int, kinds: set[str]) -> None:
            nonlocal examples
            examples += 1
            rng = random.Random(seed)
            mix = sorted(kinds) or KINDS
            for i in range(PER_EXAMPLE):
                kind = rng.choice(mix)
                if rng.random() < TO_CLIENT:
                    data = make_datagram(
                        kind, rng.getrandbits(32), from_server, client_cids
                    )
                    if data:
                        client.inject_net_dgram(data, pair.SERVER_ADDRESS)
                        injected["client"] += 1
                else:
                    data = make_datagram(
                        kind, rng.getrandbits(32), from_client, server_cids
                    )
                    source = (
                        pair.CLIENT_ADDRESS
                        if rng.random() < 0.3
                        else ("192.0.2.99", 1024 + rng.randrange(60000))
                    )
                    if data:
                        lst.inject_net_dgram(data, source)
                        injected["server"] += 1
                if i % 50 == 49:
                    tick()
                    advance()
            tick()
            advance()

        barrage()
        streamer.stopping = True
        for _ in range(100_000):
            if streamer.finished:
                break
            tick()
            advance()

        assert examples == EXAMPLES
        assert sum(injected.values()) >= EXAMPLES * PER_EXAMPLE * 0.99
        assert streamer.byte_exact(), (streamer.nsent, streamer.nreceived)
        assert streamer.nsent > 1024 * 1024  # a live transfer throughout
        assert client.get_conn_close_info() is None
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not failures, failures[0].getMessage()
        # Nothing the barrage sent made a connection or outlived it.
        assert server_port.live == 1
        assert lst.get_accept_connection_queue_len() == 0
        assert server.errors == []
    finally:
        client.free()
        for conn in list(server.conns):
            conn.free()
        lst.free()


def test_malformed_datagrams_over_udp_during_live_transfers(
    pki: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quicconn")
    sctx, cctx = _contexts(pki)
    lst = sctx.new_listener(("127.0.0.1", 0))
    server = EchoServer(lst)
    target = ("127.0.0.1", int(lst.local_address()[1]))
    clients = []
    socks = []
    streamers = []
    for i in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        conn = quicconn.Connection(cctx)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(target)
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        clients.append(conn)
        socks.append(sock)
        streamers.append(Streamer(conn, seed=10 + i))
    # The junk is sent by a process of its own (a thread would get the GIL
    # only between the streaming loop's system calls): random datagrams,
    # unknown versions, Initials that do not decrypt, from two sockets.
    rng = random.Random(7)
    junk = [
        make_datagram(kind, rng.getrandbits(32), [], []) or b"\x00"
        for kind in (
            rng.choice(["random", "version", "initial"]) for _ in range(OVER_UDP)
        )
    ]
    sender = subprocess.Popen(
        [sys.executable, "-c", _JUNK_SENDER, "127.0.0.1", str(target[1])],
        stdin=subprocess.PIPE,
    )
    objs: list[quicconn.Listener | quicconn.Connection] = [lst, *clients]
    try:
        assert sender.stdin is not None
        sender.stdin.write(b"".join(len(d).to_bytes(2, "big") + d for d in junk))
        sender.stdin.close()
        deadline = 60.0
        started = time.monotonic()
        while not all(s.finished for s in streamers):
            assert time.monotonic() - started < deadline, "the transfers stalled"
            for obj in objs:
                obj.handle_events()
            server.step()
            barrage_over = sender.poll() is not None
            for conn, streamer in zip(clients, streamers, strict=True):
                try:
                    conn.connect()
                except quicconn.WantReadError:
                    continue
                streamer.step()
                # Stream for as long as the barrage lasts.
                streamer.stopping = barrage_over
            waits = [0.02]
            waits += [t for obj in objs if (t := obj.get_event_timeout()) is not None]
            select.select([obj.fileno() for obj in objs], [], [], max(0.0, min(waits)))
        assert sender.wait(timeout=10) == 0
        for streamer in streamers:
            assert streamer.nsent > 0
            assert streamer.byte_exact(), (streamer.nsent, streamer.nreceived)
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not failures, failures[0].getMessage()
        assert lst.stats.datagrams_dropped + lst.stats.version_negotiations_sent > 0
        assert port_of(lst).live == 2
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
        for conn in clients:
            conn.free()
        for sock in socks:
            sock.close()
        for conn in list(server.conns):
            conn.free()
        lst.free()
