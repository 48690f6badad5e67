"""Secrets stay private and trust is not given away silently (issue 16,
items 6, 7 and 10): key logs only when asked for and mode 0600, private
keys and session files 0600, generated keys removed when ``serve`` exits,
certificate purpose checked, verification turned off said out loud."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import quicconn
from quicconn._core.purpose import purpose_problem
from quicconn.http import FileServer
from tests.support.certs import CertFiles, make_pki

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quicconn", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def served(pki: CertFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("secrets-www")
    (root / "hello.txt").write_bytes(b"hello\n")
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3", "hq-interop"]
    )
    server = FileServer(listener, root)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    yield listener.local_address()[1]
    stop.set()
    thread.join(5)
    server.close()
    listener.free()


# -- key logs (item 6) ------------------------------------------------------------


@pytest.mark.usefixtures("each_core")
def test_sslkeylogfile_alone_logs_nothing(
    pki: CertFiles, served: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    ctx = quicconn.Context(quicconn.CLIENT)
    assert ctx.keylog_filename is None
    with quicconn.connect("127.0.0.1", served, alpn=["h3"], cafile=str(pki.ca)) as conn:
        assert conn.is_init_finished()
    assert not keylog.exists()


@pytest.mark.usefixtures("each_core")
def test_an_asked_for_key_log_is_private(
    pki: CertFiles, served: int, tmp_path: Path
) -> None:
    keylog = tmp_path / "keys.log"
    with quicconn.connect(
        "127.0.0.1",
        served,
        alpn=["h3"],
        cafile=str(pki.ca),
        keylog_filename=str(keylog),
    ) as conn:
        assert conn.is_init_finished()
    assert mode(keylog) == 0o600
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    assert "CLIENT_TRAFFIC_SECRET_0" in labels


def test_the_command_logs_keys_only_with_a_flag(
    pki: CertFiles, served: int, tmp_path: Path
) -> None:
    keylog = tmp_path / "keys.log"
    url = f"https://localhost:{served}/hello.txt"
    env = {"SSLKEYLOGFILE": str(keylog)}
    plain = cli("get", url, "--ca", str(pki.ca), "-q", env=env)
    assert plain.returncode == 0, plain.stderr
    assert not keylog.exists()
    asked = cli("get", url, "--ca", str(pki.ca), "-q", "--keylog-from-env", env=env)
    assert asked.returncode == 0, asked.stderr
    assert mode(keylog) == 0o600 and keylog.read_text()
    assert "writing TLS secrets to" in asked.stderr
    unset = cli("get", url, "--ca", str(pki.ca), "--keylog-from-env")
    assert unset.returncode == 2 and "SSLKEYLOGFILE is not set" in unset.stderr


# -- private keys and sessions (item 6) --------------------------------------------


def test_generated_private_keys_are_private(tmp_path: Path) -> None:
    files = make_pki(tmp_path / "pki")
    assert mode(files.key) == 0o600


def test_a_stored_session_is_private(
    pki: CertFiles, served: int, tmp_path: Path
) -> None:
    session = tmp_path / "session.bin"
    url = f"https://localhost:{served}/hello.txt"
    result = cli("get", url, "--ca", str(pki.ca), "-q", "--resume", str(session))
    assert result.returncode == 0, result.stderr
    assert session.stat().st_size > 0 and mode(session) == 0o600


def test_serve_removes_its_generated_keys_when_it_exits(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_bytes(b"hi\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quicconn", "serve", str(www), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stderr is not None
    ca = None
    try:
        for line in proc.stderr:
            found = re.search(r"clients trust (\S+)", line)
            if found:
                ca = Path(found.group(1))
            if line.startswith("serving"):
                break
        assert ca is not None and ca.exists()
        key = ca.parent / "key.pem"
        assert mode(key) == 0o600
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert not ca.parent.exists()


def test_serve_keeps_a_pki_dir_with_a_private_key(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    pki_dir = tmp_path / "pki"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "quicconn", "serve", str(www),
            "--port", "0", "--pki-dir", str(pki_dir),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("serving"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert mode(pki_dir / "key.pem") == 0o600 and (pki_dir / "ca.pem").exists()


# -- certificate purpose (item 7) ---------------------------------------------------


def _leaf(
    directory: Path, extended: list[x509.ObjectIdentifier] | None, usage: bool = True
) -> CertFiles:
    """A CA and a leaf for localhost with the given extended key usage."""
    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("purpose CA"))
        .issuer_name(name("purpose CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    )
    if extended is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if not usage:  # a key usage that allows no TLS authentication
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    leaf = builder.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    files = CertFiles(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )
    files.ca.write_bytes(ca.public_bytes(pem))
    files.cert.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def _connect_to(files: CertFiles) -> None:
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(files.cert), str(files.key), alpn=["quicconn-test"]
    )
    port = listener.local_address()[1]

    def accept() -> None:
        # A refused handshake is never accepted: freeing the listener ends
        # the wait with SyscallError, which is expected here.
        with contextlib.suppress(quicconn.SyscallError):
            listener.accept_connection()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with quicconn.connect(
            "localhost", port, alpn=["quicconn-test"], cafile=str(files.ca)
        ):
            pass
    finally:
        listener.free()
        thread.join(timeout=10)


@pytest.mark.usefixtures("each_core")
def test_a_client_only_certificate_is_refused_as_a_server_certificate(
    tmp_path: Path,
) -> None:
    files = _leaf(tmp_path, [ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(quicconn.VerificationError):
        _connect_to(files)


@pytest.mark.usefixtures("each_core")
def test_a_server_certificate_with_server_auth_is_accepted(tmp_path: Path) -> None:
    _connect_to(_leaf(tmp_path, [ExtendedKeyUsageOID.SERVER_AUTH]))
    _connect_to(_leaf(tmp_path / "none", None))  # no extension: any purpose


@pytest.mark.parametrize(
    ("extended", "usage", "server", "client"),
    [
        (None, True, True, True),
        ([ExtendedKeyUsageOID.SERVER_AUTH], True, True, False),
        ([ExtendedKeyUsageOID.CLIENT_AUTH], True, False, True),
        ([ExtendedKeyUsageOID.CODE_SIGNING], True, False, False),
        ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True, False, False),
        (None, False, False, False),
    ],
    ids=["none", "server-auth", "client-auth", "code-signing", "any-eku", "ku"],
)
def test_purpose_rules_follow_openssl(
    tmp_path: Path,
    extended: list[x509.ObjectIdentifier] | None,
    usage: bool,
    server: bool,
    client: bool,
) -> None:
    files = _leaf(tmp_path, extended, usage)
    der = x509.load_pem_x509_certificate(files.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert (purpose_problem(der, "server") is None) == server
    assert (purpose_problem(der, "client") is None) == client
    if not server:
        problem = purpose_problem(der, "server")
        assert problem is not None and "unsupported certificate purpose" in problem


# -- verification off is said out loud (item 10) ------------------------------------


def test_turning_verification_off_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="quicconn"):
        quicconn.Context(quicconn.SERVER).verify_mode = quicconn.VERIFY_NONE
        assert not caplog.records  # a server not asking for client certificates
        client = quicconn.Context(quicconn.CLIENT)
        assert not caplog.records
        client.set_verify(quicconn.VERIFY_NONE)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "verification is off" in record.getMessage()


def test_connect_without_verification_logs_a_warning(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="quicconn"),
        quicconn.connect("127.0.0.1", served, alpn=["h3"], verify=False),
    ):
        pass
    assert any("verification is off" in r.getMessage() for r in caplog.records)


def test_get_insecure_prints_a_warning(served: int) -> None:
    result = cli("get", f"https://localhost:{served}/hello.txt", "--insecure", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    assert "warning: --insecure" in result.stderr
