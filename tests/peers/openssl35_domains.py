"""OpenSSL 3.5's QUIC domain flags, read from its libssl through ctypes.

Run under Debian trixie's loader with OpenSSL 3.5's library path (see
shared PEERS.md and tests/test_domains.py), it prints one JSON object: the
default domain flags of each QUIC method, what SSL_CTX_set_domain_flags
keeps for each input (null when it fails), what SSL_new_domain gives for
each input on a context with the default flags, and what the domain
functions say about the objects made.
"""

from __future__ import annotations

import ctypes
import json

ssl = ctypes.CDLL("libssl.so.3")
P = ctypes.c_void_p
U64 = ctypes.c_uint64
for name in (
    "OSSL_QUIC_client_method",
    "OSSL_QUIC_client_thread_method",
    "OSSL_QUIC_server_method",
):
    getattr(ssl, name).restype = P
ssl.SSL_CTX_new.restype = P
ssl.SSL_CTX_new.argtypes = [P]
ssl.SSL_CTX_set_domain_flags.argtypes = [P, U64]
ssl.SSL_CTX_get_domain_flags.argtypes = [P, ctypes.POINTER(U64)]
ssl.SSL_get_domain_flags.argtypes = [P, ctypes.POINTER(U64)]
ssl.SSL_new_domain.restype = P
ssl.SSL_new_domain.argtypes = [P, U64]
ssl.SSL_new_listener_from.restype = P
ssl.SSL_new_listener_from.argtypes = [P, U64]
ssl.SSL_new_listener.restype = P
ssl.SSL_new_listener.argtypes = [P, U64]
ssl.SSL_new.restype = P
ssl.SSL_new.argtypes = [P]
ssl.SSL_get0_domain.restype = P
ssl.SSL_get0_domain.argtypes = [P]
ssl.SSL_is_domain.argtypes = [P]


def ctx_flags(ctx: int) -> int:
    value = U64()
    ssl.SSL_CTX_get_domain_flags(ctx, ctypes.byref(value))
    return value.value


def obj_flags(obj: int) -> int:
    value = U64()
    ssl.SSL_get_domain_flags(obj, ctypes.byref(value))
    return value.value


INPUTS = [0, 1, 2, 4, 8, 16, 3, 5, 6, 9, 17, 20, 24, 32]
out: dict[str, object] = {"defaults": {}, "set": {}, "new_domain": {}}
for name in ("client", "client_thread", "server"):
    ctx = ssl.SSL_CTX_new(getattr(ssl, f"OSSL_QUIC_{name}_method")())
    out["defaults"][name] = ctx_flags(ctx)  # type: ignore[index]
ctx = ssl.SSL_CTX_new(ssl.OSSL_QUIC_server_method())
for flags in INPUTS:
    ok = ssl.SSL_CTX_set_domain_flags(ctx, flags)
    out["set"][str(flags)] = ctx_flags(ctx) if ok else None  # type: ignore[index]
ctx = ssl.SSL_CTX_new(ssl.OSSL_QUIC_server_method())
for flags in INPUTS:
    domain = ssl.SSL_new_domain(ctx, flags)
    out["new_domain"][str(flags)] = obj_flags(domain) if domain else None  # type: ignore[index]
domain = ssl.SSL_new_domain(ctx, 0)
listener = ssl.SSL_new_listener_from(domain, 0)
plain_listener = ssl.SSL_new_listener(ctx, 0)
out["objects"] = {
    "domain_is_domain": ssl.SSL_is_domain(domain),
    "domain_get0_domain_is_itself": ssl.SSL_get0_domain(domain) == domain,
    "listener_from_domain_is_domain": ssl.SSL_is_domain(listener),
    "listener_from_domain_get0_domain": ssl.SSL_get0_domain(listener) == domain,
    "plain_listener_get0_domain_is_null": ssl.SSL_get0_domain(plain_listener) is None,
    "listener_from_a_listener": bool(ssl.SSL_new_listener_from(listener, 0)),
}
print(json.dumps(out))
