"""Server side: listeners, accept_connection()/accept(), Retry, Version
Negotiation, stateless reset, anti-amplification, against quicconn and
independent clients over loopback UDP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import quicconn
from quicconn._objects.connection import channel_of
from quicconn._objects.listener import port_of as listener_port
from quicconn.testing import DatagramPair, FakeClock
from tests.support.certs import CertFiles
from tests.support.cores import Capability, capabilities, require
from tests.support.loop import pump, run_for

ALPN = ["quicconn-test"]
PATTERN = bytes(range(256)) * 1024  # 256 KiB


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------


def server_ctx(pki: CertFiles, alpn: list[str] | None = None) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(alpn or ALPN)
    return ctx


def client_ctx(pki: CertFiles, alpn: list[str] | None = None) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(alpn or ALPN)
    return ctx


def new_client(
    pki: CertFiles, port: int, *, blocking: bool = True
) -> tuple[quicconn.Connection, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = quicconn.Connection(client_ctx(pki))
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("localhost")
    conn.set_blocking_mode(blocking)
    return conn, sock


def echo_blocking(conn: quicconn.Connection) -> int:
    """The loop of OpenSSL's quic-server-block.c: echo until FIN, conclude."""
    conn.accept()
    total = 0
    while True:
        try:
            data = conn.read(65536)
        except quicconn.ZeroReturnError:
            break
        conn.write(data)
        total += len(data)
    conn.stream_conclude()
    conn.shutdown()
    return total


class ServerThread:
    """Accept ``count`` connections on a blocking listener and echo on each."""

    def __init__(self, listener: quicconn.Listener, count: int = 1) -> None:
        self.listener = listener
        self.echoed: list[int] = []
        self.conns: list[quicconn.Connection] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(count,), daemon=True)
        self._thread.start()

    def _run(self, count: int) -> None:
        for _ in range(count):
            try:
                conn = self.listener.accept_connection()
                assert conn is not None
                self.conns.append(conn)
                self.echoed.append(echo_blocking(conn))
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)
                return

    def join(self, timeout: float = 20.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the server thread did not finish"
        if self.errors:
            raise self.errors[0]


def completes(call: Any) -> bool:
    """Run a nonblocking call; False if it wants to be retried."""
    try:
        call()
    except (quicconn.WantReadError, quicconn.WantWriteError):
        return False
    return True


@pytest.fixture
def listener(pki: CertFiles) -> Iterator[quicconn.Listener]:
    lst = quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN)
    yield lst
    lst.free()


def port_of(lst: quicconn.Listener) -> int:
    return int(lst.local_address()[1])


