"""Blocking calls sleep in poll(2): waiting costs (almost) no CPU."""

from __future__ import annotations

import socket
import time

import quicconn
from tests.support.certs import CertFiles


def test_idle_blocking_read_spends_under_50ms_of_cpu(
    pki: CertFiles, aioquic_server: int
):
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(["quicconn-test"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", aioquic_server))
    conn.set1_host("localhost")
    conn.write_ex2(b"after 2.0 send 100\n", quicconn.WRITE_FLAG_CONCLUDE)

    wall0, cpu0 = time.monotonic(), time.process_time()
    data = conn.read()  # blocks through ~2 s of silence
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0

    assert data == bytes(range(100))
    assert wall >= 1.8, "the read returned before the server's delay"
    assert cpu < 0.050, (
        f"blocking read burned {cpu * 1000:.1f} ms of CPU in {wall:.2f} s"
    )
    conn.shutdown()
    conn.free()
    sock.close()
