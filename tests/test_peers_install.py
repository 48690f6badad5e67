"""The peers ``python -m interop.peers install`` provides work, each against another.

These confirm the installation rather than quicconn: aioquic's example client
against its example server, OpenSSL 3.5's ``s_client -quic`` against the same
server (hq-interop, certificate verified), and ngtcp2's client against its
server (HTTP/3).  Every transfer is checked byte for byte.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop import peers as peers_module
from tests.conftest import aioquic_example_server, free_udp_port, peer_process
from tests.support.certs import CertFiles
from tests.support.peers import ALLOW_MISSING_ENV, require_peer, wait_udp_bound

ROOT = Path(__file__).resolve().parent.parent
FILE_SIZE = 300_000

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def docroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "file").write_bytes(os.urandom(FILE_SIZE))
    return root


@pytest.fixture(scope="module")
def example_server(pki: CertFiles, docroot: Path) -> Iterator[int]:
    with aioquic_example_server(pki, docroot) as port:
        yield port


def read_exactly(proc: subprocess.Popen[bytes], size: int, timeout: float) -> bytes:
    """Read ``size`` bytes of ``proc``'s stdout, or whatever came before ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    received = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(received) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            received += chunk
    return bytes(received)


# -- installation and discovery ------------------------------------------


def test_paths_command_prints_every_installed_peer_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "interop.peers", "paths"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    paths = json.loads(out)
    assert set(paths) >= {"gtlsserver", "gtlsclient", "openssl35", "http3_server"}
    for name in (
        "gtlsserver",
        "gtlsclient",
        "openssl35",
        "http3_server",
        "http3_client",
    ):
        path = require_peer(name)
        assert paths[name] == path
        assert Path(path).is_file()


def test_a_missing_peer_fails_the_test_unless_missing_peers_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUICCONN_PEERS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    with pytest.raises(
        pytest.fail.Exception, match=r"python -m interop\.peers install"
    ):
        require_peer("openssl35")
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="openssl35"):
        require_peer("openssl35")


def test_openssl35_wrapper_runs_openssl_3_5_with_quic() -> None:
    wrapper = require_peer("openssl35")
    assert peers_module.openssl35_version(wrapper).startswith("OpenSSL 3.5.")
    usage = subprocess.run(
        [wrapper, "s_client", "-help"], capture_output=True, text=True, timeout=30
    )
    assert "-quic" in usage.stdout + usage.stderr


def test_the_examples_requirements_come_from_their_imports() -> None:
    examples = Path(require_peer("aioquic_examples"))
    needed = {name.lower() for name in peers_module.example_requirements(examples)}
    # http3_server/client import wsproto, demo.py (the served app) starlette;
    # jinja2 comes from the sdist's requirements/examples.txt.
    assert {"wsproto", "starlette", "jinja2"} <= needed
    assert "uvloop" not in needed  # imported under try/except ImportError


# -- each peer against an independent one --------------------------------


@pytest.mark.parametrize("legacy_http", [False, True], ids=["h3", "hq-interop"])
def test_aioquic_example_client_downloads_from_example_server(
    example_server: int,
    pki: CertFiles,
    docroot: Path,
    tmp_path: Path,
    legacy_http: bool,
) -> None:
    client = require_peer("http3_client")
    args = [
        sys.executable,
        client,
        "--ca-certs",
        str(pki.ca),
        "--output-dir",
        str(tmp_path),
        f"https://127.0.0.1:{example_server}/file",
    ]
    if legacy_http:
        args.insert(2, "--legacy-http")
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "file").read_bytes() == (docroot / "file").read_bytes()


def test_openssl35_s_client_fetches_over_hq_interop_with_verified_certificate(
    example_server: int, pki: CertFiles, docroot: Path
) -> None:
    args = [
        require_peer("openssl35"),
        "s_client",
        "-quic",
        "-alpn",
        "hq-interop",
        "-connect",
        f"127.0.0.1:{example_server}",
        "-CAfile",
        str(pki.ca),
        "-verify_ip",
        "127.0.0.1",
        "-verify_return_error",
        "-quiet",
    ]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"GET /file\r\n")
        proc.stdin.flush()
        # s_client keeps running after the server's FIN: read the file, then stop it.
        received = read_exactly(proc, FILE_SIZE, timeout=30)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert received == (docroot / "file").read_bytes(), err.decode()[-2000:]


