"""Bad input: a property-based barrage of malformed, truncated, unknown-version
and replayed datagrams against a listener with live connections, over real
loopback UDP.  Nothing may raise out of handle_events(), nothing may be
logged as an internal failure, the live connections must keep working, and
memory must stay bounded."""

from __future__ import annotations

import gc
import logging
import os
import select
import socket
import tracemalloc
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quicconn
from quicconn._io.transport import Address, Datagram, UdpTransport
from quicconn._objects.listener import port_of as listener_port
from tests.support.certs import CertFiles
from tests.support.echo import EchoServer
from tests.support.junk import KINDS, make_datagram
from tests.support.loop import pump

ALPN = ["quicconn-test"]
LIVE_CLIENTS = 3
EXAMPLES = 100
BATCH = (105, 125)  # datagrams per example: at least 10,500 in all
TRACE_FROM = 70  # measure memory growth over the last 30 examples


class RecordingTransport(UdpTransport):
    """A client socket that keeps a copy of every datagram it sends."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.sent: list[bytes] = []

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        self.sent.extend(bytes(d) for d, _ in datagrams)
        super().send_batch(datagrams)


def datagrams(
    captured: list[bytes], live_cids: list[bytes]
) -> st.SearchStrategy[bytes]:
    """Hypothesis picks the kind and the seed that shapes the rest."""
    return st.builds(
        make_datagram,
        st.sampled_from(KINDS),
        st.integers(0, 2**32),
        st.just(captured),
        st.just(live_cids),
    )


def _drain(lst: quicconn.Listener, clients: list[quicconn.Connection]) -> None:
    """Tick until the listener's socket has nothing left to read."""
    fd = lst.fileno()
    while True:
        lst.handle_events()
        for conn in clients:
            conn.handle_events()
        readable, _, _ = select.select([fd], [], [], 0.02)
        if not readable:
            return


def _echo(
    lst: quicconn.Listener,
    server: EchoServer,
    conn: quicconn.Connection,
    payload: bytes,
    conclude: bool,
) -> bytes:
    conn.write(payload)
    if conclude:
        conn.stream_conclude()
    got = bytearray()
    finished = False

    def step() -> None:
        nonlocal finished
        server.step()
        try:
            got.extend(conn.read())
        except quicconn.WantReadError:
            pass
        except quicconn.ZeroReturnError:
            finished = True

    pump(
        [lst, conn],
        lambda: finished if conclude else len(got) >= len(payload),
        step=step,
        what="an echo on a live connection",
    )
    return bytes(got)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_malformed_and_replayed_datagrams_never_hurt_a_listener(
    pki: CertFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quicconn")
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    ctx.idle_timeout = 300  # the barrage must not outlast a live connection
    lst = ctx.new_listener(("127.0.0.1", 0))  # Retry validation on (default)
    server = EchoServer(lst)
    port = int(lst.local_address()[1])
    target: Address = ("127.0.0.1", port)
    cctx = quicconn.Context(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(ALPN)
    cctx.idle_timeout = 300
    clients: list[quicconn.Connection] = []
    sockets: list[socket.socket] = []
    recorders: list[RecordingTransport] = []
    try:
        for _ in range(LIVE_CLIENTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            transport = RecordingTransport(sock)
            recorders.append(transport)
            conn = quicconn.Connection(cctx)
            conn.set_transport(transport)
            conn.set1_initial_peer_addr(target)
            conn.set1_host("localhost")
            conn.set_blocking_mode(False)
            clients.append(conn)

        def connected() -> bool:
            for conn in clients:
                try:
                    conn.connect()
                except quicconn.WantReadError:
                    return False
            return True

        pump([lst, *clients], connected, step=server.step, what="the handshakes")
        for conn in clients:
            assert _echo(lst, server, conn, b"before the barrage ", False) == (
                b"before the barrage "
            )
        captured = [d for rec in recorders for d in rec.sent]
        reactor = lst._reactor
        assert reactor is not None
        live_cids = list(reactor._by_cid)
        junk_sockets = []
        for _ in range(4):
            junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            junk.bind(("127.0.0.1", 0))
            junk_sockets.append(junk)
        sockets += junk_sockets
        senders = junk_sockets + sockets[:LIVE_CLIENTS]  # junk from live 4-tuples too
        received_before = reactor.transport.datagrams_received  # type: ignore[attr-defined]
        sent = 0

        examples = 0
        baseline = 0

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            batch=st.lists(
                st.tuples(
                    st.integers(0, len(senders) - 1), datagrams(captured, live_cids)
                ),
                min_size=BATCH[0],
                max_size=BATCH[1],
            )
        )
        def barrage(batch: list[tuple[int, bytes]]) -> None:
            nonlocal sent, examples, baseline
            examples += 1
            if examples == TRACE_FROM:
                # Steady state reached: from here on, what quicconn and
                # aioquic keep allocated must not grow with the barrage.
                gc.collect()
                tracemalloc.start()
                baseline = _our_memory()
            for i, (who, data) in enumerate(batch):
                senders[who].sendto(data, target)
                sent += 1
                if i % 16 == 15:
                    lst.handle_events()  # never raises, whatever arrived
            _drain(lst, clients)
            server.step()

        barrage()
        received = reactor.transport.datagrams_received - received_before  # type: ignore[attr-defined]
        gc.collect()
        growth = _our_memory() - baseline
        tracemalloc.stop()

        # Every datagram reached the listener, and it survived them all.
        assert sent >= 10_000
        assert received >= sent * 0.99, f"only {received} of {sent} arrived"
        failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not failures, failures[0].getMessage()

        # The live connections still work.
        for conn in clients:
            assert conn.get_conn_close_info() is None
            assert _echo(lst, server, conn, b"after", True) == b"after"

        # Nothing the barrage sent created state that outlives it.
        assert lst.stats.connections_accepted == LIVE_CLIENTS
        assert listener_port(lst).live == LIVE_CLIENTS
        assert len(reactor._cores) == LIVE_CLIENTS
        assert len(reactor._by_cid) <= LIVE_CLIENTS * 10
        assert len(reactor._heap) <= 4 * len(reactor._timers) + 64
        assert len(listener_port(lst)._tickets) <= LIVE_CLIENTS * 4
        assert lst.get_accept_connection_queue_len() == 0
        assert growth < 512 * 1024, f"quicconn/aioquic memory grew by {growth} bytes"
        stats = lst.stats
        assert stats.retries_sent + stats.version_negotiations_sent > 100
        assert stats.stateless_resets_sent > 0 and stats.datagrams_dropped > 1000
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        for conn in clients:
            conn.free()
        lst.free()
        for sock in sockets:
            sock.close()


def _our_memory() -> int:
    """Bytes allocated by quicconn and aioquic code that are still alive."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(True, f"*{os.sep}quicconn{os.sep}*"),
            tracemalloc.Filter(True, f"*{os.sep}aioquic{os.sep}*"),
        ]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))
