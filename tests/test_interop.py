"""The local interop runner: CI's subset of the matrix, and its own checks.

The subset issue 6 asks CI to run on every submission: quicconn's client
against aioquic's example server for handshake, transfer, retry and
transferloss, and against ngtcp2's gtlsserver for http3 -- each over the
simulated runner link, judged from tshark's reading of the captures.  The
other tests pin that the judging can fail: a Retry where none is expected,
a corrupted download, an unsupported combination.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from interop import report, testcases
from interop.implementations import default_quicconn, implementations
from interop.pcap import PcapWriter
from interop.peers import locate
from interop.runner import Outcome, run_testcase, wait_until_ready
from interop.testcases import Evidence, Result, files_match
from interop.trace import Direction, Trace

pytestmark = pytest.mark.peer

#: quicconn on the core this run of the suite uses ($QUICCONN_CORE or auto).
OURS = default_quicconn()


@pytest.fixture(scope="module")
def impls():
    if shutil.which("tshark") is None:
        pytest.fail("tshark is missing: `python -m interop.peers install` installs it")
    return implementations(locate())


@pytest.mark.parametrize("name", ["handshake", "transfer", "retry", "transferloss"])
def test_quicconn_client_passes_against_aioquic_server(impls, tmp_path, name):
    outcome = run_testcase(testcases.get(name), impls["aioquic"], impls[OURS], tmp_path)
    assert outcome.result is Result.SUCCEEDED, (outcome.reason, outcome.log_dir)
    assert outcome.alpn == "hq-interop"


def test_quicconn_client_passes_http3_against_gtlsserver(impls, tmp_path):
    outcome = run_testcase(
        testcases.get("http3"), impls["ngtcp2"], impls[OURS], tmp_path
    )
    assert outcome.result is Result.SUCCEEDED, (outcome.reason, outcome.log_dir)
    assert outcome.alpn == "h3"


def test_handshake_check_fails_when_the_server_sends_a_retry(impls, tmp_path):
    # The server is told "retry" but the run is judged as "handshake".
    forced = dataclasses.replace(testcases.get("handshake"), server_testname="retry")
    outcome = run_testcase(forced, impls["aioquic"], impls[OURS], tmp_path)
    assert outcome.result is Result.FAILED
    assert "Retry" in outcome.reason


def test_a_client_that_cannot_run_a_testcase_is_reported_unsupported(impls, tmp_path):
    outcome = run_testcase(
        testcases.get("transfer"), impls[OURS], impls["openssl"], tmp_path
    )
    assert outcome.result is Result.UNSUPPORTED
    assert "one request per connection" in outcome.reason


def test_a_corrupted_download_fails_the_file_check(tmp_path):
    www, downloads = tmp_path / "www", tmp_path / "downloads"
    www.mkdir()
    downloads.mkdir()
    names = dataclasses.replace(
        testcases.get("handshake"), files=(1000, 2000)
    ).make_files(www, random.Random(1))
    for name in names:
        shutil.copy(www / name, downloads / name)
    evidence = Evidence(www, downloads, names, None, None, None)  # type: ignore[arg-type]
    assert files_match(evidence) is None
    data = bytearray((downloads / names[1]).read_bytes())
    data[1500] ^= 0xFF
    (downloads / names[1]).write_bytes(bytes(data))
    assert "content differs" in (files_match(evidence) or "")
    (downloads / names[0]).unlink()
    assert "missing" in (files_match(evidence) or "")


@pytest.mark.parametrize(
    ("client", "server"),
    [(("127.0.0.1", 50001), ("127.0.0.1", 443)), (("::1", 50001), ("::1", 443))],
)
def test_captures_carry_addresses_ports_and_payload_tshark_can_read(
    tmp_path: Path, client, server
):
    if shutil.which("tshark") is None:
        pytest.fail("tshark is missing: `python -m interop.peers install` installs it")
    pcap = tmp_path / "t.pcap"
    # A QUIC v1 Initial's header (no token, a 1000-byte length); the
    # protected payload is garbage, which tshark reports without failing.
    payload = bytes(1000)
    initial = (
        bytes([0xC3, 0, 0, 0, 1, 8])
        + b"\xaa" * 8
        + bytes([8])
        + b"\xbb" * 8
        + bytes([0])
        + (0x4000 | len(payload)).to_bytes(2, "big")
        + payload
    )
    with PcapWriter(pcap) as writer:
        writer.write(1_700_000_000.25, client, server, initial)
        writer.write(1_700_000_000.5, server, client, b"\x40" + bytes(40))
    trace = Trace(pcap, server[1])
    first, second = trace.datagrams
    assert (first.source, first.destination) == (client, server)
    assert first.direction is Direction.FROM_CLIENT
    assert first.ip_version == (6 if ":" in client[0] else 4)
    assert first.size == len(initial)
    assert first.packets[0].scid == "bb" * 8
    assert first.time == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert second.direction is Direction.FROM_SERVER


def test_a_rebinding_the_capture_cannot_decrypt_is_unjudgeable_not_failed(
    tmp_path: Path,
):
    # A client with zero-length connection IDs (s_client) leaves tshark
    # unable to link the server's packets on a new path to the connection.
    if shutil.which("tshark") is None:
        pytest.fail("tshark is missing: `python -m interop.peers install` installs it")
    pcap = tmp_path / "t.pcap"
    server, old, new = ("127.0.0.1", 443), ("127.0.0.1", 50001), ("127.0.0.1", 50002)
    short_packet = b"\x40" + bytes(40)
    with PcapWriter(pcap) as writer:
        writer.write(1_700_000_000.0, server, old, short_packet)
        writer.write(1_700_000_001.0, server, new, short_packet)
    trace = Trace(pcap, server[1])
    assert trace.datagrams[1].undecrypted
    evidence = Evidence(tmp_path, tmp_path, [], trace, trace, None)
    with pytest.raises(testcases.Unjudgeable, match="zero-length connection IDs"):
        testcases.path_validated_after_rebinding(evidence)


def test_readiness_probe_waits_for_version_negotiation(impls, tmp_path):
    peers = locate()
    if peers.gtlsserver is None:
        pytest.fail("gtlsserver is missing: .ci/run installs ngtcp2-server")
    from tests.conftest import free_udp_port

    port = free_udp_port()
    assert not wait_until_ready("127.0.0.1", port, timeout=0.3)
    from interop.certs import make_chain

    make_chain(tmp_path)
    proc = subprocess.Popen(
        [
            peers.gtlsserver,
            "-q",
            "127.0.0.1",
            str(port),
            str(tmp_path / "priv.key"),
            str(tmp_path / "cert.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until_ready("127.0.0.1", port, timeout=10)
    finally:
        proc.kill()
        proc.wait()


def test_reports_show_the_grid_the_runner_schema_and_explain_failures(impls):
    # The diagnoses were written for runs on the aioquic core.
    Q = "quicconn-aioquic"
    chosen = [testcases.get(n) for n in ("handshake", "rebind-port", "goodput")]
    outcomes = [
        Outcome(Q, Q, "handshake", Result.SUCCEEDED, alpn="hq"),
        Outcome(Q, Q, "goodput", Result.SUCCEEDED, values=[9000.0]),
        Outcome(Q, "openssl", "handshake", Result.FAILED, "it broke"),
        Outcome("ngtcp2", Q, "rebind-port", Result.FAILED, "no challenge"),
    ]
    servers = [impls[Q], impls["ngtcp2"]]
    clients = [impls[Q], impls["openssl"]]
    text = report.markdown(
        outcomes, servers, clients, chosen, start=0.0, end=60.0, environment=""
    )
    assert "| **quicconn-aioquic** | ✓ H G | ✕ H |" in text
    assert "| **ngtcp2** | ✕ BP | — |" in text
    failures = text.split("## Failures")[1]
    assert "quicconn-aioquic ← openssl, handshake**: not diagnosed" in failures
    assert "ngtcp2 0.12.1's server first sends an ACK-only packet" in failures
    data = report.result_json(
        outcomes, servers, clients, chosen, start=0.0, end=60.0, log_dir=Path("x")
    )
    # one row per (client, server) pair, clients outer, as the runner writes
    assert len(data["results"]) == len(clients) * len(servers)
    assert data["results"][0] == [
        {"abbr": "H", "name": "handshake", "result": "succeeded"}
    ]
    assert data["measurements"][0][0]["details"] == "9000 (± 0) kbps"


def test_recorded_outcomes_round_trip_and_the_newest_run_of_a_cell_wins(tmp_path):
    from interop.__main__ import _record, _recorded

    _record(tmp_path, Outcome("ngtcp2", "quicconn", "v2", Result.FAILED, "old"))
    _record(tmp_path, Outcome("quicconn", "quicconn", "goodput", Result.SUCCEEDED))
    newer = Outcome("ngtcp2", "quicconn", "v2", Result.UNSUPPORTED, "draft only")
    newer.values = [1.5]
    _record(tmp_path, newer)
    outcomes, first = _recorded(tmp_path)
    assert len(outcomes) == 2 and first is not None
    assert newer in outcomes