def test_openssl35_s_client_rejects_a_server_certificate_from_another_ca(
    example_server: int, other_pki: CertFiles
) -> None:
    args = [
        require_peer("openssl35"),
        "s_client",
        "-quic",
        "-alpn",
        "hq-interop",
        "-connect",
        f"127.0.0.1:{example_server}",
        "-CAfile",
        str(other_pki.ca),
        "-verify_return_error",
        "-quiet",
    ]
    result = subprocess.run(
        args, input=b"GET /file\r\n", capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"certificate verify failed" in result.stderr
    assert result.stdout == b""


def test_gtlsclient_downloads_from_gtlsserver_over_h3(
    pki: CertFiles, docroot: Path, tmp_path: Path
) -> None:
    port = free_udp_port()
    server_args = [
        require_peer("gtlsserver"),
        "-q",
        "-d",
        str(docroot),
        "127.0.0.1",
        str(port),
        str(pki.key),
        str(pki.cert),
    ]
    with peer_process(server_args) as (server, _):
        wait_udp_bound(port, proc=server)
        result = subprocess.run(
            [
                require_peer("gtlsclient"),
                "-q",
                "--exit-on-all-streams-close",
                f"--download={tmp_path}",
                "127.0.0.1",
                str(port),
                f"https://127.0.0.1:{port}/file",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    # gtlsclient exits 0 even when the transfer failed: judge by the bytes.
    downloaded = tmp_path / "file"
    assert downloaded.exists(), result.stderr[-2000:]
    assert downloaded.read_bytes() == (docroot / "file").read_bytes()


# -- what the README's test command installs -------------------------------


def test_the_installer_installs_the_system_tools_the_tests_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fresh machine (no tshark, no openssl, no keyring) `install` asks
    apt for them, once, before anything that needs them."""
    installed: set[str] = set()
    commands: list[list[str]] = []

    def fake_run(args, **kwargs):  # type: ignore[no-untyped-def]
        commands.append(list(args))
        if "install" in args:
            installed.update(a for a in args if a in peers_module.SYSTEM_PACKAGES)
        return subprocess.CompletedProcess(args, 0, "", "")

    def present(check: str) -> bool:
        return any(peers_module.SYSTEM_PACKAGES[name] == check for name in installed)

    monkeypatch.setattr(peers_module, "_run", fake_run)
    monkeypatch.setattr(peers_module, "_system_package_present", present)
    monkeypatch.setattr(peers_module, "_apt_lists_fresh", False)
    monkeypatch.setattr(peers_module.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(peers_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    peers_module.install(["system"])
    assert commands == [
        ["/usr/bin/sudo", "apt-get", "update", "-qq"],
        [
            "/usr/bin/sudo", "apt-get", "install", "-y", "-qq",
            "tshark", "openssl", "debian-archive-keyring",
        ],
    ]  # fmt: skip
    assert peers_module.COMPONENTS[0] == "system"  # before openssl35 needs the keyring


def test_paths_and_check_cover_the_system_tools() -> None:
    paths = peers_module.locate().as_dict()
    assert paths["tshark"] == require_peer("tshark")
    assert paths["openssl"] == require_peer("openssl")
    assert peers_module.check(["system"]) == {"system": None}


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    (command,) = block.strip().splitlines()
    return command


def test_ci_runs_exactly_the_readme_command_and_nothing_of_its_own() -> None:
    command = readme_test_command()
    assert command == (
        "pip install -e '.[test,fast]' && python -m interop.peers install "
        "&& python -m pytest -q"
    )
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] == command
    # Before it: only the shell's own setup and apt's non-interactive mode.
    assert lines[:-1] == [
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        "export DEBIAN_FRONTEND=noninteractive",
    ]
