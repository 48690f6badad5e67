"""The differential scenarios: run once through OpenSSL 3.5, once through quicconn.

A scenario is a function ``(client, peer, env)``: ``client`` is an
:mod:`~tests.differential.adapters` client (the same calls either way),
``peer`` a fresh quicconn :class:`~tests.differential.peer.Peer` for this
run.  Before it runs, the client has a context (verifying the peer with
the test CA, ALPN ``diff``) and a connection on a UDP socket connected to
the peer, nothing more, unless the scenario's ``setup`` says otherwise.

Every observation is compared; where quicconn deliberately differs,
``DIFFERENCES`` below names the step, the value each side gives, and the
section of docs/api-mapping.md that documents it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import quicconn as q

from .adapters import Adapter
from .peer import ClientPeer, Peer

ALPN = ["diff"]


@dataclass
class Env:
    """What a scenario may need besides the client and the peer."""

    cafile: str
    certfile: str
    keyfile: str
    other_cafile: str
    new_peer: Callable[..., Peer]
    new_client_peer: Callable[[tuple[str, int]], ClientPeer]


@dataclass
class Scenario:
    name: str
    run: Callable[[Adapter, Peer, Env], None]
    peer: dict[str, Any] = field(default_factory=dict)
    #: None: the default client setup; else (cafile_attr, host, alpn)
    host: str | None = "localhost"
    ca: str = "cafile"
    alpn: list[str] = field(default_factory=lambda: list(ALPN))
    #: Set up the context before the connection (new-session callback...).
    before_conn: Callable[[Adapter], None] | None = None
    #: "server": the adapter is the server (a listener; no connection is
    #: made for it) and the scenario starts a ClientPeer itself.
    role: str = "client"


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, **options: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(func: Callable[..., None]) -> Callable[..., None]:
        SCENARIOS[name] = Scenario(name, func, **options)
        return func

    return register


# -- helpers ----------------------------------------------------------------


def settle(c: Adapter, peer: Peer, rounds: int = 3) -> None:
    """Exchange until quiet: the peer ticks, the client ticks (unrecorded)."""
    for _ in range(rounds):
        peer.sync()
        time.sleep(0.005)
        snapshots = c.snapshots
        c.snapshots = False
        try:
            c.handle_events()
        finally:
            c.snapshots = snapshots
        c.trace.pop()


def connect_nonblocking(c: Adapter, peer: Peer) -> None:
    """Nonblocking connect until done; only the outcome is recorded (how
    many calls it takes depends on how fast the peer answers)."""
    c.set_blocking_mode("C", False)
    deadline = time.monotonic() + 5
    c.snapshots = False
    while True:
        result = c.connect()
        c.trace.pop()
        if result[0] == "ok" or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    c.snapshots = True
    c.note("handshake completed", result[0] == "ok")


def established(c: Adapter, peer: Peer, blocking: bool = False) -> None:
    if blocking:
        c.connect()
    else:
        connect_nonblocking(c, peer)
    peer.wait_connection()


def wait_until(
    c: Adapter,
    probe: Callable[[], Any],
    done: Callable[[Any], bool],
    timeout: float = 3,
) -> Any:
    """Tick the client (unrecorded) until ``done(probe())``; record the probe."""
    deadline = time.monotonic() + timeout
    snapshots = c.snapshots
    c.snapshots = False
    while True:
        before = len(c.trace)
        value = probe()
        if done(value) or time.monotonic() > deadline:
            break
        del c.trace[before:]
        c.handle_events()
        c.trace.pop()
        time.sleep(0.003)
    c.snapshots = snapshots
    return value


# ===========================================================================
# handshake
# ===========================================================================


@scenario("handshake_blocking")
def handshake_blocking(c: Adapter, peer: Peer, env: Env) -> None:
    c.object_kind("C")
    c.get_blocking_mode("C")
    c.is_init_finished()
    c.poll_descriptors()
    c.net_desired()
    c.event_timeout()
    c.connect()
    c.is_init_finished()
    c.handshake_facts()
    c.object_kind("C")
    c.stream_info("C")
    c.connect()  # again: already done


@scenario("handshake_nonblocking")
def handshake_nonblocking(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_blocking_mode("C", False)
    c.get_blocking_mode("C")
    first = c.do_handshake()
    c.trace.pop()  # done at once or WANT_READ: depends on the peer's speed
    c.note(
        "first do_handshake: done or WANT_READ", first in (["ok", 1], ["err", 2, -1])
    )
    c.net_desired()
    connect_nonblocking(c, peer)
    c.is_init_finished()
    c.handshake_facts()


@scenario("handshake_untrusted_ca", ca="other_cafile")
def handshake_untrusted_ca(c: Adapter, peer: Peer, env: Env) -> None:
    c.connect()
    c.verify_result()
    c.is_init_finished()
    c.connect()


@scenario("handshake_wrong_host", host="wrong.example")
def handshake_wrong_host(c: Adapter, peer: Peer, env: Env) -> None:
    c.connect()
    c.verify_result()


@scenario("handshake_alpn_refused", alpn=["nope"])
def handshake_alpn_refused(c: Adapter, peer: Peer, env: Env) -> None:
    c.connect()
    c.close_info()
    c.is_init_finished()
    c.connect()


@scenario("before_connect")
def before_connect(c: Adapter, peer: Peer, env: Env) -> None:
    """Calls on a connection that has a socket but has not started."""
    c.event_timeout()
    c.net_desired()
    c.handle_events()
    c.stream_states("C")
    c.close_info()
    c.key_update(q.KEY_UPDATE_REQUESTED)
    c.async_state()
    c.poll([("C", q.POLL_EVENT_RWE | q.POLL_EVENT_OS | q.POLL_EVENT_IS)])
    c.shutdown(0)


# ===========================================================================
# default stream
# ===========================================================================


@scenario("default_stream_roundtrip")
def default_stream_roundtrip(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.stream_info("C")
    c.stream_states("C")
    c.write("C", b"hello")
    c.stream_info("C")
    c.stream_states("C")
    peer.sync()
    peer.write(0, b"world", fin=True)
    c.pending("C")
    c.read("C", 3)
    c.pending("C")
    c.read("C", 100)
    c.read("C", 100)
    c.stream_states("C")
    c.stream_conclude("C")
    c.stream_states("C")


@scenario("read_state_fin_unread")
def read_state_fin_unread(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    peer.write(0, b"data", fin=True)
    c.handle_events()
    c.stream_states("C")
    c.pending("C")
    c.peek("C", 2) if False else c.read("C", 2, peek=True)
    c.read("C", 4)
    c.stream_states("C")
    c.read("C", 4)
    c.stream_states("C")
    c.poll([("C", q.POLL_EVENT_RWE)])


@scenario("default_stream_read_first")
def default_stream_read_first(c: Adapter, peer: Peer, env: Env) -> None:
    """A read before any write binds the peer's first stream."""
    established(c, peer)
    c.read("C", 10)
    sid = peer.open_stream(data=b"server first")
    c.note("peer stream id", sid)
    c.read("C", 100)
    c.stream_info("C")
    c.write("C", b"reply")
    c.stream_states("C")


