"""The UDP transport: batched receive, GSO and GRO, address normalisation."""

from __future__ import annotations

import errno
import socket
import sys

import pytest

import quicconn
from quicconn._core.wire import split_run
from quicconn._io.transport import UdpTransport, resolve_address
from tests.support.bulk import exchange
from tests.support.certs import CertFiles

LINUX = sys.platform.startswith("linux")


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


@pytest.mark.parametrize("use_gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("use_gro", [True, False], ids=["gro", "no-gro"])
@pytest.mark.parametrize("whole_runs", [False, True], ids=["cut", "runs"])
def test_gro_hands_up_a_gso_run_as_the_same_datagrams(
    use_gso: bool, use_gro: bool, whole_runs: bool
):
    """recv_batch() cuts coalesced runs into datagrams; recv_runs() leaves
    them whole (a core that cuts them itself takes them so)."""
    rx = UdpTransport(_bound_socket(), use_gro=use_gro)
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), use_gso=use_gso)
    assert rx.gro_enabled == (use_gro and LINUX)
    assert tx.gso_enabled == (use_gso and LINUX)
    dest = rx.local_address()
    # Runs of equal sizes, each ended by a shorter one: GSO sends each run
    # in one call, GRO may hand it up in one.
    batch = [(bytes([i]) * 1472, dest) for i in range(30)] + [(b"short", dest)]
    batch += [(bytes([i]) * 1200, dest) for i in range(30, 50)] + [(b"end", dest)]
    tx.send_batch(batch)
    received: list[bytes] = []
    runs_whole = 0
    while len(received) < len(batch):
        rx.wait(True, False, 2.0)
        if whole_runs:
            runs = rx.recv_runs()
            assert runs, "datagrams missing"
            for data, segment_size, addr in runs:
                assert addr[1] == tx.local_address()[1]
                runs_whole += segment_size < len(data)
                received += split_run(data, segment_size)
        else:
            got = rx.recv_batch()
            assert got, "datagrams missing"
            received += [data for data, _ in got]
    assert received == [data for data, _ in batch]
    assert rx.datagrams_received == len(batch)
    if use_gso and use_gro and LINUX:
        assert rx.coalesced_receives > 0
        assert runs_whole == (rx.coalesced_receives if whole_runs else 0)
    else:
        assert rx.coalesced_receives == 0
    tx.close()
    rx.close()


def test_a_gso_group_too_large_for_the_interface_goes_one_by_one():
    """EMSGSIZE for a GSO send (a path MTU probe larger than the link) loses
    only the datagrams that are too large, not the whole group."""
    rx = UdpTransport(_bound_socket(), use_gro=False)
    tx = UdpTransport(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    dest = rx.local_address()
    real_sock = tx.socket

    class Refusing:
        def __getattr__(self, name: str) -> object:
            return getattr(real_sock, name)

        def sendmsg(self, *args: object) -> int:
            raise OSError(errno.EMSGSIZE, "Message too long")

    tx.socket = Refusing()  # type: ignore[assignment]
    batch = [(b"a" * 1200, dest)] * 5
    tx.send_batch(batch)
    tx.socket = real_sock
    assert tx.gso_enabled == LINUX  # still on: the group alone went singly
    got: list[bytes] = []
    while len(got) < 5:
        rx.wait(True, False, 2.0)
        got += [data for data, _ in rx.recv_batch()]
    assert got == [data for data, _ in batch]
    tx.close()
    rx.close()


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.usefixtures("each_core")
@pytest.mark.parametrize(
    ("use_gso", "use_gro"),
    [(True, True), (False, False), (True, False), (False, True)],
    ids=["gso+gro", "neither", "gso", "gro"],
)
def test_quic_transfers_are_byte_exact_with_offloads_on_and_off(
    pki: CertFiles, use_gso: bool, use_gro: bool
):
    done = exchange(pki, size=2_000_000, use_gso=use_gso, use_gro=use_gro)
    for transport in (done.client_transport, done.server_transport):
        assert isinstance(transport, UdpTransport)
        assert transport.gso_enabled == (use_gso and LINUX)
        assert transport.gro_enabled == (use_gro and LINUX)
    coalesced = (
        done.client_transport.coalesced_receives  # type: ignore[attr-defined]
        + done.server_transport.coalesced_receives  # type: ignore[attr-defined]
    )
    if use_gso and use_gro and LINUX:
        assert coalesced > 0  # GSO runs from one end arrived coalesced
    else:
        assert coalesced == 0


@pytest.mark.skipif(not LINUX, reason="IP_MTU_DISCOVER is Linux's")
def test_quic_sockets_never_fragment_dtls_sockets_keep_the_kernels_default():
    ip_mtu_discover, pmtudisc_probe = 10, 3  # linux/in.h
    ctx = quicconn.Context(quicconn.CLIENT)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    default = sock.getsockopt(socket.IPPROTO_IP, ip_mtu_discover)
    conn = quicconn.Connection(ctx)
    conn.set_fd(sock)
    assert sock.getsockopt(socket.IPPROTO_IP, ip_mtu_discover) == pmtudisc_probe
    conn.free()
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    UdpTransport(plain)  # what DTLS objects make
    assert plain.getsockopt(socket.IPPROTO_IP, ip_mtu_discover) == default
    sock.close()
    plain.close()