def pair_endpoints(
    pki: CertFiles, pair: DatagramPair, *, idle_timeout: float
) -> tuple[quicconn.Listener, quicconn.Connection]:
    """A listening nonblocking listener (no address validation) and a
    nonblocking client to it, on the in-memory pair."""
    ctx = server_ctx(pki)
    ctx.idle_timeout = idle_timeout
    lst = ctx.new_listener(pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    lst.listen()
    cctx = client_ctx(pki)
    cctx.idle_timeout = idle_timeout
    client = quicconn.Connection(cctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    return lst, client


def handshake_nonblocking(
    lst: quicconn.Listener,
    client: quicconn.Connection,
    prepare: Any = None,
) -> quicconn.Connection:
    """Pump a nonblocking listener and client through a handshake; the
    accepted connection (``prepare(conn)`` called on it first)."""
    accepted: list[quicconn.Connection] = []

    def take() -> None:
        if not accepted and (conn := lst.accept_connection()) is not None:
            if prepare is not None:
                prepare(conn)
            accepted.append(conn)

    def connected() -> bool:
        try:
            client.connect()
        except quicconn.WantReadError:
            return False
        return bool(accepted)

    pump([lst, client], connected, step=take, what="the handshake")
    return accepted[0]


# ----------------------------------------------------------------------
# quicconn client <-> quicconn server over loopback
# ----------------------------------------------------------------------


def test_blocking_client_and_server_echo_over_loopback(
    pki: CertFiles, listener: quicconn.Listener
) -> None:
    server = ServerThread(listener)
    with quicconn.connect(
        "127.0.0.1", port_of(listener), alpn=ALPN, cafile=str(pki.ca)
    ) as conn:
        conn.write_ex2(PATTERN, quicconn.WRITE_FLAG_CONCLUDE)
        received = bytearray()
        while True:
            try:
                received += conn.read()
            except quicconn.ZeroReturnError:
                break
    server.join()
    assert bytes(received) == PATTERN
    assert server.echoed == [len(PATTERN)]
    accepted = server.conns[0]
    assert accepted.is_server()
    assert accepted.get0_alpn_selected() == "quicconn-test"
    # Retry address validation is on by default.
    assert listener.validates_addresses
    assert listener.stats.retries_sent == 1
    assert listener.stats.connections_accepted == 1


def test_nonblocking_client_and_server_in_one_loop(pki: CertFiles) -> None:
    ctx = server_ctx(pki)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    lst = ctx.new_listener(sock)
    lst.set_blocking_mode(False)
    lst.listen()
    client, csock = new_client(pki, sock.getsockname()[1], blocking=False)
    try:
        # Nothing is waiting: a nonblocking listener returns None at once.
        assert lst.accept_connection() is None
        with pytest.raises(quicconn.WantReadError):
            client.connect()
        assert client.get_error() == quicconn.ERROR_WANT_READ

        accepted: list[quicconn.Connection] = []

        def take() -> None:
            conn = lst.accept_connection()
            if conn is not None:
                accepted.append(conn)

        pump([lst, client], lambda: bool(accepted), step=take, what="a connection")
        server = accepted[0]
        # Handed out once its handshake completed (a half-open connection
        # never reaches the accept queue), nonblocking like its listener.
        assert not server.get_blocking_mode()
        assert server.is_init_finished()
        assert server.accept() is None
        assert server.get_error() == 0

        def handshakes_done() -> bool:
            for conn, method in ((server, server.accept), (client, client.connect)):
                try:
                    method()
                except quicconn.WantReadError:
                    return False
                assert conn.is_init_finished()
            return True

        pump([lst, client], handshakes_done, what="both handshakes")

        # Echo 256 KiB with nonblocking writes and reads on both sides.
        to_send = memoryview(PATTERN)
        echoed = bytearray()
        pending = bytearray()
        server_fin = False
        client_got = bytearray()
        client_done = False

        def step() -> None:
            nonlocal to_send, server_fin, client_done
            if to_send:
                try:
                    n = client.write(to_send[:65536])
                    to_send = to_send[n:]
                except quicconn.WantWriteError:
                    pass
                if not to_send:
                    client.stream_conclude()
            if not server_fin:
                try:
                    data = server.read()
                    echoed.extend(data)
                    pending.extend(data)
                except quicconn.WantReadError:
                    pass
                except quicconn.ZeroReturnError:
                    server_fin = True
            if pending:
                try:
                    n = server.write(pending)
                    del pending[:n]
                except quicconn.WantWriteError:
                    pass
            if server_fin and not pending:
                server.stream_conclude()
            try:
                client_got.extend(client.read())
            except quicconn.WantReadError:
                pass
            except quicconn.ZeroReturnError:
                client_done = True

        pump([lst, client], lambda: client_done, step=step, what="the echo")
        assert bytes(client_got) == PATTERN
        assert bytes(echoed) == PATTERN
        client.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
    finally:
        client.free()
        csock.close()
        lst.free()
        sock.close()


def test_accept_connection_no_block_returns_none_on_a_blocking_listener(
    listener: quicconn.Listener,
) -> None:
    assert listener.get_blocking_mode()
    started = time.monotonic()
    assert listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK) is None
    assert time.monotonic() - started < 1.0
    with pytest.raises(ValueError, match="flags"):
        listener.accept_connection(0x80)


def test_accept_queue_holds_connections_until_accepted(pki: CertFiles) -> None:
    lst = quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN)
    lst.set_blocking_mode(False)
    clients = [new_client(pki, port_of(lst), blocking=False) for _ in range(3)]
    try:
        for conn, _ in clients:
            with pytest.raises(quicconn.WantReadError):
                conn.connect()

        def all_connected() -> bool:
            done = 0
            for conn, _ in clients:
                try:
                    conn.connect()
                    done += 1
                except quicconn.WantReadError:
                    pass
            return done == len(clients)

        # The handshakes complete although nobody called accept_connection();
        # a connection is queued once the server's side of it completed too
        # (the client's Finished arrived).
        pump([lst] + [c for c, _ in clients], all_connected, what="3 handshakes")
        pump(
            [lst],
            lambda: lst.get_accept_connection_queue_len() == 3,
            what="3 queued connections",
        )
        first = lst.accept_connection()
        assert first is not None
        assert lst.get_accept_connection_queue_len() == 2
        assert not first.get_blocking_mode()  # inherited from the listener
        pump([lst], lambda: completes(first.accept), what="the server handshake")
        assert first.is_init_finished()
        first.free()
    finally:
        for conn, sock in clients:
            conn.free()
            sock.close()
        lst.free()


@pytest.mark.parametrize("listener_role", ["client", "server"])
def test_new_from_listener_makes_a_client_on_the_listener_socket(
    pki: CertFiles, listener: quicconn.Listener, listener_role: str
) -> None:
    server = ServerThread(listener)
    if listener_role == "client":
        # OpenSSL's client-only listener: a client SSL_CTX implies NO_ACCEPT,
        # and new_from_listener() takes the listener's context.
        other = client_ctx(pki).new_listener(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="accepts no connections"):
            other.accept_connection()
    else:
        other = server_ctx(pki).new_listener(("127.0.0.1", 0))
    try:
        if listener_role == "client":
            conn = other.new_from_listener()
        else:
            with pytest.raises(ValueError, match="client Context"):
                other.new_from_listener()
            conn = other.new_from_listener(ctx=client_ctx(pki))
        conn.set1_initial_peer_addr(("127.0.0.1", port_of(listener)))
        conn.set1_host("localhost")
        conn.connect()
        # The client's datagrams leave from the other listener's socket.
        assert conn.fileno() == other.fileno()
        conn.write_ex2(b"over a shared socket", quicconn.WRITE_FLAG_CONCLUDE)
        reply = b""
        while True:
            try:
                reply += conn.read()
            except quicconn.ZeroReturnError:
                break
        assert reply == b"over a shared socket"
        conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
        conn.free()
        server.join()
        assert server.conns[0].get0_alpn_selected() == "quicconn-test"
        assert server.conns[0].get0_listener() is listener
        assert listener.is_listener() and not conn.is_listener()
        remote = channel_of(server.conns[0]).require_core().peer_address()
        assert remote is not None and remote[1] == other.local_address()[1]
    finally:
        other.free()


