"""Certificates for a testcase, laid out as the runner's ``/certs`` volume.

``cert.pem`` is the server's chain (leaf first, then intermediates),
``priv.key`` its key and ``ca.pem`` the root clients may trust.  The runner's
``amplificationlimit`` testcase asks for a chain of 9 certificates so that
the server's first flight far exceeds three times the client's Initial.
Longer chains use RSA-3072 keys (about 1.2 kB per certificate) so that the
chain clears the runner's 7500-byte check with room to spare.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NAMES = ("localhost", "127.0.0.1", "::1", "server", "server4", "server6")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_chain(directory: Path, length: int = 1) -> None:
    """Write ca.pem, cert.pem (``length`` certificates) and priv.key."""
    if length < 1:
        raise ValueError("a chain needs at least the leaf certificate")
    now = datetime.datetime.now(datetime.UTC)
    bits = 2048 if length == 1 else 3072
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))

    def build(
        subject: str,
        issuer: x509.Name,
        public_key: rsa.RSAPublicKey,
        signer: rsa.RSAPrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        )
        if not ca:
            alt: list[x509.GeneralName] = []
            for name in NAMES:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), False)
        return builder.sign(signer, hashes.SHA256())

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    root = build(
        "interop root CA",
        _name("interop root CA"),
        root_key.public_key(),
        root_key,
        True,
    )
    issuer_cert, issuer_key = root, root_key
    intermediates: list[x509.Certificate] = []
    for index in range(length - 1):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        cert = build(
            f"interop intermediate {index + 1}",
            issuer_cert.subject,
            key.public_key(),
            issuer_key,
            True,
        )
        intermediates.append(cert)
        issuer_cert, issuer_key = cert, key
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    leaf = build(
        "server", issuer_cert.subject, leaf_key.public_key(), issuer_key, False
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(root.public_bytes(pem))
    chain = [leaf, *reversed(intermediates)]
    (directory / "cert.pem").write_bytes(b"".join(c.public_bytes(pem) for c in chain))
    (directory / "priv.key").write_bytes(
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
