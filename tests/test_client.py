"""The client connection over real loopback UDP, against aioquic's asyncio server.

The server (tests/peers/aioquic_server.py) is an independent implementation
in its own process; it picks a behaviour from the first line of each stream.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

import quicconn
from tests.support.certs import CertFiles
from tests.support.nonblocking import read_to_fin, retry, wait_for_activity, write_all

ALPN = ["quicconn-test"]
MEGABYTE = bytes(range(256)) * 4096


def client_ctx(pki: CertFiles) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(ALPN)
    return ctx


def new_connection(
    pki: CertFiles,
    port: int,
    *,
    blocking: bool = True,
    ctx: quicconn.Context | None = None,
) -> quicconn.Connection:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    conn = quicconn.Connection(ctx or client_ctx(pki))
    conn.set_fd(sock)
    conn._owns_socket = True
    conn.set1_initial_peer_addr(("127.0.0.1", port))
    conn.set1_host("localhost")
    conn.set_blocking_mode(blocking)
    return conn


def read_all_blocking(conn: quicconn.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            out += conn.read()
        except quicconn.ZeroReturnError:
            return bytes(out)


class TestBlocking:
    def test_handshake_verifies_the_server_and_negotiates_alpn(
        self, pki, aioquic_server
    ):
        conn = new_connection(pki, aioquic_server)
        assert conn.state is quicconn.ConnState.IDLE
        conn.connect()
        assert conn.is_init_finished()
        assert conn.get0_alpn_selected() == "quicconn-test"
        assert conn.state is quicconn.ConnState.ESTABLISHED
        assert conn.get_error() == quicconn.ERROR_NONE
        conn.free()

    def test_echo_of_one_megabyte_each_way_with_fin(self, pki, aioquic_server):
        with new_connection(pki, aioquic_server) as conn:
            conn.connect()
            assert conn.write(b"echo\n") == 5
            assert conn.write_ex2(MEGABYTE, quicconn.WRITE_FLAG_CONCLUDE) == len(
                MEGABYTE
            )
            # OpenSSL 3.5: OK until the FIN is acknowledged.
            assert conn.get_stream_write_state() == quicconn.STREAM_STATE_OK
            assert read_all_blocking(conn) == MEGABYTE
            deadline = time.monotonic() + 5  # the FIN's acknowledgement
            while conn.get_stream_write_state() != quicconn.STREAM_STATE_FINISHED:
                assert time.monotonic() < deadline, "the FIN was never acknowledged"
                conn.handle_events()
                time.sleep(0.005)
            assert conn.get_stream_read_state() == quicconn.STREAM_STATE_FINISHED
            with pytest.raises(quicconn.ZeroReturnError) as info:
                conn.read()
            assert info.value.code == quicconn.ERROR_ZERO_RETURN
            assert conn.get_error() == quicconn.ERROR_ZERO_RETURN

    def test_readinto_and_peek(self, pki, aioquic_server):
        with new_connection(pki, aioquic_server) as conn:
            conn.write_ex2(
                b"send 10000\n", quicconn.WRITE_FLAG_CONCLUDE
            )  # implicit connect
            first = conn.peek(10)
            assert len(first) == 10
            buf = bytearray(4096)
            received = bytearray()
            while True:
                try:
                    n = conn.readinto(buf)
                except quicconn.ZeroReturnError:
                    break
                received += buf[:n]
            assert received[:10] == first
            assert received == (bytes(range(256)) * 40)[:10000]

    def test_clean_shutdown_reports_local_close(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server)
        conn.connect()
        assert conn.get_conn_close_info() is None
        assert conn.shutdown(error_code=7, reason="bye") is True
        info = conn.get_conn_close_info()
        assert info is not None
        assert (info.error_code, info.reason, info.is_local, info.is_transport) == (
            7,
            "bye",
            True,
            False,
        )
        assert info.flags == quicconn.CONN_CLOSE_FLAG_LOCAL
        assert conn.state is quicconn.ConnState.TERMINATED
        assert conn.shutdown() is True  # idempotent once closed
        with pytest.raises(quicconn.ConnectionTerminatedError) as exc_info:
            conn.write(b"more")
        assert exc_info.value.close_info == info
        conn.free()

    def test_peer_close_reports_remote_application_error(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server)
        conn.write_ex2(b"close 42\n", quicconn.WRITE_FLAG_CONCLUDE)
        with pytest.raises(quicconn.ConnectionTerminatedError) as exc_info:
            conn.read()
        info = exc_info.value.close_info
        assert info is not None and info.error_code == 42
        assert not info.is_local and not info.is_transport
        assert info.reason == "asked to"
        assert conn.get_stream_read_state() == quicconn.STREAM_STATE_CONN_CLOSED
        assert conn.shutdown() is True
        conn.free()

    def test_connected_socket_as_in_the_openssl_demos(self, pki, aioquic_server):
        """set_fd() on a connected socket: the peer address comes from it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("localhost", aioquic_server))
        conn = quicconn.Connection(client_ctx(pki))
        conn.set_fd(sock)
        conn.set1_host("localhost")
        conn.write_ex2(b"send 3000\n", quicconn.WRITE_FLAG_CONCLUDE)
        assert len(read_all_blocking(conn)) == 3000
        assert conn.shutdown()
        conn.free()
        assert sock.fileno() != -1, "the caller's socket must stay open (BIO_NOCLOSE)"
        sock.close()

    def test_set_fd_accepts_a_descriptor_and_leaves_it_open(self, pki, aioquic_server):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        conn = quicconn.Connection(client_ctx(pki))
        conn.set_fd(sock.fileno())
        conn.set1_initial_peer_addr(("127.0.0.1", aioquic_server))
        conn.set1_host("127.0.0.1")
        conn.connect()
        conn.shutdown()
        conn.free()
        os.fstat(sock.fileno())  # still open
        sock.close()

    def test_key_update_keeps_data_flowing(self, pki, aioquic_server):
        with new_connection(pki, aioquic_server) as conn:
            conn.connect()
            conn.write(b"echo\n")
            conn.write(b"a" * 50_000)
            conn.key_update()
            conn.write_ex2(b"b" * 50_000, quicconn.WRITE_FLAG_CONCLUDE)
            assert read_all_blocking(conn) == b"a" * 50_000 + b"b" * 50_000

    def test_key_update_before_the_handshake_is_an_error(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server)
        with pytest.raises(ValueError, match="connect"):
            conn.key_update()
        conn.free()

    def test_idle_timeout_values_in_milliseconds(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server)
        cls = quicconn.VALUE_CLASS_FEATURE_REQUEST
        idle = quicconn.VALUE_QUIC_IDLE_TIMEOUT
        assert conn.get_value_uint(cls, idle) == 30_000
        conn.set_value_uint(cls, idle, 12_000)
        conn.connect()
        assert conn.get_value_uint(cls, idle) == 12_000
        peer = conn.get_value_uint(quicconn.VALUE_CLASS_FEATURE_PEER_REQUEST, idle)
        assert peer == 60_000  # the peer's command line asks for 60 s
        negotiated = conn.get_value_uint(quicconn.VALUE_CLASS_FEATURE_NEGOTIATED, idle)
        assert negotiated == 12_000
        with pytest.raises(ValueError, match="before the handshake"):
            conn.set_value_uint(cls, idle, 5_000)
        conn.shutdown()
        conn.free()

    def test_convenience_connect(self, pki, aioquic_server):
        with quicconn.connect(
            "localhost", aioquic_server, alpn=ALPN, cafile=str(pki.ca)
        ) as conn:
            conn.write_ex2(b"send 5\n", quicconn.WRITE_FLAG_CONCLUDE)
            assert read_all_blocking(conn) == bytes(range(5))


