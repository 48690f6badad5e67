"""DATAGRAM frames (RFC 9221): quicconn to quicconn in memory, to aioquic's
asyncio stack and to quinn (Rust), both in their own processes."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import pytest

import quicconn
import quicconn.http
from tests.conftest import PEERS, peer_process
from tests.support.certs import CertFiles
from tests.support.pair import PairedEndpoints, make_pair
from tests.support.peers import require_peer

#: Each core sends and receives DATAGRAM frames its own way: every test runs
#: on every core (tests/support/cores.py, ``pinned_cores``).
pytestmark = pytest.mark.usefixtures("each_core")


def _deliver(ends: PairedEndpoints, conn: quicconn.Connection) -> None:
    """Tick (and move the fake clock past pacing) until ``conn`` has a datagram."""
    ends.tick_all()
    for _ in range(10):
        if conn.get_datagram_queue_len():
            return
        ends.step()


def _established(pki: CertFiles, size: int | None = 1500) -> PairedEndpoints:
    ends = make_pair(pki, datagram_frame_size=size)
    ends.handshake()
    for _ in range(5):
        ends.tick_all()
    assert ends.server is not None
    ends.server.set_blocking_mode(False)
    return ends


def test_datagrams_both_ways_with_a_poll_event(pki: CertFiles) -> None:
    ends = _established(pki)
    client, server = ends.client, ends.server
    assert server is not None
    limit = client.get_max_datagram_size()
    assert 1000 < limit <= 1500
    assert quicconn.poll([(server, quicconn.POLL_EVENT_DGRAM)], timeout=0) == [0]
    assert client.send_datagram(b"ping") == 4
    _deliver(ends, server)
    assert quicconn.poll([(server, quicconn.POLL_EVENT_DGRAM)], timeout=0) == [
        quicconn.POLL_EVENT_DGRAM
    ]
    assert server.get_datagram_queue_len() == 1
    assert server.recv_datagram() == b"ping"
    with pytest.raises(quicconn.WantReadError):
        server.recv_datagram()
    server.send_datagram(b"pong")
    _deliver(ends, client)
    assert client.recv_datagram() == b"pong"


def test_an_oversized_datagram_is_refused_and_nothing_is_sent(pki: CertFiles) -> None:
    ends = _established(pki)
    client, server = ends.client, ends.server
    assert server is not None
    limit = client.get_max_datagram_size()
    sent = ends.pair.to_server.sent
    with pytest.raises(ValueError, match=f"exceeds the {limit} bytes"):
        client.send_datagram(b"x" * (limit + 1))
    assert client.get_error() == quicconn.ERROR_SSL
    assert ends.pair.to_server.sent == sent, "something went out"
    client.send_datagram(b"y" * limit)  # the largest that fits does go
    _deliver(ends, server)
    assert server.recv_datagram() == b"y" * limit


def test_the_peers_frame_size_bounds_the_payload(pki: CertFiles) -> None:
    ends = _established(pki, size=100)
    # Frame type (1 byte) and a 2-byte length varint (97 >= 64) leave 97.
    assert ends.client.get_max_datagram_size() == 97


def test_no_datagrams_unless_the_peer_offers_them(pki: CertFiles) -> None:
    ends = make_pair(pki)
    ends.client.get_max_datagram_size()
    ends.handshake()
    assert ends.client.get_max_datagram_size() == 0
    with pytest.raises(ValueError, match="does not accept DATAGRAM frames"):
        ends.client.send_datagram(b"x")


def test_a_lost_datagram_is_not_retransmitted(pki: CertFiles) -> None:
    """The datagram and a stream write are lost alike; loss recovery brings
    the stream data back, never the datagram."""
    ends = _established(pki)
    client, server = ends.client, ends.server
    assert server is not None
    stream = client.new_stream()
    link = ends.pair.to_server
    link.blackhole = True  # the packets carrying them are lost
    client.send_datagram(b"lost forever")
    stream.write(b"retransmitted")
    # Past pacing, until both left: in one packet, or (when the pacer let
    # the datagram go at once, as on qh3) in two.  Then only loss
    # detection's timer is left, milliseconds away, not microseconds.
    while link.dropped == 0 or (ends.next_deadline() or 1.0) < 0.005:
        ends.step()
    link.blackhole = False
    got = None
    for _ in range(10):
        ends.step()
        got = server.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
        if got is not None:
            break
    assert got is not None and got.read() == b"retransmitted"
    assert server.get_datagram_queue_len() == 0
    with pytest.raises(quicconn.WantReadError):
        server.recv_datagram()


def _client(pki: CertFiles, port: int, alpn: str) -> quicconn.Connection:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos([alpn])
    ctx.set_max_datagram_frame_size(65536)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_host("localhost")
    return conn


def _echo_round_trip(conn: quicconn.Connection) -> None:
    conn.connect()
    limit = conn.get_max_datagram_size()
    assert limit > 1000
    payloads = [b"hello", b"\x00" * 1000, bytes(range(256))]
    for payload in payloads:
        conn.send_datagram(payload)
    got = set()
    deadline = time.monotonic() + 5
    conn.set_blocking_mode(False)
    while len(got) < len(payloads) and time.monotonic() < deadline:
        quicconn.poll([(conn, quicconn.POLL_EVENT_DGRAM)], timeout=0.5)
        try:
            got.add(conn.recv_datagram())
        except quicconn.WantReadError:
            continue
    assert got == {b"echo:" + p for p in payloads}
    # Path MTU discovery may have raised the limit meanwhile.
    limit = conn.get_max_datagram_size()
    with pytest.raises(ValueError, match="exceeds"):
        conn.send_datagram(b"z" * (limit + 1))


@pytest.mark.peer
def test_datagrams_with_aioquics_asyncio_stack(
    pki: CertFiles, aioquic_server: int
) -> None:
    conn = _client(pki, aioquic_server, "quicconn-test")
    try:
        _echo_round_trip(conn)
    finally:
        conn.free()


@pytest.mark.peer
def test_datagrams_with_quinn(pki: CertFiles) -> None:
    program = require_peer("quinn_peer")
    args = [program, str(pki.cert), str(pki.key), "127.0.0.1:0", "quicconn-test"]
    with peer_process(args, ready_prefix="ready") as (_, line):
        conn = _client(pki, int(line.split()[1]), "quicconn-test")
        try:
            _echo_round_trip(conn)
        finally:
            conn.free()


# -- HTTP datagrams (RFC 9297) ------------------------------------------------


def _h3_client(pki: CertFiles, port: int) -> quicconn.http.H3Session:
    conn = _client(pki, port, "h3")
    conn.connect()
    return quicconn.http.H3Session(conn)


def _until(
    session: quicconn.http.H3Session, done: Any, timeout: float = 5
) -> list[Any]:
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(events) and time.monotonic() < deadline:
        session.wait(0.05)
        events += session.handle_events()
    return events


def test_http_datagrams_between_quicconn_ends(pki: CertFiles) -> None:
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(["h3"])
    sctx.set_max_datagram_frame_size(65536)
    listener = sctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    listener.set_blocking_mode(False)
    listener.listen()
    client = _client(pki, listener.local_address()[1], "h3")
    client.set_blocking_mode(False)
    server_conn = None
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            listener.handle_events()
            if server_conn is None:
                server_conn = listener.accept_connection(
                    quicconn.ACCEPT_CONNECTION_NO_BLOCK
                )
            try:
                client.connect()
                if server_conn is not None and server_conn.is_init_finished():
                    break
            except quicconn.WantReadError:
                time.sleep(0.002)
        assert server_conn is not None
        c = quicconn.http.H3Session(client)
        s = quicconn.http.H3Session(server_conn)
        for _ in range(200):  # SETTINGS both ways
            c.handle_events()
            s.handle_events()
            if c.datagrams_allowed() and s.datagrams_allowed():
                break
            time.sleep(0.002)
        assert c.datagrams_allowed() and s.datagrams_allowed()
        stream_id = c.send_request("GET", "localhost", "/tunnel")
        with pytest.raises(ValueError, match="not a request stream"):
            s.send_datagram(3, b"x")
        c.send_datagram(stream_id, b"over http")
        got: list[Any] = []
        for _ in range(500):
            got += [
                e
                for e in s.handle_events()
                if isinstance(e, quicconn.http.DatagramReceived)
            ]
            c.handle_events()
            if got:
                break
            time.sleep(0.002)
        assert got == [quicconn.http.DatagramReceived(stream_id, b"over http")]
    finally:
        client.free()
        if server_conn is not None:
            server_conn.free()
        listener.free()


def test_no_http_datagrams_without_datagram_frames(
    pki: CertFiles, aioquic_server: int
) -> None:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(["h3"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", aioquic_server))
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_host("localhost")
    try:
        conn.connect()
        session = quicconn.http.H3Session(conn)
        assert not session.datagrams_allowed()
        with pytest.raises(ValueError, match="SETTINGS_H3_DATAGRAM"):
            session.send_datagram(0, b"x")
    finally:
        conn.free()
        sock.close()


@pytest.mark.peer
def test_http_datagrams_with_aioquics_h3_stack(pki: CertFiles) -> None:
    args = [
        sys.executable,
        str(PEERS / "aioquic_h3_datagram_server.py"),
        "--cert",
        str(pki.cert),
        "--key",
        str(pki.key),
    ]
    with peer_process(args, ready_prefix="READY") as (_, line):
        session = _h3_client(pki, int(line.split()[1]))
        try:
            _until(session, lambda _: session.datagrams_allowed())
            assert session.datagrams_allowed()
            stream_id = session.send_request("CONNECT", "localhost", "/")
            _until(
                session,
                lambda ev: any(
                    isinstance(e, quicconn.http.ResponseReceived) for e in ev
                ),
            )
            session.send_datagram(stream_id, b"ping")
            events = _until(
                session,
                lambda ev: any(
                    isinstance(e, quicconn.http.DatagramReceived) for e in ev
                ),
            )
            datagrams = [
                e for e in events if isinstance(e, quicconn.http.DatagramReceived)
            ]
            assert datagrams == [
                quicconn.http.DatagramReceived(stream_id, b"echo:ping")
            ]
        finally:
            session.conn.free()
