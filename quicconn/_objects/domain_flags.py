"""QUIC domain flags: the concurrency model, checked and completed as
OpenSSL 3.5 does (``SSL_CTX_set_domain_flags``, ``SSL_new_domain``).

Measured against OpenSSL 3.5's libssl: the model bits are SINGLE_THREAD,
MULTI_THREAD and THREAD_ASSISTED; THREAD_ASSISTED implies MULTI_THREAD;
flags naming no model get MULTI_THREAD added (the Contentive Concurrency
Model); SINGLE_THREAD with either of the others, or an unknown bit, is an
error.  ``SSL_new_domain(ctx, flags)`` uses ``flags`` when they name a
model, and otherwise the context's flags plus ``flags``.
"""

from __future__ import annotations

from .._constants import (
    DOMAIN_FLAG_BLOCKING,
    DOMAIN_FLAG_LEGACY_BLOCKING,
    DOMAIN_FLAG_MULTI_THREAD,
    DOMAIN_FLAG_SINGLE_THREAD,
    DOMAIN_FLAG_THREAD_ASSISTED,
)

MODEL_FLAGS = (
    DOMAIN_FLAG_SINGLE_THREAD | DOMAIN_FLAG_MULTI_THREAD | DOMAIN_FLAG_THREAD_ASSISTED
)
ALL_FLAGS = MODEL_FLAGS | DOMAIN_FLAG_BLOCKING | DOMAIN_FLAG_LEGACY_BLOCKING
#: OpenSSL's default for OSSL_QUIC_client_method / _server_method: the
#: Contentive Concurrency Model with legacy blocking.
DEFAULT_FLAGS = DOMAIN_FLAG_MULTI_THREAD | DOMAIN_FLAG_LEGACY_BLOCKING
#: OpenSSL's default for OSSL_QUIC_client_thread_method.
THREAD_METHOD_FLAGS = (
    DOMAIN_FLAG_THREAD_ASSISTED | DOMAIN_FLAG_MULTI_THREAD | DOMAIN_FLAG_BLOCKING
)


def adjust(flags: int) -> int:
    """Check ``flags`` and add what they imply; ValueError if they conflict."""
    if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0:
        raise TypeError(f"domain flags are an int mask of DOMAIN_FLAG_*, not {flags!r}")
    if flags & ~ALL_FLAGS:
        raise ValueError(f"unknown domain flags 0x{flags & ~ALL_FLAGS:x}")
    if flags & DOMAIN_FLAG_SINGLE_THREAD and flags & (
        DOMAIN_FLAG_MULTI_THREAD | DOMAIN_FLAG_THREAD_ASSISTED
    ):
        raise ValueError(
            "DOMAIN_FLAG_SINGLE_THREAD excludes DOMAIN_FLAG_MULTI_THREAD and "
            "DOMAIN_FLAG_THREAD_ASSISTED: choose one concurrency model"
        )
    if flags & DOMAIN_FLAG_THREAD_ASSISTED or not flags & MODEL_FLAGS:
        flags |= DOMAIN_FLAG_MULTI_THREAD
    return flags


def for_new_domain(context_flags: int, flags: int) -> int:
    """The flags of ``SSL_new_domain(ctx, flags)``: ``flags`` if they name a
    concurrency model, else the context's plus ``flags``."""
    if isinstance(flags, int) and not flags & MODEL_FLAGS:
        flags |= context_flags
    return adjust(flags)


def thread_assisted(flags: int) -> bool:
    return bool(flags & DOMAIN_FLAG_THREAD_ASSISTED)


def blocking_by_default(flags: int) -> bool:
    """Whether objects start in blocking mode (openssl-quic-concurrency(7):
    with BLOCKING or LEGACY_BLOCKING)."""
    return bool(flags & (DOMAIN_FLAG_BLOCKING | DOMAIN_FLAG_LEGACY_BLOCKING))


__all__ = [
    "ALL_FLAGS",
    "DEFAULT_FLAGS",
    "MODEL_FLAGS",
    "THREAD_METHOD_FLAGS",
    "adjust",
    "blocking_by_default",
    "for_new_domain",
    "thread_assisted",
]