class TestNonblocking:
    def test_connect_completes_through_want_read_retries(self, pki, aioquic_server):
        """Over real UDP the number of WantReadErrors depends on timing; the
        deterministic version of this lives in test_timers.py."""
        conn = new_connection(pki, aioquic_server, blocking=False)
        wants = 0
        while True:
            try:
                conn.connect()
                break
            except quicconn.WantReadError as exc:
                wants += 1
                assert exc.code == quicconn.ERROR_WANT_READ
                assert conn.get_error() == quicconn.ERROR_WANT_READ
                assert conn.net_read_desired()
                assert conn.get_event_timeout() is not None
                retry(conn, conn.handle_events)
                wait_for_activity(conn)
        assert conn.is_init_finished()
        assert conn.get_error() == quicconn.ERROR_NONE
        conn.free()

    def test_echo_of_one_megabyte_each_way_with_fin(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server, blocking=False)
        retry(conn, conn.connect)
        write_all(conn, b"echo\n" + MEGABYTE, conclude=True)
        assert read_to_fin(conn) == MEGABYTE
        while not conn.shutdown():
            retry(conn, conn.handle_events)
        assert conn.get_conn_close_info().is_local
        conn.free()

    def test_read_raises_want_read_while_no_data(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server, blocking=False)
        retry(conn, conn.connect)
        write_all(conn, b"after 0.2 send 10\n")
        with pytest.raises(quicconn.WantReadError):
            conn.read()
        assert read_to_fin(conn) == bytes(range(10))
        conn.free()

    def _small_buffer_connection(self, pki, port, mode: int = 0) -> quicconn.Connection:
        ctx = client_ctx(pki)
        ctx.stream_write_buffer_size = 64 * 1024
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn = quicconn.Connection(ctx)
        conn.set_fd(sock)
        conn._owns_socket = True
        conn.set1_initial_peer_addr(("127.0.0.1", port))
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        conn.set_mode(mode)
        retry(conn, conn.connect)
        retry(conn, lambda: conn.write(b"sink\n"))
        return conn

    def test_nonblocking_write_is_all_or_nothing_by_default(self, pki, aioquic_server):
        """As in OpenSSL without SSL_MODE_ENABLE_PARTIAL_WRITE."""
        conn = self._small_buffer_connection(pki, aioquic_server)
        with pytest.raises(quicconn.WantWriteError) as info:
            conn.write(bytes(1_000_000))
        assert info.value.code == quicconn.ERROR_WANT_WRITE
        assert conn.get_error() == quicconn.ERROR_WANT_WRITE
        # retrying with the same buffer eventually takes all of it
        assert retry(conn, lambda: conn.write(bytes(1_000_000))) == 1_000_000
        conn.free()

    def test_partial_write_mode_returns_what_fits(self, pki, aioquic_server):
        conn = self._small_buffer_connection(
            pki, aioquic_server, quicconn.MODE_ENABLE_PARTIAL_WRITE
        )
        accepted = conn.write(bytes(1_000_000))
        assert 0 < accepted <= 64 * 1024  # never more than the buffer holds
        # Keep writing: each call takes at most a buffer's worth (its implicit
        # tick may process ACKs that free space), until one finds it full.
        with pytest.raises(quicconn.WantWriteError):
            for _ in range(10_000):
                assert conn.write(bytes(1_000_000)) <= 64 * 1024
        conn.free()


