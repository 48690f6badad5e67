"""Server limits and load: many clients on one listener, the pending-queue
and connection limits, and the listener's event timeout under load."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import quicconn
from quicconn._objects.listener import port_of as listener_port
from tests.support.certs import CertFiles
from tests.support.echo import EchoServer
from tests.support.loop import pump

ALPN = ["quicconn-test"]
CLIENTS = Path(__file__).resolve().parent / "peers" / "aioquic_clients.py"


def new_client(pki: CertFiles, port: int) -> tuple[quicconn.Connection, socket.socket]:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("localhost")
    conn.set_blocking_mode(False)
    return conn, sock


def connect_outcome(conn: quicconn.Connection) -> str | None:
    """'ok', 'refused', another failure's text, or None while in progress."""
    try:
        conn.connect()
    except quicconn.WantReadError:
        return None
    except quicconn.ConnectionTerminatedError as exc:
        info = exc.close_info
        if info is not None and info.error_code == quicconn.QUIC_ERR_CONNECTION_REFUSED:
            return "refused"
        return str(exc)
    return "ok"


def make_listener(pki: CertFiles, **limits: int) -> quicconn.Listener:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    for name, value in limits.items():
        setattr(ctx, name, value)
    lst = ctx.new_listener(("127.0.0.1", 0))
    lst.set_blocking_mode(False)
    lst.listen()
    return lst


def test_limits_have_operator_defaults() -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    assert ctx.max_pending_connections == 256
    assert ctx.max_connections == 10_000
    assert ctx.idle_timeout == 30.0
    assert ctx.max_data == 4 * 1024 * 1024
    assert ctx.max_stream_data == 1024 * 1024


def test_full_accept_queue_refuses_new_connections_cleanly(pki: CertFiles) -> None:
    lst = make_listener(pki, max_pending_connections=2)
    port = int(lst.local_address()[1])
    clients = [new_client(pki, port) for _ in range(4)]

    def closed_by_server() -> list[quicconn.ConnCloseInfo]:
        infos = [conn.get_conn_close_info() for conn, _ in clients]
        return [info for info in infos if info is not None]

    def settled() -> bool:
        for conn, _ in clients:
            connect_outcome(conn)
        return lst.get_accept_connection_queue_len() == 2 and (
            len(closed_by_server()) == 2
        )

    try:
        # All four handshakes start (half-open connections take no place in
        # the accept queue); the first two to complete are queued, the
        # others are refused when they complete, the queue being full.
        pump([lst] + [c for c, _ in clients], settled, what="4 handshakes to settle")
        assert lst.stats.connections_refused == 2
        for info in closed_by_server():
            assert info.is_transport and not info.is_local
            assert info.error_code == quicconn.QUIC_ERR_CONNECTION_REFUSED
            assert "accept queue is full" in info.reason
        # While the queue is full, a new client is refused at its first
        # Initial.
        early, early_sock = new_client(pki, port)
        clients.append((early, early_sock))
        pump(
            [lst, early],
            lambda: connect_outcome(early) is not None,
            what="the refused handshake",
        )
        assert connect_outcome(early) == "refused"
        info = early.get_conn_close_info()
        assert info is not None and "too many connections" in info.reason
        # Accepting one makes room for one more.
        conn = lst.accept_connection()
        assert conn is not None
        late, late_sock = new_client(pki, port)
        clients.append((late, late_sock))
        pump(
            [lst, late],
            lambda: (
                connect_outcome(late) is not None
                and lst.get_accept_connection_queue_len() == 2
            ),
            what="the late handshake",
        )
        assert connect_outcome(late) == "ok"
        conn.free()
    finally:
        for conn, sock in clients:
            conn.free()
            sock.close()
        lst.free()


