"""Timer semantics, pinned deterministically: DatagramPair + FakeClock.

No sockets and no sleeping: time moves only when a test moves it, so each
assertion about *when* something happens is exact.
"""

from __future__ import annotations

import gc
import weakref

import pytest

import quicconn
from quicconn._objects.connection import channel_of
from quicconn._objects.listener import port_of as listener_port
from quicconn.testing import drop_first
from tests.support.cores import Capability, require
from tests.support.pair import make_pair


def test_nonblocking_connect_raises_want_read_until_the_server_answers(pki):
    ends = make_pair(pki)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    # The first flight went out: one datagram, or two for a ClientHello with
    # a post-quantum key share (qh3's).
    first_flight = ends.pair.to_server.sent
    assert first_flight in (1, 2)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()  # no answer yet: still WANT_READ
    assert ends.pair.to_server.sent == first_flight
    ends.listener.handle_events()  # the server answers
    ends.client.connect()
    assert ends.client.is_init_finished()


def test_lost_first_flight_is_retransmitted_at_the_pto_deadline(pki):
    ends = make_pair(pki)
    start = ends.clock.now()
    # The whole first flight is lost (one datagram, or two on qh3).
    ends.pair.to_server.drop = lambda _index, _data: ends.clock.now() == start
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    first_flight = ends.pair.to_server.dropped
    assert first_flight in (1, 2)
    ends.listener.handle_events()
    assert ends.listener.get_accept_connection_queue_len() == 0
    pto = ends.client.get_event_timeout()
    assert pto is not None and pto > 0

    ends.clock.advance(pto * 0.99)  # just before the deadline: nothing resent
    ends.client.handle_events()
    assert ends.pair.to_server.sent == first_flight
    assert ends.client.get_event_timeout() == pytest.approx(pto * 0.01)

    ends.clock.advance(pto * 0.01)  # at the deadline: the PTO fires
    ends.client.handle_events()
    assert ends.pair.to_server.sent > first_flight
    assert ends.pair.to_server.dropped == first_flight
    ends.listener.handle_events()
    ends.client.connect()  # completes without any further clock movement
    assert ends.client.is_init_finished()
    assert ends.clock.now() - 1000.0 == pytest.approx(pto)


def test_idle_timeout_closes_the_connection_with_local_close_info(pki):
    ends = make_pair(pki, client_idle_ms=3000)
    ends.handshake()
    established_at = ends.clock.now()
    while ends.client.get_conn_close_info() is None:
        ends.step()
        assert ends.clock.now() - established_at < 10, "idle timeout never fired"
    info = ends.client.get_conn_close_info()
    # As OpenSSL 3.5 reports it (tests/differential: idle_timeout).
    assert info.is_local and info.is_transport
    assert info.error_code == quicconn.QUIC_LOCAL_ERR_IDLE_TIMEOUT
    assert info.frame_type == 0 and info.reason == ""
    assert ends.clock.now() - established_at == pytest.approx(3.0, abs=0.2)
    assert ends.client.state is quicconn.ConnState.TERMINATED
    assert ends.client.get_event_timeout() is None  # nothing left to arm
    with pytest.raises(quicconn.ConnectionTerminatedError, match="idle timeout"):
        ends.client.write(b"late")


def test_event_timeout_is_none_exactly_when_no_timer_is_armed(pki):
    ends = make_pair(pki, client_idle_ms=2000)
    # Not started, with a transport: due at once (OpenSSL 3.5), until the
    # first handle_events(), after which nothing is armed.
    assert ends.client.get_event_timeout() == 0.0
    ends.client.handle_events()
    assert ends.client.get_event_timeout() is None
    # A listener, too, is due at once until its first tick (OpenSSL 3.5).
    assert ends.listener.get_event_timeout() == 0.0
    ends.listener.handle_events()
    assert ends.listener.get_event_timeout() is None  # no connections yet
    ends.handshake()
    core = channel_of(ends.client).require_core()
    assert core is not None
    observed = 0
    while ends.client.state is not quicconn.ConnState.TERMINATED:
        timeout = ends.client.get_event_timeout()
        assert (timeout is None) == (core.get_timer() is None)
        if timeout is not None:
            assert timeout == pytest.approx(
                max(0.0, core.get_timer() - ends.clock.now())
            )
        observed += 1
        ends.step()
    assert observed > 1
    assert ends.client.get_event_timeout() is None


def test_event_timeout_is_zero_when_a_timer_is_already_due(pki):
    ends = make_pair(pki)
    ends.handshake()
    timeout = ends.client.get_event_timeout()
    assert timeout is not None
    ends.clock.advance(timeout + 5.0)  # overdue
    assert ends.client.get_event_timeout() == 0.0


def test_net_write_desired_only_while_datagrams_are_queued(pki):
    ends = make_pair(pki)
    ends.handshake()
    assert not ends.client.net_write_desired()
    ends.pair.client.congested = True  # the "socket" now answers EAGAIN
    ends.client.write(b"queued behind EAGAIN")
    for _ in range(5):  # the pacer may hold the packet until its deadline
        if ends.client.net_write_desired():
            break
        ends.clock.advance(ends.client.get_event_timeout() or 0.0)
        ends.client.handle_events()
    assert ends.client.net_write_desired()
    ends.client.handle_events()
    assert ends.client.net_write_desired()  # still congested
    ends.pair.client.congested = False
    ends.client.handle_events()
    assert not ends.client.net_write_desired()
    ends.tick_all()
    assert ends.server is not None
    assert ends.server.read() == b"queued behind EAGAIN"


