"""Sustained heavy loss: a 2 MB echo through 30% loss in both directions.

Under sustained loss RFC 9002's probe timeout doubles with every probe that
goes unanswered; left alone, the wait outgrew the idle timeout (2^10 probe
timeouts are 30 s on a fast path) and most transfers died although the
path still carried seven datagrams in ten.  quicconn stops the doubling at
a tenth of the timeout that would end the connection
(``rules.max_probe_interval``), and on qh3 nudges a client whose handshake
stalls.  Here the echo runs on the in-memory pair with a fake clock, with
the same seeded loss policy as interop.netsim's relay (which
bench/loss_survival.py uses on real sockets, ten runs per core), so that
the suite stays fast and each run is reproducible.
"""

from __future__ import annotations

import hashlib
import os

import pytest

import quicconn
from quicconn.testing import DatagramPair, FakeClock, Impairment, ImpairmentSpec
from tests.support.certs import CertFiles
from tests.support.echo import EchoServer

ALPN = ["quicconn-test"]
SIZE = 2_000_000
LOSS = 30.0


def echo_through_loss(pki: CertFiles, seed: int) -> tuple[str, float]:
    """Echo SIZE bytes through LOSS% loss each way; the outcome ("ok" if
    byte-exact, else what happened) and the fake seconds it took."""
    clock = FakeClock()
    pair = DatagramPair(clock)
    for i, link in enumerate((pair.to_server, pair.to_client)):
        link.impairment = Impairment(ImpairmentSpec(drop_rate=LOSS), seed=2 * seed + i)
    sctx = quicconn.Context(quicconn.SERVER)
    sctx.load_cert_chain(pki.cert, pki.key)
    sctx.set_alpn_protos(ALPN)
    lst = sctx.new_listener(pair.server, quicconn.LISTENER_FLAG_NO_VALIDATE)
    server = EchoServer(lst)
    cctx = quicconn.Context(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(ALPN)
    client = quicconn.Connection(cctx)
    client.set_transport(pair.client)
    client.set1_initial_peer_addr(pair.SERVER_ADDRESS)
    client.set1_host("localhost")
    client.set_blocking_mode(False)
    client.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
    payload = os.urandom(SIZE)
    echoed = hashlib.sha256()
    received = sent = 0
    start = clock.now()
    outcome = "did not finish in 300 s"
    try:
        while clock.now() - start < 300:
            lst.handle_events()
            server.step()
            client.handle_events()
            try:
                if sent < SIZE:
                    sent += client.write(payload[sent : sent + 65536])
                elif sent == SIZE:
                    client.stream_conclude()
                    sent += 1
                while True:
                    data = client.read(65536)
                    echoed.update(data)
                    received += len(data)
            except (quicconn.WantReadError, quicconn.WantWriteError):
                pass
            except quicconn.ZeroReturnError:
                exact = received == SIZE
                exact = exact and echoed.digest() == hashlib.sha256(payload).digest()
                outcome = "ok" if exact else f"corrupt: {received} bytes"
                break
            except quicconn.Error as exc:
                outcome = f"{type(exc).__name__}: {exc} after {received} bytes"
                break
            deadlines = [
                clock.now() + t
                for t in (lst.get_event_timeout(), client.get_event_timeout())
                if t is not None
            ]
            deadlines += [
                t
                for t in (pair.client.next_arrival(), pair.server.next_arrival())
                if t is not None
            ]
            assert deadlines, "nothing is armed on either side"
            clock.advance_to(max(clock.now(), min(deadlines)))
        return outcome, clock.now() - start
    finally:
        client.free()
        for conn in list(server.conns):
            conn.free()
        lst.free()


@pytest.mark.usefixtures("each_core")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_2_mb_echo_survives_30_percent_loss_both_ways(
    pki: CertFiles, seed: int
) -> None:
    outcome, took = echo_through_loss(pki, seed)
    assert outcome == "ok", outcome
    assert took < 120  # well inside, not a race with the idle timeout