class TestObservability:
    def test_keylog_only_when_asked(self, pki, aioquic_server, tmp_path, monkeypatch):
        path = tmp_path / "keys.log"
        monkeypatch.setenv("SSLKEYLOGFILE", str(path))  # not read by the library
        quiet = client_ctx(pki)
        assert quiet.keylog_filename is None
        logged = client_ctx(pki)
        logged.keylog_filename = str(path)
        conn = quicconn.Connection(logged)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", aioquic_server))
        conn.set1_host("localhost")
        conn.connect()
        conn.shutdown()
        conn.free()
        sock.close()
        lines = path.read_text().splitlines()
        labels = {line.split()[0] for line in lines}
        assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels
        assert all(len(line.split()) == 3 for line in lines)

    def test_qlog_written_per_connection(self, pki, aioquic_server, tmp_path):
        ctx = client_ctx(pki)
        ctx.qlog_dir = str(tmp_path / "qlog")
        conn = quicconn.Connection(ctx)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", aioquic_server))
        conn.set1_host("localhost")
        conn.write_ex2(b"send 1000\n", quicconn.WRITE_FLAG_CONCLUDE)
        read_all_blocking(conn)
        conn.shutdown()
        conn.free()
        sock.close()
        files = list(Path(ctx.qlog_dir).glob("*.qlog"))
        assert len(files) == 1
        trace = json.loads(files[0].read_text())["traces"][0]
        names = {event["name"] for event in trace["events"]}
        assert {"transport:packet_sent", "transport:packet_received"} <= names
        assert trace["vantage_point"]["type"] == "client"


