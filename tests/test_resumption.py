"""Session resumption and 0-RTT (SSL_get1_session / SSL_set_session /
SSL_write_early_data), quicconn client against a quicconn listener over
loopback UDP, with the server in its own thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import quicconn
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]


@pytest.fixture(
    params=[0, quicconn.LISTENER_FLAG_NO_VALIDATE], ids=["retry", "no-retry"]
)
def echo_server(pki: CertFiles, request) -> Iterator[tuple[int, list[bool]]]:
    """A listener echoing each connection's default stream; yields (port, resumed).

    With Retry on, 0-RTT sent before the Retry is dropped by the server and
    must be sent again afterwards."""
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN, flags=request.param
    )
    with echoing(listener) as resumed:
        yield listener.local_address()[1], resumed


@contextmanager
def echoing(listener: quicconn.Listener) -> Iterator[list[bool]]:
    """Serve ``listener`` in a thread, echoing each connection's default
    stream; yields whether each connection resumed; frees the listener."""
    resumed: list[bool] = []
    stop = threading.Event()

    def serve() -> None:
        listener.set_blocking_mode(False)
        while not stop.is_set():
            conn = listener.accept_connection()
            if conn is None:
                listener.handle_events()
                stop.wait(0.002)
                continue
            conn.set_blocking_mode(True)
            try:
                conn.accept()
                resumed.append(conn.session_reused())
                data = bytearray()
                while True:
                    try:
                        data += conn.read()
                    except quicconn.ZeroReturnError:
                        break
                conn.write_ex2(bytes(data), quicconn.WRITE_FLAG_CONCLUDE)
                conn.shutdown(quicconn.SHUTDOWN_FLAG_WAIT_PEER)
            except quicconn.Error:
                pass
            finally:
                conn.free()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield resumed
    finally:
        stop.set()
        thread.join(5)
        listener.free()


def client(pki: CertFiles, port: int, session: quicconn.Session | None = None):
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn._owns_socket = True
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("localhost")
    if session is not None:
        conn.set_session(session)
    return conn


def echo(conn: quicconn.Connection, payload: bytes) -> bytes:
    conn.write_ex2(payload, quicconn.WRITE_FLAG_CONCLUDE)
    out = bytearray()
    while True:
        try:
            out += conn.read()
        except quicconn.ZeroReturnError:
            return bytes(out)


def first_session(pki: CertFiles, port: int) -> quicconn.Session:
    conn = client(pki, port)
    assert echo(conn, b"first") == b"first"
    session = conn.get1_session()
    conn.shutdown()
    conn.free()
    assert session is not None, "the server sent no session ticket"
    return session


def test_a_session_ticket_resumes_the_next_handshake(pki, echo_server):
    port, resumed = echo_server
    session = first_session(pki, port)
    assert session.is_resumable() and session.server_name == "localhost"
    conn = client(pki, port, Session.from_bytes(session.to_bytes()))
    assert echo(conn, b"second") == b"second"
    assert conn.session_reused()
    assert conn.get_early_data_status() == quicconn.EARLY_DATA_NOT_SENT
    conn.shutdown()
    conn.free()
    assert resumed == [False, True]


def test_early_data_is_accepted_by_a_resuming_server(pki, echo_server):
    port, _ = echo_server
    session = first_session(pki, port)
    assert session.get_max_early_data() > 0
    conn = client(pki, port, session)
    assert conn.write_early_data(b"sent in 0-RTT, ") == 15
    conn.write_ex2(b"then 1-RTT", quicconn.WRITE_FLAG_CONCLUDE)
    out = bytearray()
    while True:
        try:
            out += conn.read()
        except quicconn.ZeroReturnError:
            break
    assert bytes(out) == b"sent in 0-RTT, then 1-RTT"
    assert conn.get_early_data_status() == quicconn.EARLY_DATA_ACCEPTED
    conn.shutdown()
    conn.free()


def test_early_data_needs_a_session_that_allows_it(pki, echo_server):
    port, _ = echo_server
    conn = client(pki, port)
    with pytest.raises(ValueError, match="set_session"):
        conn.write_early_data(b"x")
    conn.free()


def test_a_corrupt_session_file_is_a_value_error():
    with pytest.raises(ValueError, match="not a quicconn session"):
        quicconn.Session.from_bytes(b'{"quicconn-session": 1, "age_add": "x"}')
    with pytest.raises(ValueError):
        quicconn.Session.from_bytes(b"\x80garbage")


Session = quicconn.Session


@pytest.mark.usefixtures("each_core")
@pytest.mark.parametrize("num_tickets", [0, 1, 2])
def test_num_tickets_zero_sends_no_session_ticket(pki, num_tickets):
    """SSL_CTX_set_num_tickets(0): the server sends no NewSessionTicket, so
    the client has no session to resume with; any other count sends one."""
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(ALPN)
    sctx.set_num_tickets(num_tickets)
    assert sctx.get_num_tickets() == num_tickets
    listener = sctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    listener.listen()
    with echoing(listener) as resumed:
        conn = client(pki, listener.local_address()[1])
        assert echo(conn, b"hello") == b"hello"
        conn.shutdown()
        session = conn.get1_session()
        conn.free()
    assert resumed == [False]
    assert (session is not None) == (num_tickets > 0)


def test_num_tickets_defaults_to_openssls_two_and_refuses_bad_values():
    ctx = quicconn.Context(quicconn.SERVER)
    assert ctx.get_num_tickets() == 2  # SSL_CTX_get_num_tickets on OpenSSL 3.5
    with pytest.raises(ValueError, match="negative"):
        ctx.set_num_tickets(-1)
    with pytest.raises(TypeError, match="int"):
        ctx.set_num_tickets("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        ctx.set_num_tickets(True)
    assert ctx.get_num_tickets() == 2
