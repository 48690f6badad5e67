"""Path MTU discovery (RFC 9000 section 14.3, RFC 8899 DPLPMTUD).

The search itself (quicconn/_core/pmtud.py) is pinned without sockets; the
rest runs real transfers over loopback through the interop simulator's
relay (interop/netsim.py, real UDP sockets), whose link MTU drops every
larger datagram silently, as a path with a smaller MTU would: no ICMP, a
black hole for that size.  The relay's records say what crossed the link.
Every end-to-end test runs on every core (``each_core``); what a core
cannot do is skipped naming the capability (qh3's servers do not probe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from interop.netsim import LinkSpec, NetSim, NetSimConfig
from quicconn._core.pmtud import (
    BASE_PLPMTU,
    MAX_PROBES,
    RAISE_INTERVAL,
    SEARCH_STEP,
    PathMtuSearch,
)
from tests.support.bulk import exchange
from tests.support.certs import CertFiles
from tests.support.cores import Capability, require

#: A link that only relays (no delay, rate or queue limit): the MTU is the
#: only thing a test sets.
CLEAR = LinkSpec(delay=0.0, bandwidth=None, queue=None, mtu=None)
UP = "to_server"
DOWN = "to_client"


# -- the search, without sockets ----------------------------------------------


def _probe(search: PathMtuSearch, fits: int, now: float = 0.0) -> int | None:
    """Send the next probe; a path carrying ``fits`` bytes decides its fate."""
    size = search.next_probe(now)
    if size is not None:
        token = search.probe_sent(size)
        if size <= fits:
            search.probe_acked(token)
        else:
            search.probe_lost(token)
    return size


def test_the_first_probe_is_the_ceiling_and_one_ack_ends_the_search():
    search = PathMtuSearch(1472)
    assert search.current == BASE_PLPMTU
    assert _probe(search, fits=1500) == 1472
    assert search.current == 1472
    assert search.next_probe(0.0) is None


def test_a_size_is_given_up_only_after_max_probes_losses_then_bisected():
    search = PathMtuSearch(1472)
    sizes = [_probe(search, fits=1300) for _ in range(MAX_PROBES + 1)]
    assert sizes == [1472] * MAX_PROBES + [(1200 + 1472) // 2]
    while (size := _probe(search, fits=1300)) is not None:
        assert size <= 1472
    assert 1300 - SEARCH_STEP <= search.current <= 1300


def test_plateaus_come_before_bisection():
    search = PathMtuSearch(1472, plateaus=(1452,))
    for _ in range(MAX_PROBES):
        assert _probe(search, fits=1452) == 1472
    assert _probe(search, fits=1452) == 1452
    assert search.current == 1452


def test_a_complete_search_below_the_ceiling_tries_again_after_the_raise_interval():
    search = PathMtuSearch(1472)
    while _probe(search, fits=1400, now=5.0) is not None:
        pass  # the last call, at 5 s, found the search complete
    assert search.current < 1472
    assert search.next_probe(5.0 + RAISE_INTERVAL - 1) is None
    assert search.next_probe(5.0 + RAISE_INTERVAL) == 1472


def test_a_black_hole_falls_back_to_the_base_and_searches_below_the_failed_size():
    search = PathMtuSearch(1472)
    _probe(search, fits=1500)
    assert search.black_hole()
    assert search.current == BASE_PLPMTU
    assert not search.black_hole()  # at the base already
    size = search.next_probe(0.0)
    assert size is not None and size < 1472


def test_confirmation_probes_all_lost_make_a_black_hole_one_acked_clears_it():
    search = PathMtuSearch(1472)
    _probe(search, fits=1500)
    search.confirm()
    assert _probe(search, fits=1500) == 1472  # acknowledged: still fits
    assert search.current == 1472 and search.next_probe(0.0) is None
    search.confirm()
    for _ in range(MAX_PROBES):
        assert _probe(search, fits=1300) == 1472
    assert search.current == BASE_PLPMTU


def test_a_lower_peer_limit_lowers_the_ceiling_and_the_current_size():
    search = PathMtuSearch(1472)
    _probe(search, fits=1500)
    assert search.limit(1350)
    assert search.current == 1350 == search.ceiling
    assert search.next_probe(0.0) is None


def test_stale_probe_reports_are_ignored():
    search = PathMtuSearch(1472)
    token = search.probe_sent(1472)
    search.black_hole()  # nothing to fall from: still at the base
    search.limit(1300)  # the probe in flight is above the new ceiling
    assert not search.probe_acked(token)
    assert search.current == BASE_PLPMTU


# -- end to end, over real sockets --------------------------------------------


@dataclass
class Transfer:
    """What crossed the relay's link during one exchange."""

    records: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    def delivered(self, direction: str) -> list[int]:
        return [
            int(r["size"])  # type: ignore[call-overload]
            for r in self.records
            if r.get("dir") == direction and r.get("fate") in ("forward", "corrupt")
        ]

    def dropped(self, direction: str) -> int:
        return sum(
            1
            for r in self.records
            if r.get("dir") == direction and r.get("fate") == "mtu"
        )

    def largest(self, direction: str) -> int:
        return max(self.delivered(direction), default=0)

    def count_above(self, direction: str, size: int) -> int:
        return sum(1 for s in self.delivered(direction) if s > size)