def test_listen_helper_binds_and_listens(pki: CertFiles) -> None:
    with quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN, idle_timeout=5
    ) as lst:
        assert port_of(lst) > 0
        # As OpenSSL 3.5: before its first tick a listener is due at once
        # and does not want to read (tests/differential: listener_accepts).
        assert not lst.net_read_desired()
        assert lst.get_event_timeout() == 0.0
        lst.handle_events()
        assert lst.net_read_desired()
        assert lst.get_event_timeout() is None  # no connection, no timer
    with pytest.raises(TypeError, match="unknown option"):
        quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), bogus=1)


def test_listener_misuse_raises_actionable_errors(pki: CertFiles) -> None:
    bare = quicconn.Context(quicconn.SERVER)
    with pytest.raises(ValueError, match="load_cert_chain"):
        bare.new_listener(("127.0.0.1", 0))
    with pytest.raises(ValueError, match="unknown listener flags"):
        server_ctx(pki).new_listener(("127.0.0.1", 0), 0x100)
    with pytest.raises(TypeError, match="bound UDP socket"):
        server_ctx(pki).new_listener("127.0.0.1:4433")
    lst = server_ctx(pki).new_listener(
        ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_ACCEPT
    )
    lst.listen()  # allowed: it starts handling the network, nothing more
    with pytest.raises(ValueError, match="NO_ACCEPT"):
        lst.accept_connection()
    lst.free()
    with pytest.raises(ValueError, match="freed"):
        lst.accept_connection()
    with pytest.raises(quicconn.SyscallError):
        server_ctx(pki).new_listener(("192.0.2.1", 1))  # not a local address


def test_freeing_the_listener_wakes_a_thread_blocked_in_accept(
    pki: CertFiles,
) -> None:
    lst = quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            outcome.append(lst.accept_connection() and None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.2)  # let it block in poll()
    lst.free()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome[0], quicconn.SyscallError)


# ----------------------------------------------------------------------
# aioquic's asyncio client against a quicconn server; Retry on the wire
# ----------------------------------------------------------------------


def aioquic_echo(port: int, ca: str, payload: bytes, quic_logger: Any = None) -> bytes:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    async def run() -> bytes:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=ALPN, verify_mode=ssl.CERT_REQUIRED
        )
        config.load_verify_locations(ca)
        config.quic_logger = quic_logger
        async with connect("localhost", port, configuration=config) as client:
            reader, writer = await client.create_stream()
            writer.write(payload)
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 20)
            client.close()
            return data

    return asyncio.run(run())


def received_packet_types(quic_logger: Any) -> list[str]:
    events = quic_logger.to_dict()["traces"][0]["events"]
    return [
        e["data"]["header"]["packet_type"]
        for e in events
        if e["name"] == "transport:packet_received"
    ]


@pytest.mark.parametrize("validate", [True, False], ids=["retry", "no-validate"])
def test_aioquic_client_sees_retry_only_when_validation_is_on(
    pki: CertFiles, validate: bool
) -> None:
    from aioquic.quic.logger import QuicLogger

    flags = 0 if validate else quicconn.LISTENER_FLAG_NO_VALIDATE
    lst = server_ctx(pki).new_listener(("127.0.0.1", 0), flags)
    server = ServerThread(lst)
    try:
        qlog = QuicLogger()
        reply = aioquic_echo(port_of(lst), str(pki.ca), PATTERN[:50_000], qlog)
        server.join()
    finally:
        lst.free()
    assert reply == PATTERN[:50_000]
    types = received_packet_types(qlog)
    assert "handshake" in types and "1RTT" in types
    assert ("retry" in types) is validate
    assert types.count("retry") == (1 if validate else 0)
    assert lst.stats.retries_sent == (1 if validate else 0)
    assert lst.validates_addresses is validate


def test_quicconn_client_qlog_shows_the_retry(pki: CertFiles, tmp_path: Any) -> None:
    import json

    lst = quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=ALPN)
    server = ServerThread(lst)
    try:
        conn = quicconn.connect(
            "localhost",
            port_of(lst),
            alpn=ALPN,
            cafile=str(pki.ca),
            qlog_dir=str(tmp_path),
        )
        conn.write_ex2(b"x", quicconn.WRITE_FLAG_CONCLUDE)
        assert conn.read() == b"x"
        conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
        conn.free()
        server.join()
    finally:
        lst.free()
    (trace_file,) = list(tmp_path.glob("*.qlog"))
    events = json.loads(trace_file.read_text())["traces"][0]["events"]
    received = [
        e["data"]["header"]["packet_type"]
        for e in events
        if e["name"] == "transport:packet_received"
    ]
    assert received[0] == "retry"


