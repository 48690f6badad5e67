"""Interoperability with an independent C implementation: ngtcp2 (GnuTLS)."""

from __future__ import annotations

import shutil
import socket

import pytest

import quicconn
from tests.conftest import free_udp_port, peer_process
from tests.support.certs import CertFiles

pytestmark = pytest.mark.peer


def gtlsserver_path() -> str:
    path = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
    if not shutil.which(path):
        pytest.fail("ngtcp2's gtlsserver is missing: .ci/run installs ngtcp2-server")
    return path


def h3_client(
    pki: CertFiles, server: tuple[str, int], host: str = "localhost"
) -> tuple[quicconn.Connection, socket.socket]:
    """A blocking quicconn client towards gtlsserver at ``server`` (ALPN h3,
    trusting ``pki``'s CA, verifying ``host``), and its socket."""
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(["h3"])
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(server)
    conn.set1_host(host)
    return conn, sock


def test_h3_handshake_against_gtlsserver_verifies_its_certificate(
    pki: CertFiles, tmp_path
):
    port = free_udp_port()
    docroot = tmp_path / "www"
    docroot.mkdir()
    args = [
        gtlsserver_path(),
        "-q",
        "-d",
        str(docroot),
        "127.0.0.1",
        str(port),
        str(pki.key),
        str(pki.cert),
    ]
    with peer_process(args):
        conn, sock = h3_client(pki, ("127.0.0.1", port))
        conn.connect()  # retransmits until the server is up; verifies the chain
        assert conn.get0_alpn_selected() == "h3"
        assert conn.shutdown() is True
        conn.free()
        sock.close()


@pytest.mark.usefixtures("each_core")
@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")
def test_a_client_naming_the_server_by_its_ipv6_address_handshakes_with_gtlsserver(
    pki: CertFiles, tmp_path
):
    """No IP address goes in the ClientHello's server_name (RFC 6066 section
    3): GnuTLS refuses an IPv6 one with illegal_parameter, as it did qh3's
    client (the interop matrix's ipv6 cell).  The certificate is still
    checked against the address."""
    port = free_udp_port("::1")
    args = [gtlsserver_path(), "-q", "-d", str(tmp_path), "::1", str(port)]
    with peer_process([*args, str(pki.key), str(pki.cert)]):
        for host, verifies in (("::1", True), ("::2", False)):
            conn, sock = h3_client(pki, ("::1", port), host)
            try:
                if verifies:
                    conn.connect()
                    assert conn.get0_alpn_selected() == "h3"
                else:
                    with pytest.raises(quicconn.VerificationError, match="::2"):
                        conn.connect()
            finally:
                conn.free()
                sock.close()


def test_gtlsserver_certificate_from_another_ca_is_rejected(
    pki: CertFiles, other_pki: CertFiles, tmp_path
):
    port = free_udp_port()
    args = [
        gtlsserver_path(),
        "-q",
        "-d",
        str(tmp_path),
        "127.0.0.1",
        str(port),
        str(other_pki.key),
        str(other_pki.cert),
    ]
    with peer_process(args):
        conn, sock = h3_client(pki, ("127.0.0.1", port))
        with pytest.raises(quicconn.VerificationError):
            conn.connect()
        conn.free()
        sock.close()


def test_h3_download_from_gtlsserver(pki: CertFiles, tmp_path):
    from quicconn.http import ClientOptions, HttpClient

    port = free_udp_port()
    docroot = tmp_path / "www"
    docroot.mkdir()
    payload = bytes(range(256)) * 4000
    (docroot / "file.bin").write_bytes(payload)
    args = [
        gtlsserver_path(),
        "-q",
        "-d",
        str(docroot),
        "127.0.0.1",
        str(port),
        str(pki.key),
        str(pki.cert),
    ]
    with peer_process(args):
        options = ClientOptions(alpn="h3", cafile=str(pki.ca))
        with HttpClient("localhost", port, options) as client:
            (download,) = client.fetch(["/file.bin"])
    assert download.status == 200
    assert bytes(download.body) == payload


def gtlsclient_path() -> str:
    path = shutil.which("gtlsclient")
    if path is None:
        pytest.fail("ngtcp2's gtlsclient is missing: .ci/run installs ngtcp2-client")
    return path


def test_gtlsclient_downloads_from_the_quicconn_file_server(pki: CertFiles, tmp_path):
    import subprocess
    import threading

    from quicconn.http import FileServer

    www = tmp_path / "www"
    www.mkdir()
    payload = bytes(range(256)) * 3000
    (www / "data.bin").write_bytes(payload)
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3"]
    )
    server = FileServer(listener, www)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    port = listener.local_address()[1]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        subprocess.run(
            [
                gtlsclient_path(),
                "-q",
                "--exit-on-all-streams-close",
                f"--download={downloads}",
                "127.0.0.1",
                str(port),
                f"https://127.0.0.1:{port}/data.bin",
            ],
            timeout=30,
            check=False,
            capture_output=True,
        )
    finally:
        stop.set()
        thread.join(5)
        server.close()
        listener.free()
    # gtlsclient exits 0 even when it fails: judge by the bytes it saved
    assert (downloads / "data.bin").read_bytes() == payload
    assert server.stats.requests == 1
