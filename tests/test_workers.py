"""Worker groups (quicconn.scale): several processes on one UDP port,
steered by connection ID.

The clients run here, on asyncio (quicconn.asyncio), each behind its own
mapping of a NAT on loopback (tests/support/nat.py) that moves the client
to a new source port mid-transfer.  The workers are real processes with
their own SO_REUSEPORT sockets (tests/support/workers.py echoes, prefixed
with the worker's index), on the core the environment chooses.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import quicconn
import quicconn.asyncio as qa
from interop.peers import openssl35_command
from quicconn._io import steering
from quicconn.scale import (
    SHUTDOWN_REASON,
    QuicLbConfig,
    QuicLbDecoder,
    WorkerGroup,
    WorkerReport,
)
from quicconn.scale._toss import steering_layout
from tests.support.certs import CertFiles
from tests.support.cores import Capability, capabilities
from tests.support.nat import Mapping
from tests.support.workers import echo_worker

ALPN = ["quicconn-scale"]
HOST = QuicLbConfig(b"\x2a\x17", nonce_length=5)
PAYLOAD = 32 * 1024
#: The NAT moves a client to a new port after this many of its datagrams:
#: past the handshake (with its Retry), early in the 32 KiB upload.
REBIND_AFTER = 10

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests/peers"

pytestmark = pytest.mark.timeout(240)


def start_group(
    pki: CertFiles, *, steering_on: bool = True, flags: int = 0
) -> WorkerGroup:
    group = WorkerGroup(
        echo_worker,
        ("127.0.0.1", 0),
        workers=2,
        args=(str(pki.cert), str(pki.key), ALPN, flags),
        quic_lb=HOST,
        steering=steering_on,
        trace_datagrams=True,
    )
    group.start()
    return group


@dataclass
class ClientRun:
    mapping: Mapping
    payload: bytes
    received: bytes | None = None
    error: BaseException | None = None
    close_reason: str | None = None


@dataclass
class Run:
    clients: list[ClientRun]
    reports: list[WorkerReport]
    kernel_drops: list[int]
    seconds: float
    #: datagrams each worker received, per destination connection ID
    received: list[Counter[bytes]] = field(default_factory=list)

    def workers_seeing(self, cid: bytes) -> set[int]:
        return {w for w, counts in enumerate(self.received) if counts.get(cid)}


async def one_client(
    pki: CertFiles,
    server: tuple[str, int],
    payload: bytes,
    rebind_after: int,
    *,
    session: quicconn.Session | None = None,
    early: bytes = b"",
    idle_timeout: float = 60,
) -> tuple[ClientRun, quicconn.Session | None, int]:
    mapping = Mapping(server, rebind_after, HOST.cid_length)
    port = await mapping.open()
    run = ClientRun(mapping, payload)
    kept: quicconn.Session | None = None
    early_status = quicconn.EARLY_DATA_NOT_SENT
    try:
        ctx = quicconn.Context(quicconn.CLIENT)
        ctx.load_verify_locations(str(pki.ca))
        ctx.set_alpn_protos(ALPN)
        # Long enough that a client starved by a loaded machine is not
        # timed out (then its next packet would meet a stateless reset).
        ctx.idle_timeout = idle_timeout
        ctx.handshake_timeout = idle_timeout
        quic = quicconn.Connection(ctx)
        quic.set1_host("127.0.0.1")
        quic.set1_initial_peer_addr(("127.0.0.1", port))
        quic.set_fd(_client_socket())
        if session is not None:
            quic.set_session(session)
        if early:
            quic.write_early_data(early)
        conn = qa.Connection(quic)
        try:
            await conn.do_handshake()
            await conn.write(payload, end=True)
            # The worker's index, then the echo.  Read to that length, not
            # to the server's FIN: with qh3 at both ends, a FIN the server
            # sent around a NAT rebinding is sometimes never delivered
            # (the server's core counts it acknowledged), which is the
            # core's matter, not the steering's.
            data = bytearray()
            while len(data) < len(payload) + 1 and (chunk := await conn.read()):
                data += chunk
            run.received = bytes(data)
            kept = quic.get1_session()
            early_status = quic.get_early_data_status()
            # Everything was acknowledged (the server echoed it all): send
            # CONNECTION_CLOSE now and do not wait out the closing period
            # (3 PTOs: seconds, under load).
            quic.shutdown(
                quicconn.SHUTDOWN_FLAG_RAPID
                | quicconn.SHUTDOWN_FLAG_NO_STREAM_FLUSH
                | quicconn.SHUTDOWN_FLAG_NO_BLOCK
            )
        finally:
            conn.abort()
    except Exception as exc:
        run.error = exc
    finally:
        mapping.close()
    return run, kept, early_status


def _client_socket():
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_rebinding_clients(
    pki: CertFiles,
    group: WorkerGroup,
    count: int,
    concurrency: int = 50,
    idle_timeout: float = 60,
) -> Run:
    rng = random.Random(1802)

    async def main() -> list[ClientRun]:
        gate = asyncio.Semaphore(concurrency)

        async def client(i: int) -> ClientRun:
            payload = rng.randbytes(PAYLOAD)
            async with gate:
                run, _, _ = await one_client(pki, group.address, payload, REBIND_AFTER)
                return run

        return await asyncio.wait_for(
            asyncio.gather(*(client(i) for i in range(count))), 180
        )

    started = time.monotonic()
    clients = asyncio.run(main())
    seconds = time.monotonic() - started
    drops = group.kernel_drops()
    reports = group.stop()
    result = Run(clients, reports, drops, seconds)
    result.received = [Counter() for _ in range(group.workers)]
    for report in reports:
        result.received[report.index].update(report.datagrams)
    return result


def server_cid(run: ClientRun) -> bytes | None:
    """The one QUIC-LB ID of ours among the IDs the client addressed."""
    decoder = QuicLbDecoder([HOST])
    ours = [
        cid
        for cid in run.mapping.forwarded
        if len(cid) == HOST.cid_length and decoder.server_id(cid) == HOST.server_id
    ]
    return ours[0] if len(ours) == 1 else None


def test_200_clients_moved_to_new_ports_mid_transfer_stay_with_their_worker(pki):
    group = start_group(pki)
    try:
        run = run_rebinding_clients(pki, group, 200)
    finally:
        group.stop()
    failed = [c for c in run.clients if c.error is not None]
    assert not failed, f"{len(failed)} clients failed: " + "; ".join(
        f"{c.error!r} (IDs used, workers that got each: "
        + ", ".join(
            f"{cid.hex()}: {run.workers_seeing(cid)}" for cid in c.mapping.order
        )
        + ")"
        for c in failed[:3]
    )
    served = Counter()
    cross_worker_retries = 0
    layout = steering_layout(HOST, group.workers)
    for client in run.clients:
        mapping = client.mapping
        assert client.received is not None
        owner = client.received[0]
        assert client.received[1:] == client.payload  # byte-exact
        served[owner] += 1
        # The NAT moved the client, and the server answered on the new port.
        assert mapping.rebound and mapping.answered_after_rebind > 0
        # Its connection ID names its worker, and every datagram sent to it
        # reached that worker and no other.
        cid = server_cid(client)
        assert cid is not None, "no (or more than one) server ID in use"
        assert cid[layout.worker_offset] == owner
        assert run.workers_seeing(cid) == {owner}
        if not any(run.kernel_drops):
            assert run.received[owner][cid] == mapping.forwarded[cid]
        # Every ID the client used (its first Initial's, the Retry's)
        # reached exactly one worker.
        for other in mapping.order:
            assert len(run.workers_seeing(other)) == 1, other.hex()
        first, retried = mapping.order[0], mapping.order[1]
        assert run.workers_seeing(retried) == {owner}
        if run.workers_seeing(first) != {owner}:
            cross_worker_retries += 1  # the Retry came from the other worker
    assert set(served) == {0, 1}, f"one worker served everything: {served}"
    # Retry tokens minted by one worker were validated by the other.
    assert cross_worker_retries > 0
    stats = [r.stats for r in run.reports]
    assert sum(s["connections_accepted"] for s in stats) == 200
    assert sum(s["retries_sent"] for s in stats) >= 200
    # The kernel alone put every datagram where it belonged: nothing tossed.
    assert sum(r.tossed_out + r.tossed_in for r in run.reports) == 0
    print(
        f"\n200 clients in {run.seconds:.1f} s; served {dict(served)}; "
        f"{cross_worker_retries} Retry tokens validated by the other worker; "
        f"kernel drops {run.kernel_drops}"
    )


def test_without_steering_rebound_clients_reach_the_wrong_worker_and_fail(pki):
    # The kernel's 4-tuple hash: after the NAT moved a client, its packets
    # go wherever the new port hashes to.  The test above can fail.
    group = start_group(pki, steering_on=False)
    try:
        # Clients the wrong worker resets fail at once; one whose packets
        # it merely drops fails when its idle timeout expires.
        run = run_rebinding_clients(pki, group, 40, idle_timeout=10)
    finally:
        group.stop()
    split = [
        c
        for c in run.clients
        if (cid := server_cid(c)) is not None and len(run.workers_seeing(cid)) > 1
    ]
    failed = [c for c in run.clients if c.error is not None]
    assert split, "no connection's packets reached two workers"
    assert failed, "every client survived reaching the wrong worker"
    resets = sum(r.stats["stateless_resets_sent"] for r in run.reports)
    assert resets > 0  # the wrong worker reset them (the key is shared)
    print(f"\nwithout steering: {len(split)} of 40 split, {len(failed)} failed")


def test_clients_moving_to_an_id_the_core_chose_are_tossed_to_their_worker(pki):
    # OpenSSL's client moves to a spare connection ID as soon as it gets
    # one, even for its last Handshake packets.  qh3's core issues one of
    # its own choosing (no worker index in it): the kernel hashes it, and
    # the worker it lands on tosses the datagram to the owner.  The aioquic
    # core issues none.
    group = start_group(pki, flags=quicconn.LISTENER_FLAG_NO_VALIDATE)
    try:
        command, extra = openssl35_command(
            [
                sys.executable, str(PEERS / "openssl_clients.py"),
                "--port", str(group.address[1]),
                "--ca", str(pki.ca),
                "--clients", "30",
                "--alpn", ALPN[0],
            ]
        )  # fmt: skip
        env = {**os.environ, **extra, "PYTHONPATH": str(ROOT)}
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(3)
        ]
        results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        reports = group.stop()
    assert [r["failed"] for r in results] == [0, 0, 0], results
    stats = [r.stats for r in reports]
    assert sum(s["connections_accepted"] for s in stats) == 90
    # Every datagram reached its connection: none was dropped as unknown.
    assert [s["datagrams_dropped"] for s in stats] == [0, 0], stats
    tossed_out = sum(r.tossed_out for r in reports)
    assert tossed_out == sum(r.tossed_in for r in reports)
    if Capability.CHOSEN_CONNECTION_IDS in capabilities():
        assert tossed_out == 0
    else:
        assert tossed_out > 0


@pytest.fixture(scope="module")
def group(pki):
    started = start_group(pki)
    yield started
    started.stop()


def test_sessions_resume_with_0rtt_on_another_worker(pki, group):
    async def main() -> list[tuple[int, int, bool, int]]:
        outcomes = []
        for i in range(12):
            first, session, _ = await one_client(
                pki, group.address, b"first %d" % i, 10**9
            )
            assert first.error is None, first.error
            assert session is not None and first.received is not None
            again, _, early = await one_client(
                pki,
                group.address,
                b" then 1-RTT",
                10**9,
                session=session,
                early=b"0-RTT ",
            )
            assert again.error is None, again.error
            assert again.received is not None
            assert again.received[1:] == b"0-RTT  then 1-RTT"
            outcomes.append((first.received[0], again.received[0], True, early))
        return outcomes

    outcomes = asyncio.run(main())
    assert all(early == quicconn.EARLY_DATA_ACCEPTED for *_, early in outcomes)
    across = [o for o in outcomes if o[0] != o[1]]
    assert across, "every resumption landed on the issuing worker"


def test_retry_tokens_minted_by_one_worker_validate_on_another(pki, group):
    layout = steering_layout(HOST, group.workers)

    async def main() -> list[ClientRun]:
        runs = []
        for i in range(16):
            run, _, _ = await one_client(pki, group.address, b"r%d" % i, 10**9)
            runs.append(run)
        return runs

    minted_elsewhere = 0
    for run in asyncio.run(main()):
        assert run.error is None, run.error
        first, retried = run.mapping.order[0], run.mapping.order[1]
        assert first != retried  # the server answered with a Retry
        initial = b"\xc0\x00\x00\x00\x01" + bytes([len(first)]) + first + bytes(1200)
        minted_by = steering.predict(layout, initial)
        assert run.received is not None
        if minted_by != run.received[0]:
            minted_elsewhere += 1
    assert minted_elsewhere > 0


def test_a_dead_worker_is_replaced_and_stop_closes_every_connection(pki):
    group = start_group(pki)
    try:
        victim = group.pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while group.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group.restarts == 1 and group.pids[0] != victim
        dead = [r for r in group.reports if r.exitcode == -signal.SIGKILL]
        assert [r.index for r in dead] == [0]

        async def main() -> list[str]:
            # Clients of both workers (the replacement serves index 0 once
            # it started), each holding its connection open.
            conns: dict[int, list[qa.Connection]] = {0: [], 1: []}
            deadline = time.monotonic() + 60
            while not (conns[0] and conns[1]) and time.monotonic() < deadline:
                conn = await qa.connect(
                    "127.0.0.1", group.address[1], alpn=ALPN, cafile=str(pki.ca)
                )
                await conn.write(b"hold")
                owner = (await conn.read(1))[0]
                conns[owner].append(conn)
            assert conns[0] and conns[1], "a worker served nothing"
            loop = asyncio.get_running_loop()
            stopped = loop.run_in_executor(None, group.stop)
            reasons = []
            for conn in conns[0] + conns[1]:
                with pytest.raises(quicconn.Error):
                    async with asyncio.timeout(10):  # not the idle timeout
                        while await conn.read():
                            pass
                info = conn.quic.get_conn_close_info()
                assert info is not None
                reasons.append(info.reason)
                conn.abort()
            await stopped
            return reasons

        reasons = asyncio.run(main())
        assert reasons and set(reasons) == {SHUTDOWN_REASON}
        final = [r for r in group.reports if r.exitcode == 0]
        assert sorted(r.index for r in final) == [0, 1]
        assert sum(r.closed_at_stop for r in final) == len(reasons)
    finally:
        group.stop()


def test_a_second_sigterm_inside_the_first_handler_does_not_deadlock_a_worker():
    """Linux sends a worker SIGTERM when the supervising thread ends
    (PR_SET_PDEATHSIG), and the group's stop sends another: the second may
    interrupt the first handler inside Event.set(), which holds a plain
    lock.  A worker that set the event again there hung until killed, and
    its connections never heard a CONNECTION_CLOSE (1 stop in 12 on the
    aioquic core under load)."""
    import socket as socket_module
    import threading
    from multiprocessing import Pipe

    from quicconn.scale import ServerKeys
    from quicconn.scale._worker import Worker, WorkerSpec

    spec = WorkerSpec(0, 1, 0, ServerKeys.generate(), HOST, echo_worker, (), False)
    mine, theirs = Pipe()
    with socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM) as sock:
        worker = Worker(spec, sock, theirs)
        worker._stop(signal.SIGTERM, None)
        assert worker.stopping

        def again() -> None:
            # As if interrupting the first handler inside Event.set().
            with worker.stop_event._cond:  # type: ignore[attr-defined]
                worker._stop(signal.SIGTERM, None)

        second = threading.Thread(target=again, daemon=True)
        second.start()
        second.join(timeout=5)
        assert not second.is_alive(), "the second SIGTERM deadlocked"
    mine.close()
    theirs.close()