# ----------------------------------------------------------------------
# Version Negotiation
# ----------------------------------------------------------------------


def long_header_probe(version: int, size: int = 1200) -> tuple[bytes, bytes, bytes]:
    dcid, scid = os.urandom(8), os.urandom(5)
    head = bytes([0xC0]) + struct.pack("!I", version)
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    return head + os.urandom(size - len(head)), dcid, scid


@pytest.mark.parametrize(
    "version",
    [0x57414954, 0x1A2A3A4A, 0xFF00001D],
    ids=["interop-runner-WAIT-probe", "grease", "draft-29"],
)
def test_unknown_versions_get_version_negotiation(
    listener: quicconn.Listener, version: int
) -> None:
    probe, dcid, scid = long_header_probe(version)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        reply = b""
        deadline = time.monotonic() + 5
        sock.sendto(probe, ("127.0.0.1", port_of(listener)))
        while not reply and time.monotonic() < deadline:
            listener.handle_events()
            try:
                reply = sock.recv(2048)
            except TimeoutError:
                continue
    assert reply[0] & 0x80, "a Version Negotiation packet has a long header"
    assert struct.unpack("!I", reply[1:5])[0] == 0
    offset = 5
    got_dcid = reply[offset + 1 : offset + 1 + reply[offset]]
    offset += 1 + reply[offset]
    got_scid = reply[offset + 1 : offset + 1 + reply[offset]]
    offset += 1 + reply[offset]
    assert got_dcid == scid and got_scid == dcid  # swapped, RFC 9000 17.2.1
    versions = {
        struct.unpack("!I", reply[i : i + 4])[0] for i in range(offset, len(reply), 4)
    }
    assert {0x00000001, 0x6B3343CF} <= versions
    assert version not in versions
    assert listener.stats.version_negotiations_sent == 1
    assert listener.stats.connections_accepted == 0


def test_short_datagram_with_unknown_version_is_dropped(
    listener: quicconn.Listener,
) -> None:
    probe, _, _ = long_header_probe(0x57414954, size=300)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(probe, ("127.0.0.1", port_of(listener)))
        pump(
            [listener],
            lambda: listener.stats.datagrams_dropped == 1,
            what="the probe to be dropped",
        )
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(2048)
    assert listener.stats.version_negotiations_sent == 0


# ----------------------------------------------------------------------
# stateless reset
# ----------------------------------------------------------------------


@pytest.mark.usefixtures("each_core")
def test_a_freed_connection_drains_before_its_ids_earn_stateless_resets(
    pki: CertFiles,
) -> None:
    """A connection the peer closed and the application freed at once (the
    many-client example does) keeps its IDs through its draining period:
    the peer's late packets are dropped, not answered with a stateless
    reset (RFC 9000 section 10.2); afterwards the IDs are forgotten."""
    lst = server_ctx(pki).new_listener(("127.0.0.1", 0))
    lst.set_blocking_mode(False)
    client, csock = new_client(pki, port_of(lst), blocking=False)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reactor = listener_port(lst).reactor
    try:
        server = handshake_nonblocking(lst, client)
        cids = list(reactor._by_cid)
        assert cids
        client.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
        pump([lst], lambda: server.get_conn_close_info() is not None, what="the close")
        server.free()

        def late_packet() -> None:
            # A short-header datagram to the freed connection's ID.
            junk.sendto(b"\x41" + cids[0] + os.urandom(60), ("127.0.0.1", port_of(lst)))

        late_packet()
        run_for([lst], 0.05)
        assert lst.stats.stateless_resets_sent == 0
        pump([lst], lambda: cids[0] not in reactor._by_cid, what="the draining period")
        late_packet()
        pump([lst], lambda: lst.stats.stateless_resets_sent == 1, what="a reset")
    finally:
        junk.close()
        client.free()
        csock.close()
        lst.free()


def test_client_of_a_freed_server_connection_is_reset_promptly(
    pki: CertFiles,
) -> None:
    ctx = server_ctx(pki)
    ctx.idle_timeout = 30
    lst = ctx.new_listener(("127.0.0.1", 0))
    lst.set_blocking_mode(False)
    client, csock = new_client(pki, port_of(lst), blocking=False)
    try:
        accepted: list[quicconn.Connection] = []

        def step() -> None:
            if not accepted:
                conn = lst.accept_connection()
                if conn is not None:
                    accepted.append(conn)
            with_conn = accepted[0] if accepted else None
            if with_conn is not None:
                with contextlib.suppress(quicconn.WantReadError):
                    with_conn.accept()

        def connected() -> bool:
            try:
                client.connect()
            except quicconn.WantReadError:
                return False
            return bool(accepted) and accepted[0].is_init_finished()

        pump([lst, client], connected, step=step, what="the handshake")
        # The server forgets the connection without telling the client.
        accepted[0].free()
        assert listener_port(lst).live == 0
        started = time.monotonic()
        client.write(b"anyone there?")
        failure: list[quicconn.Error] = []

        def client_failed() -> bool:
            try:
                client.read()
            except quicconn.WantReadError:
                return False
            except quicconn.Error as exc:
                failure.append(exc)
                return True
            raise AssertionError("the client read data from a dead connection")

        pump([lst, client], client_failed, timeout=5, what="the stateless reset")
        elapsed = time.monotonic() - started
    finally:
        client.free()
        csock.close()
        lst.free()
    assert isinstance(failure[0], quicconn.ConnectionTerminatedError)
    info = client.get_conn_close_info()
    assert info is not None and info.reason == "stateless reset received"
    assert not info.is_local
    assert lst.stats.stateless_resets_sent >= 1
    assert elapsed < 2.0, f"the reset took {elapsed:.2f} s (idle timeout is 30 s)"