@scenario("peer_reset")
def peer_reset(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    peer.write(0, b"partial")
    peer.reset(0, 42)
    c.handle_events()
    c.stream_states("C")
    c.read("C", 100)
    c.stream_states("C")
    c.read("C", 100)
    c.write("C", b"still writable")
    c.poll([("C", q.POLL_EVENT_RWE)])


@scenario("peer_stop_sending")
def peer_stop_sending(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    peer.stop_sending(0, 77)
    c.handle_events()
    c.stream_states("C")
    c.poll([("C", q.POLL_EVENT_RWE)])
    c.write("C", b"more")
    c.stream_states("C")
    c.stream_reset("C", 5)
    c.stream_states("C")


@scenario("local_reset")
def local_reset(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"abc")
    c.stream_reset("C", 5)
    c.stream_states("C")
    c.stream_reset("C", 6)
    c.stream_states("C")
    c.write("C", b"after")
    c.stream_conclude("C")
    wait_until(
        c,
        lambda: c.note("peer saw", list(peer.received(0)[1:])),
        lambda _: peer.received(0)[2] is not None,
    )


@scenario("conclude_then_ack")
def conclude_then_ack(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"abc")
    c.stream_conclude("C")
    c.stream_states("C")
    c.stream_conclude("C")
    c.write("C", b"more")
    c.stream_reset("C", 1)
    wait_until(
        c,
        lambda: c.stream_states("C"),
        lambda obs: obs[1][1] == q.STREAM_STATE_FINISHED,
    )
    c.note("peer saw", list(peer.received(0)))


@scenario("write_ex2_conclude")
def write_ex2_conclude(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"", 0)
    c.stream_info("C")
    c.write("C", b"last", q.WRITE_FLAG_CONCLUDE)
    c.write("C", b"", q.WRITE_FLAG_CONCLUDE)
    c.write("C", b"x", 0)
    peer.sync()
    c.note("peer saw", list(peer.received(0)))


@scenario("default_stream_mode_none")
def default_stream_mode_none(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    established(c, peer)
    c.write("C", b"x")
    c.read("C", 1)
    c.stream_info("C")
    c.stream_states("C")


@scenario("default_stream_mode_too_late")
def default_stream_mode_too_late(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    c.set_default_stream_mode(7)


@scenario("default_stream_uni")
def default_stream_uni(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_AUTO_UNI)
    established(c, peer)
    c.write("C", b"one way")
    c.stream_info("C")
    c.stream_states("C")
    c.read("C", 1)


# ===========================================================================
# several streams
# ===========================================================================


@scenario("new_streams")
def new_streams(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.new_stream(0)
    c.new_stream(q.STREAM_FLAG_UNI)
    c.stream_info("S0")
    c.stream_info("S1")
    c.stream_states("S1")
    c.object_kind("S0")
    c.get_blocking_mode("S0")
    c.write("S0", b"bidi")
    c.write("S1", b"uni", q.WRITE_FLAG_CONCLUDE)
    c.read("S1", 1)
    c.write("C", b"default?")
    c.stream_info("C")
    c.new_stream(0xF0)
    peer.sync()
    c.note("peer saw", [list(peer.received(0)), list(peer.received(2))])


@scenario("accept_streams")
def accept_streams(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    established(c, peer)
    c.accept_queue_len()
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
    peer.open_stream(uni=False, data=b"bidi from peer")
    peer.open_stream(uni=True, data=b"uni from peer", fin=True)
    c.handle_events()
    c.accept_queue_len()
    c.poll([("C", q.POLL_EVENT_IS | q.POLL_EVENT_OS)])
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
    c.stream_info("S0")
    c.stream_states("S0")
    c.read("S0", 100)
    c.read("S0", 100)
    c.write("S0", b"yes")
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
    c.stream_info("S1")
    c.stream_states("S1")
    c.read("S1", 100)
    c.read("S1", 100)
    c.write("S1", b"no")
    c.accept_queue_len()
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)


@scenario("accept_stream_kind_filter")
def accept_stream_kind_filter(c: Adapter, peer: Peer, env: Env) -> None:
    """ACCEPT_STREAM_UNI: an OpenSSL 3.6 flag that 3.5 ignores."""
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    established(c, peer)
    peer.open_stream(uni=False, data=b"bidi")
    peer.open_stream(uni=True, data=b"uni")
    c.handle_events()
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK | q.ACCEPT_STREAM_UNI)
    c.stream_info("S0")


@scenario("incoming_policy_reject")
def incoming_policy_reject(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_REJECT, 9)
    c.set_incoming_stream_policy(7, 0)
    sid = peer.open_stream(data=b"unwanted")
    c.handle_events()
    c.accept_queue_len()
    c.accept_stream(q.ACCEPT_STREAM_NO_BLOCK)
    peer.sync()
    time.sleep(0.01)
    c.handle_events()
    peer.sync()
    c.note("peer's stream", sid)


@scenario("stream_limit", peer={"max_streams_bidi": 2})
def stream_limit(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.get_value("C", q.VALUE_CLASS_GENERIC, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL)
    c.new_stream(q.STREAM_FLAG_NO_BLOCK)
    c.new_stream(q.STREAM_FLAG_NO_BLOCK)
    c.get_value("C", q.VALUE_CLASS_GENERIC, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL)
    c.poll([("C", q.POLL_EVENT_OS)])
    c.new_stream(q.STREAM_FLAG_NO_BLOCK)
    c.new_stream(q.STREAM_FLAG_NO_BLOCK | q.STREAM_FLAG_UNI)


# ===========================================================================
# values, modes, events
# ===========================================================================


@scenario("values")
def values(c: Adapter, peer: Peer, env: Env) -> None:
    g = q.VALUE_CLASS_GENERIC
    c.get_value("C", g, q.VALUE_EVENT_HANDLING_MODE)
    c.get_value("C", q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT)
    c.set_value("C", q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT, 20000)
    c.get_value("C", q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT)
    established(c, peer)
    c.get_value("C", q.VALUE_CLASS_FEATURE_PEER_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT)
    c.get_value("C", q.VALUE_CLASS_FEATURE_NEGOTIATED, q.VALUE_QUIC_IDLE_TIMEOUT)
    c.set_value("C", q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT, 1000)
    c.get_value("C", g, q.VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL)
    c.get_value("C", g, q.VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL)
    c.get_value("C", g, q.VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL)
    c.get_value("C", g, q.VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL)
    c.set_value(
        "C", g, q.VALUE_EVENT_HANDLING_MODE, q.VALUE_EVENT_HANDLING_MODE_EXPLICIT
    )
    c.get_value("C", g, q.VALUE_EVENT_HANDLING_MODE)
    c.set_value(
        "C", g, q.VALUE_EVENT_HANDLING_MODE, q.VALUE_EVENT_HANDLING_MODE_INHERIT
    )
    c.get_value("C", g, q.VALUE_EVENT_HANDLING_MODE)
    c.new_stream(0)
    c.get_value("S0", g, q.VALUE_EVENT_HANDLING_MODE)
    c.set_value(
        "S0", g, q.VALUE_EVENT_HANDLING_MODE, q.VALUE_EVENT_HANDLING_MODE_EXPLICIT
    )
    c.get_value("S0", g, q.VALUE_EVENT_HANDLING_MODE)
    c.set_value("S0", g, q.VALUE_EVENT_HANDLING_MODE, 9)
    c.get_value("S0", g, q.VALUE_QUIC_IDLE_TIMEOUT)
    c.get_value("C", g, 99)


@scenario("stream_event_surface")
def stream_event_surface(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.new_stream(0)
    c.poll_descriptors("S0")
    c.net_desired("S0")
    c.event_timeout("S0")
    c.handle_events("S0")


@scenario("modes")
def modes(c: Adapter, peer: Peer, env: Env) -> None:
    c.mode("C", "get")
    c.mode("C", "set", q.MODE_ENABLE_PARTIAL_WRITE)
    established(c, peer)
    c.new_stream(0)
    c.mode("S0", "get")
    c.mode("S0", "clear", q.MODE_ENABLE_PARTIAL_WRITE)
    c.mode("C", "get")
    c.set_blocking_mode("S0", False)
    c.get_blocking_mode("S0")
    c.get_blocking_mode("C")


@scenario("explicit_event_handling")
def explicit_event_handling(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    c.set_value(
        "C",
        q.VALUE_CLASS_GENERIC,
        q.VALUE_EVENT_HANDLING_MODE,
        q.VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    )
    peer.write(0, b"later")
    c.read("C", 10)  # explicit: no implicit tick, nothing yet
    c.handle_events()
    c.read("C", 10)


@scenario("poll_conn_and_streams")
def poll_conn_and_streams(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_default_stream_mode(q.DEFAULT_STREAM_MODE_NONE)
    established(c, peer)
    every = q.POLL_EVENT_RWE
    conn_events = q.POLL_EVENT_EC | q.POLL_EVENT_ECD | q.POLL_EVENT_IS | q.POLL_EVENT_OS
    c.new_stream(0)
    c.new_stream(q.STREAM_FLAG_UNI)
    c.poll([("C", conn_events), ("S0", every), ("S1", every)])
    c.write("S0", b"ping")
    peer.sync()
    peer.write(0, b"pong")
    c.handle_events()
    c.poll([("C", conn_events), ("S0", every), ("S1", every)])
    c.read("S0", 10)
    c.stream_conclude("S1")
    c.poll([("C", conn_events), ("S0", every), ("S1", every)])
    peer.write(0, b"", fin=True)
    c.handle_events()
    c.poll([("S0", every)])
    c.free("S1")
    c.poll([("C", conn_events), ("S0", every)])


# ===========================================================================
# closing
# ===========================================================================


@scenario("peer_closes")
def peer_closes(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    c.new_stream(0)
    peer.sync()
    peer.close(99, "bye")
    c.handle_events()
    c.close_info()
    c.stream_states("C")
    c.stream_states("S0")
    c.read("C", 10)
    c.write("C", b"y")
    c.new_stream(q.STREAM_FLAG_NO_BLOCK)
    c.poll(
        [
            ("C", q.POLL_EVENT_EC | q.POLL_EVENT_ECD | q.POLL_EVENT_OS),
            ("S0", q.POLL_EVENT_RWE),
        ]
    )
    c.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK)
    c.key_update(q.KEY_UPDATE_REQUESTED)


@scenario("shutdown_nonblocking")
def shutdown_nonblocking(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"flush me")
    c.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK, 3, "done")
    # OpenSSL moves a shutdown on only when it is called again.
    wait_until(
        c,
        lambda: c.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK, 3, "done"),
        lambda obs: obs == ["ok", 1],
        timeout=5,
    )
    c.close_info()
    c.stream_states("C")
    c.write("C", b"late")
    c.new_stream(0)


@scenario("shutdown_rapid")
def shutdown_rapid(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.shutdown(q.SHUTDOWN_FLAG_RAPID, 4, "rapid")
    c.shutdown(q.SHUTDOWN_FLAG_RAPID, 4, "rapid")
    c.close_info()
    c.poll([("C", q.POLL_EVENT_EC | q.POLL_EVENT_ECD)])


@scenario("shutdown_wait_peer")
def shutdown_wait_peer(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.shutdown(q.SHUTDOWN_FLAG_WAIT_PEER | q.SHUTDOWN_FLAG_NO_BLOCK)
    c.write("C", b"z")
    peer.close(12, "peer ends it")
    wait_until(
        c,
        lambda: c.shutdown(q.SHUTDOWN_FLAG_WAIT_PEER | q.SHUTDOWN_FLAG_NO_BLOCK),
        lambda obs: obs == ["ok", 1],
    )
    c.close_info()
    c.net_desired()


@scenario("idle_timeout", peer={"idle_timeout": 0.3})
def idle_timeout(c: Adapter, peer: Peer, env: Env) -> None:
    c.set_value("C", q.VALUE_CLASS_FEATURE_REQUEST, q.VALUE_QUIC_IDLE_TIMEOUT, 300)
    established(c, peer)
    c.get_value("C", q.VALUE_CLASS_FEATURE_NEGOTIATED, q.VALUE_QUIC_IDLE_TIMEOUT)
    peer.freeze()  # OpenSSL keeps an idle connection alive with PINGs
    wait_until(c, lambda: c.close_info(), lambda obs: obs[1] is not None, timeout=5)
    c.read("C", 1)
    c.poll([("C", q.POLL_EVENT_EC | q.POLL_EVENT_ECD)])
    c.net_desired()
    c.event_timeout()
    c.shutdown(q.SHUTDOWN_FLAG_NO_BLOCK)


# ===========================================================================
# other functions
# ===========================================================================


@scenario("key_update")
def key_update(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.key_update(q.KEY_UPDATE_REQUESTED)
    c.key_update(q.KEY_UPDATE_NOT_REQUESTED)
    c.key_update(7)
    c.write("C", b"after update")
    peer.sync()
    c.note("peer saw", list(peer.received(0)))


@scenario("misuse")
def misuse(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.new_stream(q.STREAM_FLAG_UNI)
    c.read("S0", 1)
    c.stream_reset("S0", 2**62)
    c.shutdown(0xF0)
    c.set_incoming_stream_policy(q.INCOMING_STREAM_POLICY_REJECT, 2**62)


@scenario("new_session_callback")
def new_session_callback(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    wait_until(
        c, lambda: c.note("sessions", c.sessions_seen), lambda _: c.sessions_seen > 0
    )
    c.trace[-1] = ["sessions seen", ["value", c.sessions_seen > 0]]


new_session_callback_scenario = SCENARIOS["new_session_callback"]
new_session_callback_scenario.before_conn = lambda c: c.set_new_session_cb()


def _resume(c: Adapter, peer: Peer, *, shut_down: bool) -> None:
    established(c, peer)
    c.write("C", b"x")
    peer.sync()
    wait_until(c, lambda: c.note("sessions", 0), lambda _: c.sessions_seen > 0)
    c.trace[-1] = ["a session arrived", ["value", c.sessions_seen > 0]]
    settle(c, peer)
    session = c.get1_session()
    c.note("got a session", bool(session))
    c.handshake_facts()
    if shut_down:
        c.shutdown(q.SHUTDOWN_FLAG_RAPID)
    c.drop_conn()
    c.new_conn(peer.address[:2], "localhost")
    c.set_session(session)
    established(c, peer)
    c.handshake_facts()


@scenario("session_resumption")
def session_resumption(c: Adapter, peer: Peer, env: Env) -> None:
    """SSL_get1_session after the new-session callback, a shutdown, then
    SSL_set_session on a second connection: the handshake resumes."""
    _resume(c, peer, shut_down=True)


@scenario("session_after_free_without_shutdown")
def session_after_free_without_shutdown(c: Adapter, peer: Peer, env: Env) -> None:
    """The first connection is freed without a shutdown: OpenSSL then makes
    its session non-resumable (as for TLS); quicconn does not."""
    _resume(c, peer, shut_down=False)


SCENARIOS["session_resumption"].before_conn = lambda c: c.set_new_session_cb()
SCENARIOS["session_after_free_without_shutdown"].before_conn = lambda c: (
    c.set_new_session_cb()
)


@scenario("initial_peer_addr")
def initial_peer_addr(c: Adapter, peer: Peer, env: Env) -> None:
    """An unconnected socket: no peer address until SSL_set1_initial_peer_addr."""
    c.drop_conn()
    c.new_conn(peer.address[:2], "localhost", connected=False)
    c.set_blocking_mode("C", False)
    c.connect()
    c.set1_initial_peer_addr(peer.address[:2])
    connect_nonblocking(c, peer)
    c.set1_initial_peer_addr(peer.address[:2])


@scenario("inject_net_dgram")
def inject_net_dgram(c: Adapter, peer: Peer, env: Env) -> None:
    established(c, peer)
    c.inject_net_dgram(b"\x40" + b"\x00" * 40)  # a short-header packet of junk
    c.handle_events()
    c.write("C", b"still alive")
    peer.sync()
    c.note("peer saw", list(peer.received(0)))


@scenario("async_calls_on_quic")
def async_calls_on_quic(c: Adapter, peer: Peer, env: Env) -> None:
    c.async_state()
    established(c, peer)
    c.async_state()


# ===========================================================================
# the server side: OpenSSL's listener against a quicconn client
# ===========================================================================


def _server_accepts(c: Adapter, env: Env, flags: int) -> ClientPeer:
    address = c.new_listener(flags)
    c.object_kind("L")
    c.net_desired("L")
    c.event_timeout("L")
    c.listen()
    c.net_desired("L")
    c.event_timeout("L")
    c.accept_connection(q.ACCEPT_CONNECTION_NO_BLOCK)
    c.net_desired("L")
    c.event_timeout("L")
    c.accept_connection_queue_len()
    c.poll([("L", q.POLL_EVENT_IC | q.POLL_EVENT_EL)])
    client = env.new_client_peer(address)
    client.start()
    deadline = time.monotonic() + 5
    c.snapshots = False
    while time.monotonic() < deadline:
        before = len(c.trace)
        obs = c.accept_connection_queue_len()
        del c.trace[before:]
        if obs[1]:
            break
        c.handle_events("L")
        c.trace.pop()
        time.sleep(0.003)
    c.snapshots = True
    c.accept_connection_queue_len()
    c.poll([("L", q.POLL_EVENT_IC | q.POLL_EVENT_EL)])
    c.accept_connection(q.ACCEPT_CONNECTION_NO_BLOCK)
    c.accept_connection_queue_len()
    return client


def _server_handshake(c: Adapter, client: ClientPeer) -> None:
    c.object_kind("C")
    c.get0_listener("C")
    c.get0_listener("L")
    c.set_blocking_mode("C", False)
    deadline = time.monotonic() + 5
    snapshots = c.snapshots
    c.snapshots = False
    while True:
        result = c.accept()
        c.trace.pop()
        if result[0] == "ok" or time.monotonic() > deadline:
            break
        c.handle_events("L")
        c.trace.pop()
        time.sleep(0.002)
    c.snapshots = snapshots
    c.note("server handshake completed", result[0] == "ok")
    client.wait_established()
    c.is_init_finished()
    c.accept()


@scenario("listener_accepts", role="server")
def listener_accepts(c: Adapter, peer: Peer, env: Env) -> None:
    client = _server_accepts(c, env, q.LISTENER_FLAG_NO_VALIDATE)
    try:
        _server_handshake(c, client)
        client.write(b"hello server", fin=True)
        wait_until(c, lambda: c.read("C", 100), lambda obs: obs[0] == "ok")
        c.read("C", 100)
        c.stream_info("C")
        c.write("C", b"hello client", q.WRITE_FLAG_CONCLUDE)
        wait_until(
            c,
            lambda: c.note(
                "client got", bytes(client.call(lambda p: p.received)).decode()
            ),
            lambda _: client.call(lambda p: p.fin),
        )
        c.handshake_facts()
    finally:
        client.stop()


@scenario("listener_validates", role="server")
def listener_validates(c: Adapter, peer: Peer, env: Env) -> None:
    """Address validation on (the default): the client's first Initial is
    answered with Retry; the connection is queued once it came back."""
    client = _server_accepts(c, env, 0)
    try:
        _server_handshake(c, client)
    finally:
        client.stop()


# ===========================================================================
# DTLS: where the retransmission happens
# ===========================================================================


@scenario("dtls_retransmission", role="dtls")
def dtls_retransmission(c: Adapter, peer: Peer, env: Env) -> None:
    """A DTLS client whose ClientHello gets no answer (the peer is a bare
    socket): OpenSSL 3.5 retransmits inside the nonblocking SSL_connect
    retried after the timer expired; quicconn only in handle_events()
    (DTLSv1_handle_timeout), as the man page says (docs/api-mapping.md)."""
    import socket as _socket

    sink = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)

    def received() -> int:
        count = 0
        while True:
            try:
                sink.recv(65536)
            except BlockingIOError:
                return count
            count += 1

    try:
        c.dtls_client(sink.getsockname())
        c.dtls_connect()
        c.note("ClientHellos sent", received())
        c.dtls_event_timeout()
        time.sleep(1.15)  # past the first retransmission timer (1 s)
        c.dtls_event_timeout()
        c.dtls_connect()
        c.note("sent by the retried connect", received())
        c.dtls_handle_events()
        c.note("sent by handle_events", received())
        c.dtls_event_timeout()
    finally:
        c.dtls_free()
        sink.close()


__all__ = ["ALPN", "SCENARIOS", "Env", "Scenario", "scenario"]
