"""MODE_ASYNC: a private key whose signatures an offload engine makes.

aioquic's TLS stack calls ``certificate_private_key.sign(data, *params)``
for CertificateVerify (server, and client under client authentication) and
picks signature algorithms with ``isinstance`` checks.  The wrappers here
are registered as virtual subclasses of the matching ``cryptography`` key
type so those checks see the real kind of key; everything but ``sign`` is
the wrapped key's.
"""

from __future__ import annotations

from typing import Any

from aioquic.tls import AlertInternalError
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..._asyncjob.engine import scheme_for
from ..._asyncjob.job import AsyncSignError, offload_sign


class _OffloadedKey:
    """Wraps the certificate key so that ``sign()`` can pause an async job.

    Inside an async job the signature goes through the job's engine (see
    quicconn/_asyncjob/job.py); outside one it is made right here.
    """

    def __init__(self, key: Any) -> None:
        self.wrapped_key = key

    def sign(self, data: bytes, *params: Any) -> bytes:
        key = self.wrapped_key
        try:
            return offload_sign(key, data, scheme_for(key, params))
        except AsyncSignError as exc:
            # The peer learns only that the handshake failed (internal_error
            # alert); the engine's reason is kept for the local error.
            raise AlertInternalError("private key operation failed") from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped_key, name)


class _OffloadedRSAKey(_OffloadedKey):
    pass


class _OffloadedECKey(_OffloadedKey):
    pass


class _OffloadedEd25519Key(_OffloadedKey):
    pass


class _OffloadedEd448Key(_OffloadedKey):
    pass


rsa.RSAPrivateKey.register(_OffloadedRSAKey)
ec.EllipticCurvePrivateKey.register(_OffloadedECKey)
ed25519.Ed25519PrivateKey.register(_OffloadedEd25519Key)
ed448.Ed448PrivateKey.register(_OffloadedEd448Key)

_OFFLOADED_KINDS: tuple[tuple[type, type[_OffloadedKey]], ...] = (
    (rsa.RSAPrivateKey, _OffloadedRSAKey),
    (ec.EllipticCurvePrivateKey, _OffloadedECKey),
    (ed25519.Ed25519PrivateKey, _OffloadedEd25519Key),
    (ed448.Ed448PrivateKey, _OffloadedEd448Key),
)


def offloadable_key(key: Any) -> Any:
    """``key`` wrapped for MODE_ASYNC (unchanged if None or already wrapped)."""
    if key is None or isinstance(key, _OffloadedKey):
        return key
    for kind, wrapper in _OFFLOADED_KINDS:
        if isinstance(key, kind):
            return wrapper(key)
    return key  # a kind TLS 1.3 cannot use anyway: signed synchronously


def plain_key(key: Any) -> Any:
    """The key under an :func:`offloadable_key` wrapper."""
    return key.wrapped_key if isinstance(key, _OffloadedKey) else key


__all__ = ["offloadable_key", "plain_key"]
