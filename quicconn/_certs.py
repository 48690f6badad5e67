"""Throwaway certificates: a small CA and a leaf, made with ``cryptography``.

Used where quicconn must run without certificates of the user's own (the
``quicconn demo`` and ``quicconn serve`` commands) and by the test suite.
The CA signs a leaf for ``localhost``, ``127.0.0.1`` and ``::1`` by default;
clients trust the CA file, so verification stays on.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key(kind: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if kind not in ("ec", "rsa2048", "rsa4096"):
        raise ValueError(f"key_kind must be 'ec', 'rsa2048' or 'rsa4096', not {kind!r}")
    if kind == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_pki(
    directory: Path,
    *,
    names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    key_kind: str = "ec",
    prefix: str = "",
) -> CertFiles:
    """Write ``ca.pem``, ``cert.pem`` (leaf + CA chain) and ``key.pem``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"quicconn test CA {prefix}"))
        .issuer_name(_name(f"quicconn test CA {prefix}"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = _key(key_kind)
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                    x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    files = CertFiles(
        ca=directory / f"{prefix}ca.pem",
        cert=directory / f"{prefix}cert.pem",
        key=directory / f"{prefix}key.pem",
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.cert.write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    write_private(
        files.key,
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return files


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``, readable and writable by its owner only
    (0600, also when the file existed): for private keys and session files,
    which hold secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def system_ca_locations() -> tuple[str | None, str | None]:
    """The system OpenSSL's default CA file and directory, where they exist.

    What SSL_CTX_set_default_verify_paths loads; shared by the QUIC and DTLS
    contexts so both trust the same store.
    """
    paths = ssl.get_default_verify_paths()
    cafile = paths.cafile or paths.openssl_cafile
    capath = paths.capath or paths.openssl_capath
    return (
        cafile if cafile and os.path.isfile(cafile) else None,
        capath if capath and os.path.isdir(capath) else None,
    )


__all__ = [
    "CertFiles",
    "make_pki",
    "system_ca_locations",
    "write_private",
]
