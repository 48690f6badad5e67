"""interop.netsim: the userspace network simulator, measured with real UDP.

Each impairment is checked through the relay with real sockets on loopback
(the impairment policy alone is also pinned without sockets), and one
end-to-end test downloads through 5% loss in both directions with quicconn.
Timing bounds are loose enough for a loaded 2-core machine, yet each would
fail if the impairment were missing.
"""

from __future__ import annotations

import json
import math
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quicconn
from interop.netsim import (
    LinkSpec,
    NetSim,
    NetSimConfig,
    NetSimProcess,
    config_from_scenario,
    parse_rate,
    parse_time,
)
from quicconn.testing import (
    DatagramPair,
    FakeClock,
    Fate,
    Impairment,
    ImpairmentSpec,
)
from tests.peers.aioquic_server import pattern_bytes
from tests.support.certs import CertFiles

ROOT = Path(__file__).resolve().parent.parent
Address = tuple[str, int]

#: A link with no delay, rate limit, queue limit or MTU: only what a test adds.
CLEAR = LinkSpec(delay=0.0, bandwidth=None, queue=None, mtu=None)


class UdpPeer:
    """A UDP socket served by its own thread: records arrivals, may echo them."""

    def __init__(self, *, echo: bool, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.echo = echo
        self.arrivals: list[tuple[float, bytes, Address]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()
        return (host, port)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(0.05):
                    continue
                while True:
                    try:
                        data, addr = self.sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    self.arrivals.append((time.monotonic(), data, addr))
                    if self.echo:
                        self.sock.sendto(data, addr)

    def send(self, data: bytes, address: Address) -> None:
        self.sock.sendto(data, address)

    def payloads(self) -> list[bytes]:
        return [data for _, data, _ in list(self.arrivals)]

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def udp_peers() -> Iterator[list[UdpPeer]]:
    """Make peers with ``udp_peers.append(UdpPeer(...))``; all closed afterwards."""
    made: list[UdpPeer] = []
    yield made
    for peer in made:
        peer.close()


def endpoints(udp_peers: list[UdpPeer]) -> tuple[UdpPeer, UdpPeer]:
    """An echoing server and a recording client."""
    server = UdpPeer(echo=True)
    client = UdpPeer(echo=False)
    udp_peers += [server, client]
    return server, client


def fates(sim: NetSim, direction: str) -> dict[int, str]:
    return {
        r["n"]: r["fate"]
        for r in sim.records()
        if r.get("dir") == direction and "fate" in r
    }


def settle(sim: NetSim, timeout: float = 2.0) -> None:
    """Wait until nothing is queued in the relay."""
    deadline = time.monotonic() + timeout
    while sim.to_server.queued() or sim.to_client.queued():
        assert time.monotonic() < deadline, "the relay never drained"
        time.sleep(0.005)


# -- link model: delay, rate, queue, MTU -----------------------------------


def ping_rtts(sim: NetSim, client: UdpPeer, count: int) -> list[float]:
    rtts = []
    for i in range(count):
        sent = time.monotonic()
        client.send(b"ping %d" % i + b"." * 90, sim.address)
        assert client.wait_for(i + 1, timeout=2.0), f"ping {i} got no echo"
        rtts.append(client.arrivals[i][0] - sent)
    return rtts


def test_delay_adds_the_one_way_delay_in_each_direction(udp_peers):
    server, client = endpoints(udp_peers)
    config = NetSimConfig(server=server.address).with_links(delay=0.015)
    with NetSim(config) as sim:
        rtts = ping_rtts(sim, client, 25)
    p50 = statistics.median(rtts) * 1000
    assert 28.0 <= p50 <= 45.0, f"p50 RTT {p50:.1f} ms for 2 x 15 ms of delay"
    latencies = [r["latency"] for r in sim.records() if r.get("fate") == "forward"]
    assert len(latencies) == 50
    # 15 ms of propagation plus 0.1 ms serialising 128 bytes at 10 Mbit/s
    assert all(abs(lat - 0.0151) < 1e-4 for lat in latencies)


def test_without_delay_the_same_pings_return_at_once(udp_peers):
    """The control for the test above: the measurement sees the delay."""
    server, client = endpoints(udp_peers)
    with NetSim(NetSimConfig(server=server.address).with_links(delay=0.0)) as sim:
        rtts = ping_rtts(sim, client, 25)
    assert statistics.median(rtts) * 1000 < 10.0


def test_rate_limit_caps_throughput_near_the_link_rate(udp_peers):
    sink = UdpPeer(echo=False)
    client = UdpPeer(echo=False)
    udp_peers += [sink, client]
    link = LinkSpec(delay=0.0, bandwidth=10e6, queue=None, mtu=None)
    config = NetSimConfig(server=sink.address, to_server=link, to_client=CLEAR)
    size, count = 1200, 1000
    with NetSim(config) as sim:
        # Offer about 20 Mbit/s for half a second: twice the link rate.
        for _burst in range(count // 10):
            for _ in range(10):
                client.send(b"r" * size, sim.address)
            time.sleep(max(0.0, 0.0048 - 0.0001))
        assert sink.wait_for(count, timeout=5.0)
    times = [t for t, _, _ in sink.arrivals]
    mbit_per_s = (count - 1) * size * 8 / (times[-1] - times[0]) / 1e6
    # 1200 of every 1228 bytes on the wire are payload: 9.77 Mbit/s at most.
    assert 8.0 <= mbit_per_s <= 10.5, (
        f"{mbit_per_s:.2f} Mbit/s through a 10 Mbit/s link"
    )


def test_full_drop_tail_queue_drops_the_rest_of_a_burst(udp_peers):
    sink = UdpPeer(echo=False)
    client = UdpPeer(echo=False)
    udp_peers += [sink, client]
    link = LinkSpec(delay=0.0, bandwidth=10e6, queue=25, mtu=None)
    config = NetSimConfig(server=sink.address, to_server=link, to_client=CLEAR)
    with NetSim(config) as sim:
        for _ in range(100):
            client.send(b"q" * 1400, sim.address)
        sink.wait_for(100, timeout=0.6)  # 26 take 30 ms; wait well past that
        settle(sim)
    lost = 100 - len(sink.arrivals)
    # One in transmission plus 25 waiting get through, the other 74 are lost.
    # If the relay read the burst in pieces (a loaded machine), one more gets
    # through per transmission time (1428 bytes at 10 Mbit/s) of spread.
    records = [r for r in sim.records() if r.get("dir") == "to_server"]
    arrivals = [r["t"] - r.get("latency", 0.0) for r in records]
    spread = max(arrivals) - min(arrivals)
    slack = math.ceil(spread / (1428 * 8 / 10e6))
    assert 74 - slack <= lost <= 74, f"{lost} lost; the burst arrived over {spread}s"
    assert lost > 50, f"only {lost} of a 100-datagram burst lost at a 25-packet queue"
    counted = list(fates(sim, "to_server").values())
    assert counted.count("queue-full") == lost
    assert counted.count("forward") == 100 - lost


def test_datagrams_over_the_1500_byte_mtu_are_dropped(udp_peers):
    server, client = endpoints(udp_peers)
    config = NetSimConfig(server=server.address).with_links(
        delay=0.0, bandwidth=None, queue=None, mtu=1500
    )
    with NetSim(config) as sim:
        client.send(b"m" * 1473, sim.address)  # 1501-byte IPv4 packet
        client.send(b"m" * 1472, sim.address)  # exactly 1500
        assert client.wait_for(1, timeout=2.0)
        settle(sim)
    assert [len(p) for p in client.payloads()] == [1472]
    assert fates(sim, "to_server") == {1: "mtu", 2: "forward"}


# -- impairments -------------------------------------------------------------


def relay_took(sim: NetSim, count: int, timeout: float = 5.0) -> None:
    """Wait until the relay has decided the fate of ``count`` datagrams.

    Pacing the sender on the relay (not on a fixed sleep) keeps the kernel
    from dropping datagrams on a loaded machine: every loss is the relay's.
    """
    deadline = time.monotonic() + timeout
    while len(fates(sim, "to_server")) < count:
        assert time.monotonic() < deadline, "the relay stopped taking datagrams"
        time.sleep(0.001)


def numbered_run(
    seed: int, udp_peers: list[UdpPeer]
) -> tuple[set[int], dict[int, str]]:
    sink = UdpPeer(echo=False)
    client = UdpPeer(echo=False)
    udp_peers += [sink, client]
    lossy = LinkSpec(
        delay=0.0, bandwidth=None, queue=None, mtu=None,
        impairment=ImpairmentSpec(drop_rate=10.0),
    )  # fmt: skip
    config = NetSimConfig(server=sink.address, to_server=lossy, seed=seed)
    with NetSim(config) as sim:
        for i in range(2000):
            client.send(b"%d" % i, sim.address)
            if i % 50 == 49:
                relay_took(sim, i + 1)
        settle(sim)
        time.sleep(0.05)
    received = {int(p) for p in sink.payloads()}
    return set(range(2000)) - received, fates(sim, "to_server")


def test_seeded_drop_rate_is_reproducible_and_near_the_rate(udp_peers):
    lost_a, fates_a = numbered_run(42, udp_peers)
    lost_b, fates_b = numbered_run(42, udp_peers)
    lost_c, _ = numbered_run(43, udp_peers)
    assert 140 <= len(lost_a) <= 260, f"{len(lost_a)} of 2000 lost at 10%"
    assert lost_a == lost_b, "the same seed must lose the same datagrams"
    assert lost_a != lost_c, "another seed loses others"
    # Every loss is the relay's decision, logged with its 1-based number.
    assert lost_a == {n - 1 for n, fate in fates_a.items() if fate == "drop"}
    assert fates_a == fates_b


def test_droplist_drops_exactly_the_listed_packets(udp_peers):
    server, client = endpoints(udp_peers)
    config = NetSimConfig(
        server=server.address,
        to_server=LinkSpec(
            delay=0.0, bandwidth=None, queue=None,
            impairment=ImpairmentSpec(droplist=frozenset({1, 3, 5})),
        ),
        to_client=LinkSpec(
            delay=0.0, bandwidth=None, queue=None,
            impairment=ImpairmentSpec(droplist=frozenset({2})),
        ),
    )  # fmt: skip
    with NetSim(config) as sim:
        for i in range(1, 9):
            client.send(b"%d" % i, sim.address)
            time.sleep(0.01)  # one at a time, so the order is the numbering
        client.wait_for(4, timeout=2.0)
        settle(sim)
        time.sleep(0.05)
    assert server.payloads() == [b"2", b"4", b"6", b"7", b"8"]
    # the second datagram towards the client (the echo of "4") is lost
    assert client.payloads() == [b"2", b"6", b"7", b"8"]
    assert [n for n, f in fates(sim, "to_server").items() if f == "droplist"] == [
        1,
        3,
        5,
    ]


def test_corruption_changes_one_early_byte_and_keeps_the_length(udp_peers):
    sink = UdpPeer(echo=False)
    client = UdpPeer(echo=False)
    udp_peers += [sink, client]
    corrupting = LinkSpec(
        delay=0.0, bandwidth=None, queue=None,
        impairment=ImpairmentSpec(corrupt_rate=100.0),
    )  # fmt: skip
    config = NetSimConfig(server=sink.address, to_server=corrupting, seed=5)
    sent = [bytes([i]) * 200 for i in range(30)]
    with NetSim(config) as sim:
        for payload in sent:
            client.send(payload, sim.address)
            time.sleep(0.002)
        assert sink.wait_for(30, timeout=2.0)
    for original, got in zip(sent, sink.payloads(), strict=True):
        assert len(got) == len(original)
        changed = [i for i in range(len(got)) if got[i] != original[i]]
        assert len(changed) == 1 and changed[0] < 51, changed
    assert set(fates(sim, "to_server").values()) == {"corrupt"}


def test_blackhole_window_drops_everything_inside_it(udp_peers):
    sink = UdpPeer(echo=False)
    client = UdpPeer(echo=False)
    udp_peers += [sink, client]
    holed = LinkSpec(
        delay=0.0, bandwidth=None, queue=None,
        impairment=ImpairmentSpec(blackholes=((0.3, 0.6),)),
    )  # fmt: skip
    config = NetSimConfig(server=sink.address, to_server=holed)
    sent: list[float] = []
    with NetSim(config) as sim:
        while (now := time.monotonic() - sim.t0) < 0.9:
            payload = b"%.6f" % now
            client.send(payload, sim.address)
            sent.append(float(payload))
            time.sleep(0.01)
        settle(sim)
        time.sleep(0.05)
    received = {float(p) for p in sink.payloads()}
    before = [t for t in sent if t < 0.25]
    inside = [t for t in sent if 0.35 <= t < 0.55]
    after = [t for t in sent if t >= 0.65]
    assert before and inside and after
    assert all(t in received for t in before + after)
    assert not any(t in received for t in inside)
    assert "blackhole" in fates(sim, "to_server").values()


def test_blackhole_can_be_switched_on_and_off(udp_peers):
    server, client = endpoints(udp_peers)
    with NetSim(NetSimConfig(server=server.address).with_links(delay=0.0)) as sim:
        sim.blackhole(True)
        client.send(b"lost", sim.address)
        time.sleep(0.1)
        sim.blackhole(False)
        client.send(b"through", sim.address)
        assert client.wait_for(1, timeout=2.0)
    assert server.payloads() == [b"through"]
    assert client.payloads() == [b"through"]


# -- NAT rebinding -----------------------------------------------------------


def pings_across_rebinds(sim: NetSim, client: UdpPeer, seconds: float) -> None:
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        client.send(b"%d" % i, sim.address)
        i += 1
        time.sleep(0.01)
    time.sleep(0.05)
    # Echoes keep flowing to the client through the new bindings.
    late = [t for t, _, _ in client.arrivals if t > end - seconds / 3]
    assert late, "no echo reached the client after the rebind"


def test_port_rebinding_changes_the_source_port_the_server_sees(udp_peers):
    server, client = endpoints(udp_peers)
    config = NetSimConfig(server=server.address, rebind_first=0.2).with_links(
        delay=0.002
    )
    with NetSim(config) as sim:
        pings_across_rebinds(sim, client, 0.5)
        sources = list(dict.fromkeys(addr for _, _, addr in server.arrivals))
        # The server answers an old binding: the "NAT" no longer knows it.
        before = len(client.arrivals)
        server.send(b"stale", sources[0])
        time.sleep(0.1)
        stale = [r for r in sim.records() if r.get("fate") == "unbound"]
    assert len(sources) == 2, sources
    assert sources[0][0] == sources[1][0] == "127.0.0.1"
    assert sources[0][1] != sources[1][1]
    assert sim.rebinds == 1
    assert len(stale) == 1 and stale[0]["size"] == 5
    assert b"stale" not in client.payloads()[before:]


def test_address_rebinding_changes_the_source_address_the_server_sees(udp_peers):
    server, client = endpoints(udp_peers)
    config = NetSimConfig(
        server=server.address,
        rebind_first=0.15,
        rebind_every=0.15,
        rebind_addresses=True,
    ).with_links(delay=0.002)
    with NetSim(config) as sim:
        pings_across_rebinds(sim, client, 0.6)
    hosts = list(dict.fromkeys(addr[0] for _, _, addr in server.arrivals))
    assert len(hosts) >= 3, hosts
    assert all(h.startswith("127.0.0.") for h in hosts)
    assert sim.rebinds >= 3


# -- the impairment policy without sockets ------------------------------------


def test_burst_cap_limits_random_drops_in_a_row():
    policy = Impairment(ImpairmentSpec(drop_rate=90.0, burst=3), seed=1)
    run = longest = dropped = 0
    for _ in range(10_000):
        fate, _ = policy.judge(0.0, b"x")
        run = run + 1 if fate is Fate.DROP else 0
        longest = max(longest, run)
        dropped += fate is Fate.DROP
    assert longest == 3
    assert 0.6 < dropped / 10_000 < 0.75  # 90% capped at three in four


def test_policy_never_corrupts_version_negotiation():
    policy = Impairment(ImpairmentSpec(corrupt_rate=100.0), seed=1)
    vn = b"\x80\x00\x00\x00\x00" + b"\x08" + b"c" * 8 + b"\x08" + b"s" * 8
    assert policy.judge(0.0, vn) == (Fate.FORWARD, vn)
    fate, data = policy.judge(0.0, b"\xc0\x00\x00\x00\x01" + b"i" * 40)
    assert fate is Fate.CORRUPT and len(data) == 45


def test_datagram_pair_links_share_the_impairment_policy():
    clock = FakeClock()
    pair = DatagramPair(clock)
    pair.to_server.impairment = Impairment(
        ImpairmentSpec(droplist=frozenset({2}), corrupt_rate=100.0), seed=3
    )
    to = pair.SERVER_ADDRESS
    pair.client.send_batch([(b"A" * 20, to), (b"B" * 20, to), (b"C" * 20, to)])
    got = [data for data, _ in pair.server.recv_batch()]
    assert len(got) == 2  # the second was on the droplist
    assert got[0] != b"A" * 20 and len(got[0]) == 20  # corrupted in flight
    assert pair.to_server.dropped == 1 and pair.to_server.corrupted == 2
    assert [lost for _, _, lost in pair.to_server.log] == [False, True, False]


def test_bad_impairment_settings_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="percentage"):
        ImpairmentSpec(drop_rate=120)
    with pytest.raises(ValueError, match="start at 1"):
        ImpairmentSpec(droplist=frozenset({0}))
    with pytest.raises(ValueError, match="ends before"):
        ImpairmentSpec(blackholes=((2.0, 1.0),))
    with pytest.raises(ValueError, match="numeric IP"):
        NetSimConfig(server=("localhost", 4433))
    with pytest.raises(ValueError, match="IPv4"):
        NetSimConfig(server=("::1", 4433), rebind_first=1.0, rebind_addresses=True)


# -- scenarios and the command line -------------------------------------------


def test_interop_runner_scenarios_translate_to_link_settings():
    server = ("127.0.0.1", 4433)
    loss = config_from_scenario(
        "drop-rate --delay=15ms --bandwidth=10Mbps --queue=25 --rate_to_server=30 "
        "--rate_to_client=30 --burst_to_server=3 --burst_to_client=3",
        server=server,
    )
    assert loss.to_server.delay == 0.015 and loss.to_server.bandwidth == 10e6
    assert loss.to_server.queue == 25
    assert loss.to_client.impairment == ImpairmentSpec(drop_rate=30, burst=3)
    hole = config_from_scenario(
        "blackhole --delay=15ms --bandwidth=10Mbps --queue=25 --on=5s --off=2s",
        server=server,
    )
    assert hole.to_server.impairment.blackholes == ((5.0, 7.0),)
    drops = config_from_scenario(
        "droplist --delay=15ms --bandwidth=10Mbps --queue=25 --drops_to_server=2,3,4",
        server=server,
    )
    assert drops.to_server.impairment.droplist == {2, 3, 4}
    assert drops.to_client.impairment.droplist == frozenset()
    rebind = config_from_scenario(
        "rebind --delay=15ms --bandwidth=10Mbps --queue=25 --first-rebind=1s "
        "--rebind-freq=5s --rebind-addr",
        server=server,
    )
    assert (rebind.rebind_first, rebind.rebind_every) == (1.0, 5.0)
    assert rebind.rebind_addresses
    with pytest.raises(ValueError, match="does not take"):
        config_from_scenario("simple-p2p --delay=1ms --nonsense=1", server=server)
    assert parse_time("750ms") == 0.75 and parse_rate("1Gbps") == 1e9
    with pytest.raises(ValueError, match="unit"):
        parse_time("15")


def test_command_line_relay_applies_options_and_writes_a_json_log(udp_peers, tmp_path):
    server, client = endpoints(udp_peers)
    log = tmp_path / "netsim.jsonl"
    options = ["--delay", "5ms", "--drops-to-server", "2", "--seed", "9"]
    with NetSimProcess(server.address, options, str(log)) as sim:
        for i in range(1, 4):
            client.send(b"%d" % i, sim.address)
            time.sleep(0.02)
        assert client.wait_for(2, timeout=3.0)
    assert client.payloads() == [b"1", b"3"]
    records = sim.records()
    to_server = [r for r in records if r.get("dir") == "to_server"]
    assert [(r["n"], r["fate"]) for r in to_server] == [
        (1, "forward"), (2, "droplist"), (3, "forward"),
    ]  # fmt: skip
    assert all(set(r) >= {"t", "dir", "n", "size", "fate"} for r in to_server)
    json.dumps(records)  # plain JSON values throughout


def test_command_line_rejects_a_delay_without_a_unit():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "interop.netsim",
            "--server",
            "127.0.0.1:1",
            "--delay",
            "15",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unit" in result.stderr


# -- end to end ------------------------------------------------------------------


def test_quicconn_downloads_through_five_percent_loss_both_ways(
    pki: CertFiles, aioquic_server: int
):
    lossy = LinkSpec(impairment=ImpairmentSpec(drop_rate=5.0))  # 15 ms, 10 Mbit/s
    config = NetSimConfig(
        server=("127.0.0.1", aioquic_server), to_server=lossy, to_client=lossy, seed=11
    )
    size = 400_000
    with NetSim(config) as sim:
        host, port = sim.address
        with quicconn.connect(
            host, port, alpn=["quicconn-test"], cafile=str(pki.ca)
        ) as conn:
            conn.write_ex2(b"send %d\n" % size, quicconn.WRITE_FLAG_CONCLUDE)
            received = bytearray()
            while True:
                try:
                    received += conn.read(65536)
                except quicconn.ZeroReturnError:
                    break
    assert bytes(received) == pattern_bytes(size)
    for direction in ("to_server", "to_client"):
        assert "drop" in fates(sim, direction).values(), direction
