"""quicconn's interop-runner endpoint (interop/endpoint.py, run_endpoint.sh).

Client and server run as separate processes with the runner's environment,
over loopback UDP (no simulator: the runner's own tests in test_interop.py
add the link).  What each client connection did comes from the endpoint's
``RESULT`` line; the bytes come from the downloaded files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.certs import make_chain
from interop.runner import wait_until_ready
from tests.conftest import ROOT, free_udp_port, peer_process

ENDPOINT = [sys.executable, "-m", "interop.endpoint"]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The runner's /www and /certs: three files and a one-certificate chain."""
    base = tmp_path_factory.mktemp("endpoint")
    www, certs = base / "www", base / "certs"
    www.mkdir()
    make_chain(certs)
    for name, size in (("small", 1000), ("medium", 100_000), ("large", 1_500_000)):
        (www / name).write_bytes(os.urandom(size))
    return {"www": www, "certs": certs}


def _server(volumes, testcase: str, host: str = "127.0.0.1"):
    port = free_udp_port(host)
    env = {
        "ROLE": "server",
        "TESTCASE": testcase,
        "WWW": str(volumes["www"]),
        "CERTS": str(volumes["certs"]),
        "HOST": host,
        "PORT": str(port),
    }
    return peer_process(ENDPOINT, ready_prefix="LISTENING", env=env), port


@pytest.fixture
def server(volumes) -> Iterator[int]:
    """An endpoint server for the ``transfer`` testcase (no Retry)."""
    process, port = _server(volumes, "transfer")
    with process:
        yield port


def run_client(
    volumes, tmp_path: Path, testcase: str, port: int, names, host="127.0.0.1"
) -> tuple[subprocess.CompletedProcess[str], list[dict], Path]:
    downloads = tmp_path / "downloads"
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    env = os.environ | {
        "ROLE": "client",
        "TESTCASE": testcase,
        "REQUESTS": " ".join(f"https://{authority}/{n}" for n in names),
        "DOWNLOADS": str(downloads),
        "CERTS": str(volumes["certs"]),
        "SSLKEYLOGFILE": str(tmp_path / "keys.log"),
        "QLOGDIR": str(tmp_path / "qlog"),
    }
    result = subprocess.run(
        ENDPOINT, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    report = json.loads(lines[-1][len("RESULT ") :]) if lines else []
    return result, report, downloads


def assert_downloaded(volumes, downloads: Path, names) -> None:
    for name in names:
        assert (downloads / name).read_bytes() == (volumes["www"] / name).read_bytes()


ALL = ("small", "medium", "large")


def test_transfer_fetches_every_file_over_one_connection(volumes, server, tmp_path):
    result, report, downloads = run_client(volumes, tmp_path, "transfer", server, ALL)
    assert result.returncode == 0, result.stderr
    assert len(report) == 1 and report[0]["files"] == 3
    assert report[0]["alpn"] == "hq-interop" and report[0]["version"] == 1
    assert_downloaded(volumes, downloads, ALL)
    assert "SERVER_HANDSHAKE_TRAFFIC_SECRET" in (tmp_path / "keys.log").read_text()
    assert list((tmp_path / "qlog").glob("*.qlog"))


def test_http3_uses_h3(volumes, server, tmp_path):
    result, report, downloads = run_client(volumes, tmp_path, "http3", server, ALL)
    assert result.returncode == 0, result.stderr
    assert report[0]["alpn"] == "h3"
    assert_downloaded(volumes, downloads, ALL)


def test_chacha20_offers_only_chacha20(volumes, server, tmp_path):
    result, report, _ = run_client(volumes, tmp_path, "chacha20", server, ["small"])
    assert result.returncode == 0, result.stderr
    assert report[0]["cipher"] == "TLS_CHACHA20_POLY1305_SHA256"


def test_v2_moves_the_connection_to_quic_v2(volumes, server, tmp_path):
    result, report, downloads = run_client(volumes, tmp_path, "v2", server, ["small"])
    assert result.returncode == 0, result.stderr
    assert report[0]["version"] == 0x6B3343CF
    assert_downloaded(volumes, downloads, ["small"])


def test_keyupdate_transfers_after_updating_keys(volumes, server, tmp_path):
    result, _, downloads = run_client(volumes, tmp_path, "keyupdate", server, ["large"])
    assert result.returncode == 0, result.stderr
    assert_downloaded(volumes, downloads, ["large"])


def test_resumption_resumes_the_second_connection(volumes, server, tmp_path):
    names = ["small", "medium"]
    result, report, downloads = run_client(
        volumes, tmp_path, "resumption", server, names
    )
    assert result.returncode == 0, result.stderr
    assert [c["resumed"] for c in report] == [False, True]
    assert not report[1]["early_data_accepted"]
    assert_downloaded(volumes, downloads, names)


def test_zerortt_sends_the_second_requests_as_early_data(volumes, server, tmp_path):
    names = ["small", "medium"]
    result, report, downloads = run_client(volumes, tmp_path, "zerortt", server, names)
    assert result.returncode == 0, result.stderr
    assert [c["early_data_accepted"] for c in report] == [False, True]
    assert_downloaded(volumes, downloads, names)


def test_multiconnect_uses_one_connection_per_file(volumes, server, tmp_path):
    result, report, downloads = run_client(
        volumes, tmp_path, "multiconnect", server, ALL
    )
    assert result.returncode == 0, result.stderr
    assert [c["files"] for c in report] == [1, 1, 1]
    assert_downloaded(volumes, downloads, ALL)


def test_ipv6_transfer(volumes, tmp_path):
    process, port = _server(volumes, "transfer", host="::1")
    with process:
        result, _, downloads = run_client(
            volumes, tmp_path, "transfer", port, ["small"], host="::1"
        )
    assert result.returncode == 0, result.stderr
    assert_downloaded(volumes, downloads, ["small"])


def test_a_failed_download_is_a_failure_exit(volumes, server, tmp_path):
    result, report, _ = run_client(volumes, tmp_path, "transfer", server, ["nothere"])
    assert result.returncode == 1
    assert "stream reset by the server" in result.stderr
    assert report[0]["files"] == 0


def test_server_answers_the_readiness_probe_with_version_negotiation(server):
    assert wait_until_ready("127.0.0.1", server, timeout=5)


@pytest.mark.parametrize(
    ("role", "testcase"), [("client", "ecn"), ("server", "connectionmigration")]
)
def test_run_endpoint_sh_exits_127_for_unsupported_testcases(role, testcase):
    result = subprocess.run(
        [str(ROOT / "interop" / "run_endpoint.sh")],
        env=os.environ | {"ROLE": role, "TESTCASE": testcase},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 127
    assert f"unsupported testcase {testcase!r}" in result.stderr


def test_a_bad_role_is_a_usage_error():
    result = subprocess.run(
        ENDPOINT,
        env=os.environ | {"ROLE": "proxy", "TESTCASE": "handshake"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "ROLE must be client or server" in result.stderr