def test_stateless_reset_tokens_survive_a_listener_restart_with_the_same_key(
    pki: CertFiles,
) -> None:
    # A server that restarts with the same reset key can reset the clients
    # of its previous incarnation (RFC 9000 section 10.3.2).
    key = os.urandom(32)
    ctx = server_ctx(pki)
    ctx.stateless_reset_key = key
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    first = ctx.new_listener(sock, quicconn.LISTENER_FLAG_NO_VALIDATE)
    first.set_blocking_mode(False)
    client, csock = new_client(pki, port, blocking=False)
    second = None
    try:
        accepted = handshake_nonblocking(first, client)
        first.free()  # the "crash": all state is gone, the socket stays
        accepted.free()
        second = ctx.new_listener(sock)
        second.listen()
        client.write(b"hello again")

        def reset() -> bool:
            return client.get_conn_close_info() is not None

        pump([second, client], reset, timeout=5, what="the stateless reset")
        info = client.get_conn_close_info()
        assert info is not None and info.reason == "stateless reset received"
    finally:
        client.free()
        csock.close()
        if second is not None:
            second.free()
        sock.close()


# ----------------------------------------------------------------------
# anti-amplification (deterministic: DatagramPair + FakeClock)
# ----------------------------------------------------------------------


def test_server_sends_at_most_three_times_what_an_unvalidated_client_sent(
    pki: CertFiles,
) -> None:
    clock = FakeClock()
    pair = DatagramPair(clock)
    # Only the client's very first datagram (its Initial) ever arrives.
    pair.to_server.drop = lambda index, _data: index > 0
    lst, client = pair_endpoints(pki, pair, idle_timeout=10)
    try:
        with pytest.raises(quicconn.WantReadError):
            client.connect()
        received = sum(n for _, n, lost in pair.to_server.log if not lost)
        assert received >= 1200
        samples = []
        for _ in range(400):  # 400 x 50 ms: through every PTO to the idle timeout
            lst.handle_events()
            client.handle_events()
            sent = sum(n for _, n, _lost in pair.to_client.log)
            samples.append(sent)
            assert sent <= 3 * received, (
                f"server sent {sent} bytes to an unvalidated address that "
                f"sent {received}"
            )
            clock.advance(0.05)
        assert samples[-1] > 0, "the server never answered the Initial"
        # The server retransmitted (PTO) but stayed within the limit, and the
        # abandoned connection is gone once its idle timeout passed.
        assert lst.get_accept_connection_queue_len() == 0
        assert listener_port(lst).live == 0
        assert lst.get_event_timeout() is None
    finally:
        client.free()
        lst.free()


def test_a_client_probes_when_the_server_is_held_by_its_amplification_limit(
    pki: CertFiles,
) -> None:
    # RFC 9002 section 6.2.2.1: until the server has validated its address,
    # a client arms its PTO even with nothing in flight, and sends a probe
    # when it fires; otherwise a server that spent its 3x budget on a lost
    # flight and a client with nothing left to acknowledge wait for each
    # other until the idle timeout (seen in the interop matrix's
    # handshakeloss and handshakecorruption between qh3-core ends).
    clock = FakeClock()
    pair = DatagramPair(clock)

    def handshake_lost(index: int, data: bytes) -> bool:
        # Every server datagram that starts with a Handshake packet is lost,
        # among the first 12: the server's first flights never arrive.
        return index < 12 and data[0] & 0xF0 == 0xE0

    pair.to_client.drop = handshake_lost
    # And the client's acknowledgements of the server's Initials, after its
    # ClientHello (one or two datagrams), are lost too: the server gains no
    # budget from them.
    pair.to_server.drop = lambda index, _data: 2 <= index < 10
    lst, client = pair_endpoints(pki, pair, idle_timeout=30)
    try:
        connected = False
        for _ in range(2000):  # 2000 x 10 ms: within the idle timeout
            with contextlib.suppress(quicconn.WantReadError):
                client.connect()
                connected = True
                break
            lst.handle_events()
            client.handle_events()
            clock.advance(0.01)
        assert pair.to_client.dropped > 0, "the scenario lost nothing"
        assert connected, (
            "the handshake stalled: server sent "
            f"{sum(n for _, n, _ in pair.to_client.log)} bytes, client "
            f"{sum(n for _, n, _ in pair.to_server.log)}"
        )
    finally:
        client.free()
        lst.free()


# ----------------------------------------------------------------------
# flow control bounds a connection whose application never reads
# ----------------------------------------------------------------------


#: The most stream data qh3 delivers in one event (its MAX_STREAM_EVENT_SIZE).
QH3_EVENT_MAX = 64 * 1024


