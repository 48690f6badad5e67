"""Certificate purpose: may this leaf authenticate a TLS server (client)?

Neutral (``cryptography`` only); both cores call it where the peer's
certificate is verified.  The rules are OpenSSL's purpose checks for an SSL
server and an SSL client (``X509_PURPOSE_SSL_SERVER`` / ``_CLIENT``, which
``SSL_CTX_set_verify`` applies by default): a certificate that states an
extended key usage must include serverAuth (or one of the old Server Gated
Crypto purposes) for a server, clientAuth for a client; one that states a
key usage must allow what TLS does with the key.  A certificate without
those extensions may serve any purpose.  A failure is reported as OpenSSL
words ``X509_V_ERR_INVALID_PURPOSE``: "unsupported certificate purpose".
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

#: What OpenSSL's X509_verify_cert_error_string says for X509_V_ERR_INVALID_PURPOSE.
INVALID_PURPOSE = "unsupported certificate purpose"

#: Netscape's and Microsoft's Server Gated Crypto, which OpenSSL still
#: accepts for a server.
_SGC = (
    ObjectIdentifier("2.16.840.1.113730.4.1"),
    ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
)
_EKU = {
    "server": (ExtendedKeyUsageOID.SERVER_AUTH, *_SGC),
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
}
_EKU_NAME = {"server": "serverAuth", "client": "clientAuth"}
_OID_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


def _key_usage_allows(usage: x509.KeyUsage, purpose: str) -> bool:
    if usage.digital_signature or usage.key_agreement:
        return True
    return purpose == "server" and usage.key_encipherment


def purpose_problem(der: bytes, purpose: str) -> str | None:
    """Why the DER certificate may not authenticate a TLS ``purpose``
    (``"server"`` or ``"client"``) endpoint; None if it may."""
    if purpose not in _EKU:
        raise ValueError(f"purpose is 'server' or 'client', not {purpose!r}")
    try:
        cert = x509.load_der_x509_certificate(der)
        extensions = cert.extensions
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    except ValueError as exc:  # unparsable extensions
        return f"{INVALID_PURPOSE}: {exc}"
    if eku is not None and not any(oid in eku for oid in _EKU[purpose]):
        names = ", ".join(_OID_NAMES.get(o, o.dotted_string) for o in eku) or "none"
        return (
            f"{INVALID_PURPOSE}: the certificate's extended key usage ({names}) "
            f"does not include {_EKU_NAME[purpose]}"
        )
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not _key_usage_allows(usage, purpose):
        return (
            f"{INVALID_PURPOSE}: the certificate's key usage allows no TLS "
            f"{purpose} authentication"
        )
    return None


__all__ = ["INVALID_PURPOSE", "purpose_problem"]
