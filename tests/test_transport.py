"""The UDP transport: batched receive, GSO batching, address normalisation."""

from __future__ import annotations

import socket

import pytest

from quicconn._io.transport import UdpTransport, resolve_address


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


def drain(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


@pytest.mark.parametrize("use_gso", [True, False])
def test_a_batch_arrives_as_separate_datagrams_in_order(use_gso: bool):
    rx = receiver()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    transport = UdpTransport(tx, use_gso=use_gso)
    dest = rx.getsockname()
    # 40 x 1200 bytes stays inside the default receive buffer (about 210 kB
    # of kernel memory, at roughly twice the payload per datagram).
    batch = [(bytes([i]) * 1200, dest) for i in range(40)] + [(b"tail", dest)]
    transport.send_batch(batch)
    assert not transport.has_pending_writes()
    assert drain(rx, len(batch)) == [data for data, _ in batch]
    assert transport.datagrams_sent == len(batch)
    transport.close()
    rx.close()


def test_gso_groups_follow_the_kernel_rules():
    dest = ("127.0.0.1", 9)
    other = ("127.0.0.1", 10)
    batch = [(b"a" * 1200, dest)] * 3 + [(b"b" * 500, dest), (b"c" * 1200, dest)]
    assert UdpTransport._gso_group(batch, 0) == (4, 1200)  # a short one ends a group
    assert UdpTransport._gso_group(batch, 4) == (5, 1200)
    mixed = [(b"a" * 1200, dest), (b"a" * 1200, other)]
    assert UdpTransport._gso_group(mixed, 0) == (1, 1200)  # one destination per group
    bigger = [(b"a" * 1000, dest), (b"a" * 1200, dest)]
    assert UdpTransport._gso_group(bigger, 0) == (1, 1000)  # never a larger segment
    many = [(b"a" * 1200, dest)] * 200
    end, _ = UdpTransport._gso_group(many, 0)
    assert end <= 54  # 64-segment and 65000-byte limits


def test_recv_batch_drains_everything_ready():
    rx_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx_sock.bind(("127.0.0.1", 0))
    transport = UdpTransport(rx_sock)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(50):
        tx.sendto(b"%d" % i, rx_sock.getsockname())
    transport.wait(True, False, 1.0)
    received: list[bytes] = []
    while len(received) < 50:
        batch = transport.recv_batch()
        received += [data for data, _ in batch]
        if len(received) < 50:
            transport.wait(True, False, 1.0)
    assert received == [b"%d" % i for i in range(50)]
    assert transport.recv_batch() == []  # EAGAIN: nothing more, no exception
    tx.close()
    transport.close()


def test_addresses_are_normalised_to_what_recvfrom_reports():
    assert resolve_address(socket.AF_INET, ("localhost", 443)) == ("127.0.0.1", 443)
    assert resolve_address(socket.AF_INET6, ("::1", 443)) == ("::1", 443, 0, 0)
    mapped = resolve_address(socket.AF_INET6, ("127.0.0.1", 443))
    assert mapped == ("::ffff:127.0.0.1", 443, 0, 0)
    with pytest.raises(ValueError, match="cannot resolve"):
        resolve_address(socket.AF_INET, ("no-such-host.invalid", 1))
    with pytest.raises(TypeError):
        resolve_address(socket.AF_INET, (443, "localhost"))


def test_a_tcp_socket_is_refused():
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(ValueError, match="UDP"),
    ):
        UdpTransport(tcp)