@pytest.mark.usefixtures("each_core")  # each core bounds it its own way
def test_memory_of_a_never_reading_server_is_bounded_by_its_windows(
    pki: CertFiles,
) -> None:
    ctx = server_ctx(pki)
    ctx.max_data = 256 * 1024
    ctx.max_stream_data = 64 * 1024
    lst = ctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    client, csock = new_client(pki, port_of(lst), blocking=False)
    try:
        server = handshake_nonblocking(
            lst,
            client,
            lambda conn: conn.set_incoming_stream_policy(
                quicconn.INCOMING_STREAM_POLICY_ACCEPT
            ),
        )
        # The client pushes 2 MiB on each of 8 streams; the server app never
        # calls read().  Partial writes, so that ``offered`` is exact: without,
        # a write that raises WantWriteError may already have sent part of
        # the chunk (OpenSSL's retry semantics).
        client.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
        outgoing = [client.new_stream() for _ in range(8)]
        offered = [0] * len(outgoing)
        chunk = b"z" * 65536

        def push() -> None:
            for i, stream in enumerate(outgoing):
                if offered[i] >= 2 * 1024 * 1024:
                    continue
                with contextlib.suppress(quicconn.WantWriteError):
                    offered[i] += stream.write(chunk)

        def server_buffered() -> int:
            return sum(
                rec.buffered for rec in channel_of(server).streams.records.values()
            )

        pump(
            [lst, client],
            lambda: server_buffered() >= ctx.max_data,
            step=push,
            what="the connection window to fill",
        )
        run_for([lst, client], 0.5, step=push)  # keep pushing: nothing more fits
        buffered = server_buffered()
        per_stream = max(
            rec.buffered for rec in channel_of(server).streams.records.values()
        )
        client_core = channel_of(client).core
        assert client_core is not None

        def delivered() -> int:
            """Bytes the server acknowledged: what reached its core."""
            return sum(
                offered[i] - client_core.send_buffered(stream.get_stream_id())
                for i, stream in enumerate(outgoing)
            )

        exact = Capability.CREDIT_ON_CONSUME in capabilities()
        if exact:
            # The client got exactly the credit the windows allow, no more.
            assert buffered == ctx.max_data
            assert per_stream <= ctx.max_stream_data
            assert delivered() == ctx.max_data
        else:
            # qh3 grants credit as events are taken from its core; quicconn
            # takes none while the application holds max_data unread, so
            # what it holds stops there, give or take one event (qh3 merges
            # up to 64 KiB into one), and the core holds at most the window
            # it granted: nothing more arrives however long the client pushes.
            # The bound on the server's memory is therefore twice max_data
            # and one event: the first window, held by the application, and
            # the credit granted for it, held in qh3's core.
            assert ctx.max_data <= buffered < ctx.max_data + QH3_EVENT_MAX
            reached = delivered()
            assert buffered <= reached <= 2 * ctx.max_data + QH3_EVENT_MAX
            run_for([lst, client], 0.3, step=push)
            assert server_buffered() == buffered
            assert delivered() == reached
        # Reading releases credit, and the client can go on.
        before = buffered
        incoming = []
        while (
            stream := server.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
        ) is not None:
            incoming.append(stream)
        assert sum(len(stream.read()) for stream in incoming) == before
        pump(
            [lst, client],
            lambda: server_buffered() >= ctx.max_data,
            step=push,
            what="the window to fill again",
        )
        run_for([lst, client], 0.2, step=push)
        if exact:
            assert server_buffered() == ctx.max_data
        else:
            assert ctx.max_data <= server_buffered() < ctx.max_data + QH3_EVENT_MAX
    finally:
        client.free()
        csock.close()
        lst.free()


# ----------------------------------------------------------------------
# independent clients: OpenSSL 3.5 s_client, ngtcp2 gtlsclient
# ----------------------------------------------------------------------


