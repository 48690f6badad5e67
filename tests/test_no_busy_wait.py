"""Blocking calls sleep in poll(2): waiting costs (almost) no CPU."""

from __future__ import annotations

import select
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


def test_event_loop_after_the_handshake_does_not_spin(
    each_core: str, pki: CertFiles, aioquic_server: int
):
    """A deadline that is due right after connect() (on qh3: the ACK of the
    server's last flight, due 1 ms after it arrived) is handled once by
    handle_events(); it does not stay due, so an event loop sleeping on
    get_event_timeout() sleeps."""
    ctx = quicconn.Context(quicconn.CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.set_alpn_protos(["quicconn-test"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    conn.set1_initial_peer_addr(("127.0.0.1", aioquic_server))
    conn.set1_host("localhost")
    conn.connect()
    stream = conn.new_stream(0)
    time.sleep(0.005)  # whatever was armed after the handshake is now due
    # A deadline microseconds ahead (pacing) can lapse between the two
    # calls, and a datagram arriving meanwhile can make an ACK due: a few
    # turns, not one, but never staying due.
    for _ in range(3):
        conn.handle_events()
        timeout = conn.get_event_timeout()
        if timeout is None or timeout > 0:
            break
    assert timeout is None or timeout > 0, "still due after handle_events()"

    wall0, cpu0 = time.monotonic(), time.process_time()
    turns = due = 0
    while (elapsed := time.monotonic() - wall0) < 1.0:
        conn.handle_events()
        turns += 1
        timeout = conn.get_event_timeout()
        due += timeout == 0
        wait = 1.0 - elapsed if timeout is None else min(timeout, 1.0 - elapsed)
        select.select([conn.get_rpoll_descriptor()], [], [], max(wait, 0.0))
    cpu = time.process_time() - cpu0

    assert turns < 50 and due < 10, f"{turns} turns, {due} due at once in 1 s"
    assert cpu < 0.050, f"an idle event loop burned {cpu * 1000:.1f} ms of CPU"
    stream.free()
    conn.shutdown()
    conn.free()
    sock.close()