def test_connection_limit_counts_accepted_connections_until_freed(
    pki: CertFiles,
) -> None:
    lst = make_listener(pki, max_connections=2)
    port = int(lst.local_address()[1])
    accepted: list[quicconn.Connection] = []
    clients: list[tuple[quicconn.Connection, socket.socket]] = []

    def attempt() -> str:
        conn, sock = new_client(pki, port)
        clients.append((conn, sock))

        def take() -> None:
            while (c := lst.accept_connection()) is not None:
                accepted.append(c)

        before = len(accepted)

        def settled() -> bool:
            # A client completes first; the server's side (and the accept
            # queue) once the client's Finished arrived.
            outcome = connect_outcome(conn)
            return outcome is not None and (outcome != "ok" or len(accepted) > before)

        pump([lst, conn], settled, step=take, what="a handshake")
        return connect_outcome(conn) or "pending"

    try:
        assert attempt() == "ok"
        assert attempt() == "ok"
        assert len(accepted) == 2 and lst.get_accept_connection_queue_len() == 0
        assert attempt() == "refused"  # two live connections: the limit
        accepted.pop().free()
        assert attempt() == "ok"  # freeing one made room
    finally:
        for conn in accepted:
            conn.free()
        for conn, sock in clients:
            conn.free()
            sock.close()
        lst.free()


def _check_event_timeout(lst: quicconn.Listener) -> None:
    """The listener's timeout is the earliest deadline of its connections."""
    reactor = lst._reactor
    assert reactor is not None
    before = time.monotonic()
    timeout = lst.get_event_timeout()
    after = time.monotonic()
    deadlines = [t for core in reactor._cores if (t := core.get_timer()) is not None]
    if reactor._dirty:
        assert timeout == 0.0, "work is pending, yet the timeout is not 0"
        return
    if not deadlines:
        assert timeout is None, f"no connection has a timer, yet timeout={timeout}"
        return
    assert timeout is not None, "connections have timers, yet the timeout is infinite"
    earliest = min(deadlines)
    assert timeout <= max(0.0, earliest - before) + 1e-6, (
        f"timeout {timeout:.6f} s overshoots the earliest deadline "
        f"({earliest - before:.6f} s away)"
    )
    assert timeout >= max(0.0, earliest - after) - 1e-6, (
        f"timeout {timeout:.6f} s is earlier than any deadline "
        f"({earliest - after:.6f} s away)"
    )


def test_200_clients_at_once_each_echo_64k_over_one_listener(
    pki: CertFiles,
) -> None:
    clients, size = 200, 65536
    lst = make_listener(pki)
    server = EchoServer(lst)
    port = int(lst.local_address()[1])
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CLIENTS),
            "--port",
            str(port),
            "--ca",
            str(pki.ca),
            "--clients",
            str(clients),
            "--size",
            str(size),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checks = 0
    peak = 0
    try:
        deadline = time.monotonic() + 90
        turn = 0
        while proc.poll() is None or server.conns:
            assert time.monotonic() < deadline, "the clients did not finish in time"
            lst.handle_events()
            server.step()
            peak = max(peak, len(server.conns))
            turn += 1
            if turn % 10 == 0:
                _check_event_timeout(lst)
                checks += 1
            timeout = lst.get_event_timeout()
            wait = 0.05 if timeout is None else min(timeout, 0.05)
            select.select([lst.fileno()], [], [], wait)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for conn in list(server.conns):
            conn.free()
        lst.free()
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    assert result.get("ok") == clients, (result, err[-2000:])
    assert server.errors == []
    assert server.completed == clients
    assert server.bytes_echoed == clients * size
    assert lst.stats.connections_accepted == clients
    assert lst.stats.connections_refused == 0
    assert peak > clients // 2, f"only {peak} connections were ever live at once"
    assert checks > 10
    # Every connection was freed: no state is left behind.
    assert not listener_port(lst).live


def test_a_listener_binding_its_own_socket_enlarges_its_buffers(
    pki: CertFiles,
) -> None:
    with open("/proc/sys/net/core/rmem_max") as fp:
        rmem_max = int(fp.read())
    lst = make_listener(pki)
    try:
        reactor = lst._reactor
        assert reactor is not None
        sock = reactor.transport.socket  # type: ignore[attr-defined]
        # Linux reports twice the size asked for (bookkeeping overhead).
        expected = 2 * min(rmem_max, 4 * 1024 * 1024)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= expected
    finally:
        lst.free()