def _exchange(
    pki: CertFiles,
    *,
    mtu: int | None = None,
    ceiling: int | None = None,
    mtu_later: int | None = None,
) -> Transfer:
    """Upload, then download, byte-exact (tests/support/bulk.py), through
    a relay whose link MTU (IP bytes) is ``mtu``, or ``mtu_later`` once
    discovery settled and half the upload is written."""
    transfer = Transfer()
    sims: list[NetSim] = []

    @contextmanager
    def relay(server: tuple[str, int]) -> Iterator[tuple[str, int]]:
        config = NetSimConfig(
            server=server,
            to_server=dataclasses.replace(CLEAR, mtu=mtu),
            to_client=dataclasses.replace(CLEAR, mtu=mtu),
        )
        with NetSim(config) as sim:
            sims.append(sim)
            yield sim.address
        transfer.records = sim.records()

    def lower_the_mtu() -> None:
        if mtu_later is not None:
            for pipe in (sims[0].to_server, sims[0].to_client):
                pipe.spec = dataclasses.replace(pipe.spec, mtu=mtu_later)

    options = {} if ceiling is None else {"max_datagram_size": ceiling}
    done = exchange(pki, via=relay, settle_first=True, halfway=lower_the_mtu, **options)
    transfer.seconds = done.seconds
    return transfer


#: The end-to-end tests run once per installed core.
on_each_core = pytest.mark.usefixtures("each_core")


@on_each_core
def test_a_client_grows_its_datagrams_to_an_ethernet_path_and_no_further(pki):
    require(Capability.PMTUD_CLIENT)
    transfer = _exchange(pki)
    # The default ceiling: a 1500-byte MTU, 1472 bytes of UDP payload over
    # IPv4, although loopback would carry 65535.
    assert transfer.largest(UP) == 1472
    assert transfer.count_above(UP, 1400) >= 100  # data, not only probes


@on_each_core
def test_a_server_grows_its_datagrams_to_an_ethernet_path_and_no_further(pki):
    require(Capability.PMTUD_SERVER)
    transfer = _exchange(pki)
    assert transfer.largest(DOWN) == 1472
    assert transfer.count_above(DOWN, 1400) >= 100


@on_each_core
def test_datagrams_never_exceed_the_ceiling(pki):
    require(Capability.PMTUD_CLIENT)
    transfer = _exchange(pki, ceiling=1400)
    assert 1300 < transfer.largest(UP) <= 1400
    assert transfer.largest(DOWN) <= 1400


@on_each_core
def test_a_ceiling_of_1200_turns_discovery_off(pki):
    transfer = _exchange(pki, ceiling=1200)
    assert transfer.largest(UP) == transfer.largest(DOWN) == 1200


@on_each_core
def test_a_path_that_drops_large_datagrams_is_found_and_the_transfer_completes(pki):
    require(Capability.PMTUD_CLIENT)
    # A 1328-byte MTU: 1300 bytes of UDP payload.
    transfer = _exchange(pki, mtu=1328)
    assert transfer.dropped(UP) >= 1  # a probe was larger
    assert 1250 <= transfer.largest(UP) <= 1300
    assert transfer.count_above(UP, 1250) >= 100


@on_each_core
def test_a_server_finds_the_smaller_path_too(pki):
    require(Capability.PMTUD_SERVER)
    transfer = _exchange(pki, mtu=1328)
    assert 1250 <= transfer.largest(DOWN) <= 1300
    assert transfer.count_above(DOWN, 1250) >= 100


@on_each_core
def test_a_black_hole_mid_connection_falls_back_and_the_transfer_completes(pki):
    require(Capability.PMTUD_CLIENT)
    # The path carries 1500-byte packets until the upload is half done,
    # then only 1278 (1250 bytes of payload): every full-sized packet in
    # flight, and every one sent after, vanishes until the sender notices.
    # Without a fallback nothing full-sized would ever arrive again: the
    # transfer would stall until the idle timeout.
    transfer = _exchange(pki, mtu_later=1278)
    assert transfer.largest(UP) > 1250  # discovery had raised the size
    assert transfer.dropped(UP) >= 1
    assert transfer.seconds < 30


@on_each_core
def test_a_jumbo_ceiling_is_probed_for_not_assumed(pki):
    require(Capability.PMTUD_JUMBO)
    transfer = _exchange(pki, ceiling=9000)
    assert transfer.largest(UP) == transfer.largest(DOWN) == 9000