@pytest.mark.peer
def test_openssl_s_client_gets_an_hq_interop_answer(
    pki: CertFiles, openssl35: str
) -> None:
    import subprocess

    from tests.support.hq import start_responder

    body = b"served by quicconn to OpenSSL\n" * 100
    lst = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["hq-interop"]
    )
    thread, log = start_responder(lst, {"/hello.txt": body})
    args = [
        openssl35,
        "s_client",
        "-quic",
        "-alpn",
        "hq-interop",
        "-connect",
        f"127.0.0.1:{port_of(lst)}",
        "-CAfile",
        str(pki.ca),
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-quiet",
        "-no_ign_eof",
    ]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"GET /hello.txt\r\n")
        proc.stdin.flush()
        received = bytearray()
        reader = threading.Thread(
            target=lambda: received.extend(proc.stdout.read(len(body))),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(20)
        proc.stdin.close()  # s_client closes the connection at EOF
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
        thread.join(10)
        lst.free()
    assert bytes(received) == body, proc.stderr.read().decode()  # type: ignore[union-attr]
    assert log.alpn == ["hq-interop"]
    assert log.requests == [b"GET /hello.txt"]
    assert not log.errors
    # s_client followed the Retry; its ClientHello (with an ML-KEM key share)
    # spans two Initial datagrams, and a stateless server answers each.
    assert lst.stats.retries_sent >= 1
    assert lst.stats.connections_accepted == 1


@pytest.mark.peer
def test_ngtcp2_client_completes_an_h3_handshake(pki: CertFiles) -> None:
    import shutil

    from tests.conftest import peer_process

    gtlsclient = shutil.which("gtlsclient")
    if gtlsclient is None:
        pytest.fail("gtlsclient is not installed: apt-get install ngtcp2-client")
    lst = quicconn.listen(("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3"])
    port = port_of(lst)
    args = [
        gtlsclient,
        "-q",
        "--exit-on-all-streams-close",
        "--timeout=5s",
        "127.0.0.1",
        str(port),
        f"https://127.0.0.1:{port}/",
    ]
    try:
        with peer_process(args):
            conn = lst.accept_connection()
            assert conn is not None
            conn.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
            conn.accept()
            assert conn.is_init_finished()
            assert conn.get0_alpn_selected() == "h3"
            # The client opens its HTTP/3 control and QPACK streams at once.
            streams = []
            deadline = time.monotonic() + 5
            while len(streams) < 3 and time.monotonic() < deadline:
                stream = conn.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
                if stream is None:
                    lst.handle_events()
                    time.sleep(0.01)
                else:
                    streams.append(stream)
            assert {s.get_stream_type() for s in streams} >= {quicconn.STREAM_TYPE_READ}
            conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID, 0x100, "H3_NO_ERROR")
            conn.free()
    finally:
        lst.free()
    assert lst.stats.retries_sent == 1  # gtlsclient followed the Retry


def junk_initial(size: int = 1200) -> bytes:
    """A datagram shaped like a v1 Initial whose payload is random bytes."""
    head = bytes([0xC3]) + struct.pack("!I", 1)
    head += bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8) + b"\x00"
    length = size - len(head) - 2
    return head + struct.pack("!H", 0x4000 | length) + os.urandom(length)


def test_undecryptable_initials_take_no_connection_slot(pki: CertFiles) -> None:
    # Without Retry, anything shaped like an Initial reaches connection
    # creation; only a packet that decrypts may create a connection.
    lst = server_ctx(pki).new_listener(
        ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    lst.listen()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                sock.sendto(junk_initial(), ("127.0.0.1", port_of(lst)))
            pump(
                [lst],
                lambda: lst.stats.datagrams_dropped == 50,
                what="50 junk Initials to be dropped",
            )
        assert lst.get_accept_connection_queue_len() == 0
        assert lst.stats.connections_accepted == 0
        assert not listener_port(lst).live
        assert lst.get_event_timeout() is None
    finally:
        lst.free()


def ping_only_initial(dcid: bytes, scid: bytes, packet_number: int) -> bytes:
    """A client Initial (v1) carrying only PING, padded: a PTO probe."""
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import QuicFrameType, QuicPacketType
    from aioquic.quic.packet_builder import QuicPacketBuilder

    crypto = CryptoPair()
    crypto.setup_initial(dcid, is_client=True, version=1)
    builder = QuicPacketBuilder(
        host_cid=scid,
        peer_cid=dcid,
        version=1,
        is_client=True,
        max_datagram_size=1200,
        packet_number=packet_number,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    builder.start_frame(QuicFrameType.PING)
    (datagram,), _ = builder.flush()
    return datagram


class HandDrivenAioquicClient:
    """aioquic's sans-I/O client on a UDP socket, pollable like a quicconn object."""

    def __init__(self, pki: CertFiles, server: tuple[str, int]) -> None:
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection

        config = QuicConfiguration(is_client=True, alpn_protocols=ALPN)
        config.load_verify_locations(str(pki.ca))
        config.server_name = "localhost"
        self.quic = QuicConnection(configuration=config)
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.quic.connect(server, now=time.monotonic())
        self.handshake_done = False
        self.closed = False

    def first_flight(self) -> list[bytes]:
        return [d for d, _ in self.quic.datagrams_to_send(now=time.monotonic())]

    def handle_events(self) -> None:
        from aioquic.quic import events

        now = time.monotonic()
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now)
        with contextlib.suppress(BlockingIOError):
            while True:
                data, addr = self.sock.recvfrom(65536)
                self.quic.receive_datagram(data, addr, now=now)
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted):
                self.handshake_done = True
            elif isinstance(event, events.ConnectionTerminated):
                self.closed = True
        for data, addr in self.quic.datagrams_to_send(now=now):
            self.sock.sendto(data, addr)

    def get_event_timeout(self) -> float | None:
        timer = self.quic.get_timer()
        return None if timer is None else max(0.0, timer - time.monotonic())

    def get_rpoll_descriptor(self) -> int:
        return self.sock.fileno()


