"""Every program in examples/ runs and does what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.certs import CertFiles

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ROOT = EXAMPLES.parent
EXPECTED = b"hello from the aioquic test server"


def run_example(
    name: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("quic-client-block.py", []),
        ("quic-client-non-block.py", []),
        ("asyncio-client.py", []),
        ("asyncio-client.py", ["--uvloop"]),
        ("trio-client.py", []),
    ],
)
def test_client_example_fetches_over_quic(
    name: str, extra: list[str], pki: CertFiles, aioquic_server: int
):
    result = run_example(
        name, *extra, "--cafile", str(pki.ca), "localhost", str(aioquic_server)
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"HTTP/1.0 200 OK" in result.stdout
    assert EXPECTED in result.stdout


def test_the_asyncio_client_example_leaves_the_loop_free(
    pki: CertFiles, aioquic_server: int
):
    result = run_example(
        "asyncio-client.py", "--cafile", str(pki.ca), "localhost", str(aioquic_server)
    )
    assert result.returncode == 0, result.stderr.decode()
    ticks = int(result.stderr.split(b"the loop ran ")[1].split()[0])
    assert ticks > 0, "no other task ran while the request was in flight"


def test_the_thread_assisted_example_outlives_its_idle_timeout(
    pki: CertFiles, aioquic_server: int
):
    result = run_example(
        "thread-assisted-client.py",
        "--cafile",
        str(pki.ca),
        "--pause",
        "2",
        "--idle-timeout",
        "0.8",
        "localhost",
        str(aioquic_server),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"readable=True open=True" in result.stderr
    assert EXPECTED in result.stdout


def test_the_asyncio_echo_server_example_serves_its_clients():
    result = run_example(
        "asyncio-echo-server.py", "--self-test", "--clients", "30", timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"self-test: 30 clients x 3 streams echoed" in result.stdout


def test_blocking_example_reports_a_verification_failure(
    other_pki: CertFiles, aioquic_server: int
):
    result = run_example(
        "quic-client-block.py",
        "--cafile",
        str(other_pki.ca),
        "localhost",
        str(aioquic_server),
    )
    assert result.returncode == 1
    assert b"Verify error" in result.stdout


def test_every_example_is_exercised():
    """A new example must come with a test that runs it (add it above or elsewhere)."""
    tested = {
        "quic-client-block.py",
        "quic-client-non-block.py",
        "asyncio-client.py",
        "asyncio-echo-server.py",
        "thread-assisted-client.py",
        "trio-client.py",
    }
    covered_elsewhere = {
        path.name
        for test in Path(__file__).parent.glob("test_*.py")
        for path in EXAMPLES.glob("*.py")
        if test.name != "test_examples.py" and path.name in test.read_text()
    }
    missing = {p.name for p in EXAMPLES.glob("*.py")} - tested - covered_elsewhere
    assert not missing, f"examples without a test: {sorted(missing)}"


def test_demo_command_explains_a_verified_exchange():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "quicconn", "demo", "--size", "100000"],
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "certificate verified" in result.stdout
    assert "status 200, 100,000 bytes (matches the file)" in result.stdout
    assert "closed locally with application error 0x0" in result.stdout