def test_explicit_event_handling_mode_skips_the_implicit_tick(pki):
    ends = make_pair(pki)
    ends.handshake()
    ends.client.set_value_uint(
        quicconn.VALUE_CLASS_GENERIC,
        quicconn.VALUE_EVENT_HANDLING_MODE,
        quicconn.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    )
    ends.server.write(b"hello")
    ends.listener.handle_events()
    with pytest.raises(quicconn.WantReadError):
        ends.client.read()  # the datagram waits: no implicit tick
    ends.client.handle_events()
    assert ends.client.read() == b"hello"


def test_nonblocking_shutdown_in_explicit_mode_does_not_tick(pki):
    # SSL_shutdown_ex with SHUTDOWN_FLAG_NO_BLOCK follows the call discipline
    # of every other call: in explicit event-handling mode it never handles
    # events itself, so a datagram waiting for the client stays unread.
    ends = make_pair(pki)
    ends.handshake()
    ends.client.set_value_uint(
        quicconn.VALUE_CLASS_GENERIC,
        quicconn.VALUE_EVENT_HANDLING_MODE,
        quicconn.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    )
    ends.server.write(b"unread")
    ends.listener.handle_events()
    assert ends.pair.client.next_arrival() is not None
    assert ends.client.shutdown(quicconn.SHUTDOWN_FLAG_NO_BLOCK) is False
    assert ends.pair.client.next_arrival() is not None, "shutdown ticked"
    ends.client.handle_events()  # the application's own tick reads it
    assert ends.pair.client.next_arrival() is None


def test_nonblocking_shutdown_in_implicit_mode_ticks_once(pki):
    ends = make_pair(pki)
    ends.handshake()
    ends.server.write(b"unread")
    ends.listener.handle_events()
    assert ends.pair.client.next_arrival() is not None
    assert ends.client.shutdown(quicconn.SHUTDOWN_FLAG_NO_BLOCK) is False
    assert ends.pair.client.next_arrival() is None


def test_nonblocking_partial_write_on_a_stream_returns_what_fits(pki):
    # MODE_ENABLE_PARTIAL_WRITE set on a stream object: a nonblocking write
    # larger than the peer's credit takes what fits and says how much.
    ends = make_pair(pki)
    ends.handshake()
    stream = ends.client.new_stream()
    stream.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
    assert not ends.client.get_mode() & quicconn.MODE_ENABLE_PARTIAL_WRITE
    data = bytes(range(256)) * 8192  # 2 MiB, over the peer's 1 MiB window
    written = stream.write(data)
    assert 0 < written < len(data)
    with pytest.raises(quicconn.WantWriteError):
        stream.write(data[written:])  # no credit left until the peer reads
    assert stream.get_error() == quicconn.ERROR_WANT_WRITE


def test_nonblocking_stream_write_without_partial_mode_is_all_or_nothing(pki):
    ends = make_pair(pki)
    ends.handshake()
    stream = ends.client.new_stream()
    data = bytes(2 * 1024 * 1024)
    with pytest.raises(quicconn.WantWriteError):
        stream.write(data)
    with pytest.raises(quicconn.SSLError, match="bad write retry"):
        stream.write(data[:10])


def _packets_sent(qlog_dir, packet_type: str) -> list[list[str]]:
    """Frame types of each packet of ``packet_type`` a qlog trace says was sent."""
    import json

    (path,) = list(qlog_dir.glob("*.qlog"))
    events = json.loads(path.read_text())["traces"][0]["events"]
    return [
        [frame["frame_type"] for frame in e["data"]["frames"]]
        for e in events
        if e["name"] == "transport:packet_sent"
        and e["data"]["header"]["packet_type"] == packet_type
    ]


@pytest.mark.usefixtures("each_core")  # an aioquic-core policy: skipped on qh3
def test_a_resent_server_flight_repeats_the_ack_the_lost_one_carried(pki, tmp_path):
    # The server's first flight (ServerHello with the ACK of the ClientHello)
    # is lost.  Its PTO retransmission must acknowledge the ClientHello again:
    # a client whose probes are bare PINGs (OpenSSL's) otherwise never learns
    # which of its packets arrived.
    require(Capability.REPEATED_HANDSHAKE_ACKS, Capability.QLOG_FRAMES)
    ends = make_pair(pki)
    ends.listener._ctx.qlog_dir = str(tmp_path)
    ends.pair.to_client.drop = drop_first(1)
    with pytest.raises(quicconn.WantReadError):
        ends.client.connect()
    ends.listener.handle_events()
    assert ends.pair.to_client.dropped == 1
    pto = ends.listener.get_event_timeout()
    assert pto is not None and pto > 0
    ends.clock.advance(pto)
    ends.listener.handle_events()
    ends.client.connect()
    assert ends.client.is_init_finished()
    ends.listener.free()
    first, resent, *_ = _packets_sent(tmp_path, "initial")
    assert "ack" in first and "crypto" in first
    assert "crypto" in resent and "ack" in resent


def test_a_freed_connection_is_released_once_its_closing_period_ends(pki):
    """The timer heap keeps stale entries after reschedules; they must not
    keep a removed connection's state (core, TLS, buffers) alive until the
    heap is next compacted, up to 64 connections later."""
    ends = make_pair(pki)
    ends.handshake()
    server = ends.server
    assert server is not None
    reactor = listener_port(ends.listener).reactor
    core = weakref.ref(channel_of(server).require_core())
    server.free()  # closes at once; the core lingers through the closing period
    del server
    ends.server = None
    for _ in range(200):
        if core() is None or core() not in reactor._cores:
            break
        try:
            ends.step()
        except AssertionError:
            break  # nothing left to do on either side
    assert core() not in reactor._cores
    gc.collect()
    assert core() is None, "the reactor still holds a removed core"