def test_a_ping_only_probe_ahead_of_the_client_hello_is_not_fatal(
    pki: CertFiles,
) -> None:
    # OpenSSL's client probes with PING-only Initials: when its first
    # Initial is lost, such a probe is the first packet to arrive.  RFC 9000
    # asks for CRYPTO in the first packet *sent*; on every core the server
    # must not close over it, and completes the handshake when the
    # ClientHello comes again (on qh3 the probe is dropped: qh3 would close).
    lst = server_ctx(pki).new_listener(
        ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    lst.listen()
    client = HandDrivenAioquicClient(pki, ("127.0.0.1", port_of(lst)))
    try:
        client.first_flight()  # the ClientHello, lost
        quic = client.quic
        probe = ping_only_initial(quic._peer_cid.cid, quic.host_cid, packet_number=9)
        client.sock.sendto(probe, client.server)
        pump(
            [lst, client],
            lambda: client.handshake_done or client.closed,
            what="the handshake",
        )
        assert client.handshake_done and not client.closed
        conn = lst.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        assert conn is not None and conn.get_conn_close_info() is None
        conn.free()
    finally:
        client.sock.close()
        lst.free()


@pytest.mark.usefixtures("each_core")
def test_a_ping_only_probe_ahead_of_the_client_hello_is_acknowledged(
    pki: CertFiles,
) -> None:
    # Better still, the server acknowledges the probe (which tells the
    # client its ClientHello was lost) and keeps the connection it began.
    require(Capability.PING_FIRST_INITIAL)
    lst = server_ctx(pki).new_listener(
        ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
    )
    lst.listen()
    client = HandDrivenAioquicClient(pki, ("127.0.0.1", port_of(lst)))
    try:
        client.first_flight()  # the ClientHello, lost
        quic = client.quic
        probe = ping_only_initial(quic._peer_cid.cid, quic.host_cid, packet_number=9)
        client.sock.sendto(probe, client.server)
        # The probe began a (half-open) connection.
        pump([lst], lambda: listener_port(lst).live == 1, what="probe")
        pump(
            [lst, client],
            lambda: client.handshake_done or client.closed,
            what="the handshake",
        )
        assert client.handshake_done and not client.closed
        conn = lst.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
        assert conn is not None and conn.get_conn_close_info() is None
        conn.free()
    finally:
        client.sock.close()
        lst.free()


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_accept_on_a_failed_socket_raises_syscall_error(
    pki: CertFiles, blocking: bool
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    lst = server_ctx(pki).new_listener(sock)
    lst.set_blocking_mode(blocking)
    sock.close()  # pulled out from under the listener
    started = time.process_time()
    with pytest.raises(quicconn.SyscallError, match="socket failed"):
        lst.accept_connection()
    assert lst.get_error() == quicconn.ERROR_SYSCALL
    assert time.process_time() - started < 0.5  # no spinning on a dead descriptor
    lst.free()


def test_ipv6_loopback_listener_serves_a_client(pki: CertFiles) -> None:
    lst = quicconn.listen(("::1", 0), str(pki.cert), str(pki.key), alpn=ALPN)
    server = ServerThread(lst)
    try:
        with quicconn.connect(
            "::1", port_of(lst), alpn=ALPN, cafile=str(pki.ca)
        ) as conn:
            conn.write_ex2(b"over IPv6", quicconn.WRITE_FLAG_CONCLUDE)
            assert conn.read() == b"over IPv6"
        server.join()
    finally:
        lst.free()
    assert lst.stats.retries_sent == 1


@pytest.mark.usefixtures("each_core")
def test_streams_a_server_never_accepts_cannot_pile_up(pki: CertFiles) -> None:
    # aioquic alone lets a peer open a new stream whenever it discarded a
    # finished one, accepted or not: a client could queue unbounded streams.
    # (qh3 does the same, and quicconn cannot hold its credit back.)
    require(Capability.STREAM_CREDIT_ON_RELEASE)
    ctx = server_ctx(pki)
    lst = ctx.new_listener(("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE)
    lst.set_blocking_mode(False)
    client, csock = new_client(pki, port_of(lst), blocking=False)
    try:
        accepted: list[quicconn.Connection] = []

        def take() -> None:
            conn = lst.accept_connection()
            if conn is not None:
                conn.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
                accepted.append(conn)

        pump(
            [lst, client],
            lambda: completes(client.connect) and bool(accepted),
            step=take,
            what="the handshake",
        )
        opened = 0

        def flood() -> None:
            nonlocal opened
            for _ in range(50):
                try:
                    stream = client.new_stream(
                        quicconn.STREAM_FLAG_UNI | quicconn.STREAM_FLAG_NO_BLOCK
                    )
                except quicconn.StreamCountLimitedError:
                    return  # no stream credit left
                stream.write_ex2(b"x", quicconn.WRITE_FLAG_CONCLUDE)
                opened += 1

        pump([lst, client], lambda: opened >= 128, step=flood, what="128 streams")
        run_for([lst, client], 0.3, step=flood)  # keep trying: no more credit
        server = accepted[0]
        assert opened == 128  # the initial credit, and no more
        assert server.get_accept_stream_queue_len() == 128
        # The application takes 28 streams, reads them, and frees them: each
        # gives the peer one more stream (MAX_STREAMS), as in OpenSSL.
        for _ in range(28):
            stream = server.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
            assert stream is not None and stream.read() == b"x"
            stream.free()
        pump([lst, client], lambda: opened >= 156, step=flood, what="28 more")
        run_for([lst, client], 0.3, step=flood)
        assert opened == 128 + 28
        assert server.get_accept_stream_queue_len() == 128
    finally:
        client.free()
        csock.close()
        lst.free()
