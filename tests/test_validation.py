"""Bad input to the library's entry points gets a clear error, at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import quicconn
from tests.support.certs import CertFiles


@pytest.mark.parametrize("port", [0, -1, 65536, 99999])
def test_connect_refuses_a_port_out_of_range_before_sending_anything(
    port: int,
) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"port {port} is out of range"):
        quicconn.connect("127.0.0.1", port, idle_timeout=1)
    assert time.monotonic() - started < 0.5  # no handshake was attempted


@pytest.mark.parametrize("port", ["4433", 4433.0, True, None])
def test_connect_refuses_a_port_that_is_not_an_int(port: object) -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        quicconn.connect("127.0.0.1", port, idle_timeout=1)  # type: ignore[arg-type]


def test_listen_refuses_a_port_out_of_range(pki: CertFiles) -> None:
    with pytest.raises(ValueError, match="port 70000 is out of range"):
        quicconn.listen(("127.0.0.1", 70000), str(pki.cert), str(pki.key))


def test_load_cert_chain_refuses_a_key_that_is_not_the_certificates(
    pki: CertFiles, other_pki: CertFiles
) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    with pytest.raises(ValueError, match="does not match the certificate"):
        ctx.load_cert_chain(pki.cert, other_pki.key)
    # The failed call left nothing half-loaded: no listener without a cert.
    with pytest.raises(ValueError, match="no certificate"):
        ctx.new_listener(("127.0.0.1", 0))
    # And a good pair still loads afterwards.
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.new_listener(("127.0.0.1", 0)).free()


def test_a_failed_load_keeps_the_pair_loaded_before(
    pki: CertFiles, other_pki: CertFiles
) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    with pytest.raises(ValueError, match="key values mismatch"):
        ctx.load_cert_chain(other_pki.cert, pki.key)
    ctx.set_alpn_protos(["x"])
    listener = ctx.new_listener(("127.0.0.1", 0))
    listener.set_blocking_mode(False)
    listener.listen()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        cctx = quicconn.Context(quicconn.CLIENT)
        cctx.load_verify_locations(pki.ca)
        cctx.set_alpn_protos(["x"])
        conn = quicconn.Connection(cctx)
        conn.set_fd(sock)
        conn.set1_initial_peer_addr(("127.0.0.1", listener.local_address()[1]))
        conn.set1_host("localhost")
        conn.set_blocking_mode(False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            listener.handle_events()
            listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            try:
                conn.connect()
                break
            except quicconn.WantReadError:
                time.sleep(0.002)
        # The handshake verified the first pair's certificate.
        assert conn.is_init_finished()
        conn.free()
    finally:
        sock.close()
        listener.free()


def test_load_cert_chain_names_a_missing_file(tmp_path: Path) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    with pytest.raises(FileNotFoundError):
        ctx.load_cert_chain(tmp_path / "nope.pem")