class TestMisuse:
    def test_connect_without_a_transport(self, pki):
        conn = quicconn.Connection(client_ctx(pki))
        with pytest.raises(ValueError, match="set_fd"):
            conn.connect()

    def test_connect_without_a_peer_address(self, pki):
        conn = quicconn.Connection(client_ctx(pki))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn.set_fd(sock)
        conn.set1_host("localhost")
        with pytest.raises(ValueError, match="set1_initial_peer_addr"):
            conn.connect()
        sock.close()

    def test_verification_needs_a_host_name(self, pki):
        conn = quicconn.Connection(client_ctx(pki))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", 9))
        with pytest.raises(ValueError, match="set1_host"):
            conn.connect()
        sock.close()

    def test_bad_arguments_are_type_and_value_errors(self, pki):
        with pytest.raises(TypeError, match="Context"):
            quicconn.Connection("not a context")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="role"):
            quicconn.Context(7)
        ctx = client_ctx(pki)
        with pytest.raises(ValueError, match="verify_mode"):
            ctx.verify_mode = 5
        with pytest.raises(TypeError, match="ALPN"):
            ctx.set_alpn_protos([b"h3"])  # type: ignore[list-item]
        conn = quicconn.Connection(ctx)
        with pytest.raises(TypeError, match="socket"):
            conn.set_fd("nope")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="UDP"):
            conn.set_fd(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        with pytest.raises(ValueError, match="resolve"):
            conn.set1_initial_peer_addr(("no-such-host.invalid", 443))
        with pytest.raises(ValueError, match="flags"):
            conn.write_ex2(b"x", 0x80)
        with pytest.raises(TypeError, match="unknown option"):
            quicconn.connect("localhost", 1, no_such_option=1)
        with pytest.raises(ValueError, match="unknown QUIC core 'nope'"):
            quicconn.connect("localhost", 1, core="nope")

    def test_handle_events_before_a_transport_is_a_no_op(self, pki):
        conn = quicconn.Connection(client_ctx(pki))
        conn.handle_events()
        assert conn.get_event_timeout() is None
        assert not conn.net_read_desired()
        assert not conn.net_write_desired()


class TestCipherSuitesAndVersions:
    """SSL_CTX_set_ciphersuites, and the QUIC-version extension, against
    aioquic's asyncio server."""

    def test_chacha20_only_is_what_the_handshake_uses(self, pki, aioquic_server):
        ctx = client_ctx(pki)
        ctx.set_ciphersuites("TLS_CHACHA20_POLY1305_SHA256")
        conn = new_connection(pki, aioquic_server, ctx=ctx)
        assert conn.get_current_cipher() is None
        conn.connect()
        assert conn.get_current_cipher() == "TLS_CHACHA20_POLY1305_SHA256"
        conn.free()

    def test_by_default_an_aes_suite_is_negotiated(self, pki, aioquic_server):
        conn = new_connection(pki, aioquic_server)
        conn.connect()
        assert conn.get_current_cipher() in (
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
        )
        assert conn.get_quic_version() == quicconn.QUIC_VERSION_1
        conn.free()

    def test_a_v1_start_moves_to_v2_by_compatible_negotiation(
        self, pki, aioquic_server
    ):
        ctx = client_ctx(pki)
        ctx.set_quic_versions(
            [quicconn.QUIC_VERSION_2, quicconn.QUIC_VERSION_1],
            initial=quicconn.QUIC_VERSION_1,
        )
        conn = new_connection(pki, aioquic_server, ctx=ctx)
        conn.connect()
        assert conn.get_quic_version() == quicconn.QUIC_VERSION_2
        conn.write_ex2(b"echo\nover v2", quicconn.WRITE_FLAG_CONCLUDE)
        assert read_all_blocking(conn) == b"over v2"
        conn.free()

    def test_bad_suites_and_versions_are_value_errors(self, pki):
        ctx = client_ctx(pki)
        with pytest.raises(ValueError, match=r"unknown TLS 1\.3 cipher suite"):
            ctx.set_ciphersuites("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256")
        with pytest.raises(ValueError, match="at least one"):
            ctx.set_ciphersuites("")
        with pytest.raises(TypeError, match="colon-separated"):
            ctx.set_ciphersuites(["TLS_AES_128_GCM_SHA256"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="QUIC_VERSION"):
            ctx.set_quic_versions([0xFF00001D])
        with pytest.raises(ValueError, match="initial"):
            ctx.set_quic_versions(
                [quicconn.QUIC_VERSION_1], initial=quicconn.QUIC_VERSION_2
            )
