"""MODE_ASYNC: a private key whose signatures an offload engine makes.

qh3's TLS stack (Python) calls ``certificate_private_key.sign(data,
*params)`` for CertificateVerify (server, and client under client
authentication), so a greenlet job can pause there as on the aioquic core.
It picks signature algorithms with ``isinstance`` checks against its own key
classes, which are Rust classes that cannot be subclassed or registered as
virtual subclasses.  :class:`OffloadedKey` instead answers ``__class__``
with the wrapped key's class: ``isinstance`` consults ``__class__`` when
the real type does not match (the mechanism ``unittest.mock`` uses for
objects that must pass for another class), so the checks see the real kind
of key, and everything but ``sign`` is the wrapped key's.

The signature itself is the engine's (quicconn/_asyncjob/engine.py): it
gets the ``cryptography`` key and a TLS 1.3 SignatureScheme code, as on
the aioquic core.
"""

from __future__ import annotations

from typing import Any

from qh3._hazmat import EcPrivateKey, Ed25519PrivateKey, RsaPrivateKey
from qh3.tls import AlertInternalError

from ..._asyncjob.engine import (
    ECDSA_SECP256R1_SHA256,
    ECDSA_SECP384R1_SHA384,
    ECDSA_SECP521R1_SHA512,
    ED25519,
    RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384,
    RSA_PKCS1_SHA512,
    RSA_PSS_RSAE_SHA256,
    RSA_PSS_RSAE_SHA384,
    RSA_PSS_RSAE_SHA512,
)
from ..._asyncjob.job import AsyncSignError, offload_sign
from .config import qh3_private_key

_PSS = {256: RSA_PSS_RSAE_SHA256, 384: RSA_PSS_RSAE_SHA384, 512: RSA_PSS_RSAE_SHA512}
_PKCS1 = {256: RSA_PKCS1_SHA256, 384: RSA_PKCS1_SHA384, 512: RSA_PKCS1_SHA512}
_ECDSA = {
    256: ECDSA_SECP256R1_SHA256,
    384: ECDSA_SECP384R1_SHA384,
    521: ECDSA_SECP521R1_SHA512,
}


class OffloadedKey:
    """Wraps the certificate key so that ``sign()`` can pause an async job.

    Inside an async job the signature goes through the job's engine (see
    quicconn/_asyncjob/job.py); outside one it is made right here.
    """

    def __init__(self, key: Any) -> None:
        #: The ``cryptography`` key (what engines sign with).
        self.wrapped_key = key
        #: The same key as qh3 holds it (what TLS inspects).
        self.qh3_key = qh3_private_key(key)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self.qh3_key)

    def scheme(self, params: tuple[Any, ...]) -> int:
        """The SignatureScheme qh3 means by ``sign(data, *params)``."""
        key = self.qh3_key
        if isinstance(key, RsaPrivateKey) and len(params) == 2:
            is_pss, hash_size = params
            found = (_PSS if is_pss else _PKCS1).get(hash_size)
        elif isinstance(key, EcPrivateKey) and not params:
            found = _ECDSA.get(key.curve_type)
        elif isinstance(key, Ed25519PrivateKey) and not params:
            found = ED25519
        else:
            found = None
        if found is None:
            raise AlertInternalError(
                f"no TLS signature scheme for {type(key).__name__} {params!r}"
            )
        return found

    def sign(self, data: bytes, *params: Any) -> bytes:
        try:
            return offload_sign(self.wrapped_key, data, self.scheme(params))
        except AsyncSignError as exc:
            # The peer learns only that the handshake failed (internal_error
            # alert); the engine's reason is kept for the local error.
            raise AlertInternalError("private key operation failed") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.qh3_key, name)


def offloadable_key(key: Any) -> Any:
    """``key`` wrapped for MODE_ASYNC (unchanged if None or already wrapped)."""
    if key is None or type(key) is OffloadedKey:
        return key
    return OffloadedKey(key)


def plain_key(key: Any) -> Any:
    """The ``cryptography`` key under an :func:`offloadable_key` wrapper."""
    return key.wrapped_key if type(key) is OffloadedKey else key


__all__ = ["OffloadedKey", "offloadable_key", "plain_key"]
