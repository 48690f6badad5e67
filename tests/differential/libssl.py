"""A ctypes binding to the libssl of OpenSSL 3.5 (the private copy under .peers/).

Only what the differential scenarios call: the QUIC client and server
methods, connections, streams, listeners, SSL_poll, the event functions,
values, close info, sessions and the async bookkeeping calls.  Load it
only in a process started under the trixie loader with the tree's library
path (``tests/differential/process.py`` does that): the system's libssl is
OpenSSL 3.0, which has no QUIC.

Signatures follow OpenSSL 3.5's public headers (ssl.h, quic.h); the
macros (SSL_set_mode, SSL_set_tlsext_host_name, ...) are spelled out as
their SSL_ctrl calls.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    POINTER,
    Structure,
    Union,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

SSL_p = c_void_p
CTX_p = c_void_p


class timeval(Structure):
    _fields_ = [("tv_sec", c_long), ("tv_usec", c_long)]


class _PollValue(Union):
    _fields_ = [("fd", c_int), ("ssl", c_void_p), ("custom_ui", c_size_t)]


class BIO_POLL_DESCRIPTOR(Structure):
    _fields_ = [("type", c_uint32), ("value", _PollValue)]


class SSL_POLL_ITEM(Structure):
    _fields_ = [
        ("desc", BIO_POLL_DESCRIPTOR),
        ("events", c_uint64),
        ("revents", c_uint64),
    ]


class SSL_CONN_CLOSE_INFO(Structure):
    _fields_ = [
        ("error_code", c_uint64),
        ("frame_type", c_uint64),
        ("reason", c_char_p),
        ("reason_len", c_size_t),
        ("flags", c_uint32),
    ]


class SSL_SHUTDOWN_EX_ARGS(Structure):
    _fields_ = [("quic_error_code", c_uint64), ("quic_reason", c_char_p)]


class SSL_STREAM_RESET_ARGS(Structure):
    _fields_ = [("quic_error_code", c_uint64)]


BIO_POLL_DESCRIPTOR_TYPE_SOCK_FD = 1
BIO_POLL_DESCRIPTOR_TYPE_SSL = 2

SSL_CTRL_MODE = 33
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_SET_TLSEXT_HOSTNAME = 55
SSL_CTRL_CLEAR_MODE = 78
DTLS_CTRL_GET_TIMEOUT = 73
DTLS_CTRL_HANDLE_TIMEOUT = 74
SSL_SESS_CACHE_CLIENT = 0x1
TLSEXT_NAMETYPE_host_name = 0
SSL_FILETYPE_PEM = 1
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2

#: ``int cb(SSL *ssl, SSL_SESSION *sess)`` (SSL_CTX_sess_set_new_cb).
NEW_SESSION_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)
#: ``int cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
#: const unsigned char *in, unsigned int inlen, void *arg)``.
ALPN_SELECT_CB = ctypes.CFUNCTYPE(
    c_int,
    c_void_p,
    POINTER(ctypes.POINTER(ctypes.c_ubyte)),
    POINTER(ctypes.c_ubyte),
    POINTER(ctypes.c_ubyte),
    c_uint,
    c_void_p,
)
#: ``int cb(SSL *s, void *arg)`` (SSL_set_async_callback).
ASYNC_CB = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "OSSL_QUIC_client_method": (c_void_p, []),
    "OSSL_QUIC_client_thread_method": (c_void_p, []),
    "OSSL_QUIC_server_method": (c_void_p, []),
    "DTLS_client_method": (c_void_p, []),
    "OpenSSL_version": (c_char_p, [c_int]),
    "SSL_CTX_new": (CTX_p, [c_void_p]),
    "SSL_CTX_free": (None, [CTX_p]),
    "SSL_CTX_set_verify": (None, [CTX_p, c_int, c_void_p]),
    "SSL_CTX_load_verify_locations": (c_int, [CTX_p, c_char_p, c_char_p]),
    "SSL_CTX_set_alpn_protos": (c_int, [CTX_p, c_char_p, c_uint]),
    "SSL_CTX_set_alpn_select_cb": (None, [CTX_p, ALPN_SELECT_CB, c_void_p]),
    "SSL_CTX_use_certificate_chain_file": (c_int, [CTX_p, c_char_p]),
    "SSL_CTX_use_PrivateKey_file": (c_int, [CTX_p, c_char_p, c_int]),
    "SSL_CTX_ctrl": (c_long, [CTX_p, c_int, c_long, c_void_p]),
    "SSL_CTX_sess_set_new_cb": (None, [CTX_p, NEW_SESSION_CB]),
    "SSL_new": (SSL_p, [CTX_p]),
    "SSL_free": (None, [SSL_p]),
    "SSL_ctrl": (c_long, [SSL_p, c_int, c_long, c_void_p]),
    "SSL_set_fd": (c_int, [SSL_p, c_int]),
    "SSL_get_fd": (c_int, [SSL_p]),
    "SSL_set1_host": (c_int, [SSL_p, c_char_p]),
    "SSL_set_alpn_protos": (c_int, [SSL_p, c_char_p, c_uint]),
    "SSL_get0_alpn_selected": (
        None,
        [SSL_p, POINTER(POINTER(ctypes.c_ubyte)), POINTER(c_uint)],
    ),
    "SSL_set_blocking_mode": (c_int, [SSL_p, c_int]),
    "SSL_get_blocking_mode": (c_int, [SSL_p]),
    "SSL_connect": (c_int, [SSL_p]),
    "SSL_accept": (c_int, [SSL_p]),
    "SSL_do_handshake": (c_int, [SSL_p]),
    "SSL_is_init_finished": (c_int, [SSL_p]),
    "SSL_get_error": (c_int, [SSL_p, c_int]),
    "SSL_read_ex": (c_int, [SSL_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "SSL_peek_ex": (c_int, [SSL_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "SSL_write_ex": (c_int, [SSL_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "SSL_write_ex2": (
        c_int,
        [SSL_p, c_void_p, c_size_t, c_uint64, POINTER(c_size_t)],
    ),
    "SSL_pending": (c_int, [SSL_p]),
    "SSL_has_pending": (c_int, [SSL_p]),
    "SSL_stream_conclude": (c_int, [SSL_p, c_uint64]),
    "SSL_stream_reset": (c_int, [SSL_p, POINTER(SSL_STREAM_RESET_ARGS), c_size_t]),
    "SSL_get_stream_read_state": (c_int, [SSL_p]),
    "SSL_get_stream_write_state": (c_int, [SSL_p]),
    "SSL_get_stream_read_error_code": (c_int, [SSL_p, POINTER(c_uint64)]),
    "SSL_get_stream_write_error_code": (c_int, [SSL_p, POINTER(c_uint64)]),
    "SSL_get_stream_id": (c_uint64, [SSL_p]),
    "SSL_get_stream_type": (c_int, [SSL_p]),
    "SSL_is_stream_local": (c_int, [SSL_p]),
    "SSL_get0_connection": (SSL_p, [SSL_p]),
    "SSL_is_connection": (c_int, [SSL_p]),
    "SSL_is_listener": (c_int, [SSL_p]),
    "SSL_get0_listener": (SSL_p, [SSL_p]),
    "SSL_is_quic": (c_int, [SSL_p]),
    "SSL_is_server": (c_int, [SSL_p]),
    "SSL_session_reused": (c_int, [SSL_p]),
    "SSL_handle_events": (c_int, [SSL_p]),
    "SSL_get_event_timeout": (c_int, [SSL_p, POINTER(timeval), POINTER(c_int)]),
    "SSL_net_read_desired": (c_int, [SSL_p]),
    "SSL_net_write_desired": (c_int, [SSL_p]),
    "SSL_get_rpoll_descriptor": (c_int, [SSL_p, POINTER(BIO_POLL_DESCRIPTOR)]),
    "SSL_get_wpoll_descriptor": (c_int, [SSL_p, POINTER(BIO_POLL_DESCRIPTOR)]),
    "SSL_shutdown_ex": (
        c_int,
        [SSL_p, c_uint64, POINTER(SSL_SHUTDOWN_EX_ARGS), c_size_t],
    ),
    "SSL_get_conn_close_info": (
        c_int,
        [SSL_p, POINTER(SSL_CONN_CLOSE_INFO), c_size_t],
    ),
    "SSL_key_update": (c_int, [SSL_p, c_int]),
    "SSL_get_key_update_type": (c_int, [SSL_p]),
    "SSL_get_value_uint": (c_int, [SSL_p, c_uint32, c_uint32, POINTER(c_uint64)]),
    "SSL_set_value_uint": (c_int, [SSL_p, c_uint32, c_uint32, c_uint64]),
    "SSL_new_stream": (SSL_p, [SSL_p, c_uint64]),
    "SSL_accept_stream": (SSL_p, [SSL_p, c_uint64]),
    "SSL_get_accept_stream_queue_len": (c_size_t, [SSL_p]),
    "SSL_set_default_stream_mode": (c_int, [SSL_p, c_uint32]),
    "SSL_set_incoming_stream_policy": (c_int, [SSL_p, c_int, c_uint64]),
    "SSL_poll": (
        c_int,
        [
            POINTER(SSL_POLL_ITEM),
            c_size_t,
            c_size_t,
            POINTER(timeval),
            c_uint64,
            POINTER(c_size_t),
        ],
    ),
    "SSL_get_verify_result": (c_long, [SSL_p]),
    "SSL_get_current_cipher": (c_void_p, [SSL_p]),
    "SSL_CIPHER_get_name": (c_char_p, [c_void_p]),
    "SSL_get1_session": (c_void_p, [SSL_p]),
    "SSL_set_session": (c_int, [SSL_p, c_void_p]),
    "SSL_SESSION_free": (None, [c_void_p]),
    "SSL_SESSION_is_resumable": (c_int, [c_void_p]),
    "SSL_inject_net_dgram": (
        c_int,
        [SSL_p, c_void_p, c_size_t, c_void_p, c_void_p],
    ),
    "SSL_waiting_for_async": (c_int, [SSL_p]),
    "SSL_get_all_async_fds": (c_int, [SSL_p, POINTER(c_int), POINTER(c_size_t)]),
    "SSL_get_changed_async_fds": (
        c_int,
        [
            SSL_p,
            POINTER(c_int),
            POINTER(c_size_t),
            POINTER(c_int),
            POINTER(c_size_t),
        ],
    ),
    "SSL_get_async_status": (c_int, [SSL_p, POINTER(c_int)]),
    "SSL_set_async_callback": (c_int, [SSL_p, ASYNC_CB]),
    "SSL_set_async_callback_arg": (c_int, [SSL_p, c_void_p]),
    "SSL_new_listener": (SSL_p, [CTX_p, c_uint64]),
    "SSL_new_from_listener": (SSL_p, [SSL_p, c_uint64]),
    "SSL_listen": (c_int, [SSL_p]),
    "SSL_accept_connection": (SSL_p, [SSL_p, c_uint64]),
    "SSL_get_accept_connection_queue_len": (c_size_t, [SSL_p]),
    "BIO_new_dgram": (c_void_p, [c_int, c_int]),
    "SSL_set_bio": (None, [SSL_p, c_void_p, c_void_p]),
    "BIO_ADDR_new": (c_void_p, []),
    "BIO_ADDR_free": (None, [c_void_p]),
    "BIO_ADDR_rawmake": (c_int, [c_void_p, c_int, c_void_p, c_size_t, ctypes.c_ushort]),
    "SSL_set1_initial_peer_addr": (c_int, [SSL_p, c_void_p]),
    "ERR_clear_error": (None, []),
    "ERR_get_error": (ctypes.c_ulong, []),
    "ERR_peek_error": (ctypes.c_ulong, []),
    "ERR_error_string_n": (None, [ctypes.c_ulong, c_char_p, c_size_t]),
}


class LibSSL:
    """libssl.so.3 with the signatures above; ``lib.SSL_read_ex(...)`` etc."""

    def __init__(self, name: str = "libssl.so.3") -> None:
        self._dll = ctypes.CDLL(name)
        for fname, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(self._dll, fname)
            func.restype = restype
            func.argtypes = argtypes
            setattr(self, fname, func)
        # libssl pulls in its libcrypto: the ERR_* functions resolve through it.

    def __getattr__(self, name: str) -> Any:  # only for names set above
        raise AttributeError(name)

    def version(self) -> str:
        raw: bytes = self.OpenSSL_version(0)
        return raw.decode()

    def errors(self) -> list[str]:
        """Drain the thread's error queue, as strings (for diagnostics)."""
        out = []
        while True:
            code = self.ERR_get_error()
            if not code:
                return out
            buf = ctypes.create_string_buffer(256)
            self.ERR_error_string_n(code, buf, 256)
            out.append(buf.value.decode())


def alpn_wire(protocols: list[str]) -> bytes:
    """ALPN protocol names in TLS wire format (length-prefixed)."""
    return b"".join(bytes([len(p)]) + p.encode() for p in protocols)


__all__ = [
    "ALPN_SELECT_CB",
    "ASYNC_CB",
    "BIO_POLL_DESCRIPTOR",
    "BIO_POLL_DESCRIPTOR_TYPE_SOCK_FD",
    "BIO_POLL_DESCRIPTOR_TYPE_SSL",
    "NEW_SESSION_CB",
    "SSL_CONN_CLOSE_INFO",
    "SSL_POLL_ITEM",
    "SSL_SHUTDOWN_EX_ARGS",
    "SSL_STREAM_RESET_ARGS",
    "LibSSL",
    "alpn_wire",
    "timeval",
]
