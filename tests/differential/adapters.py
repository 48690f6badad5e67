"""The two clients of a differential scenario: OpenSSL 3.5's libssl, and quicconn.

A scenario calls the same methods on either adapter; each method makes
the call, normalises what it observed into OpenSSL's terms (return value
and ``SSL_get_error`` code, or the value a getter reports) and appends it
to the trace, followed by a snapshot of the connection's event state
(``SSL_get_event_timeout`` as infinite / zero / finite, and
``SSL_net_read_desired`` / ``SSL_net_write_desired``).

The quicconn adapter is also where the Python forms are mapped back to
OpenSSL's: a method returning normally is OpenSSL's success, an exception
is a failure whose code is ``exc.code`` (and must equal ``get_error()``),
``ValueError``/``TypeError`` for misuse is a failure whose code is
``get_error()``, and the documented Python conventions (``shutdown()`` ->
bool, error-code getters -> ``int | None``, ``get_event_timeout()`` ->
``float | None``) are turned back into OpenSSL's values as
docs/api-mapping.md defines them.
"""

from __future__ import annotations

import ctypes
import socket
from ctypes import byref, c_int, c_size_t, c_uint, c_uint64
from typing import Any

import quicconn

from .libssl import (
    ALPN_SELECT_CB,
    BIO_POLL_DESCRIPTOR,
    BIO_POLL_DESCRIPTOR_TYPE_SSL,
    DTLS_CTRL_GET_TIMEOUT,
    DTLS_CTRL_HANDLE_TIMEOUT,
    NEW_SESSION_CB,
    SSL_CONN_CLOSE_INFO,
    SSL_CTRL_CLEAR_MODE,
    SSL_CTRL_MODE,
    SSL_CTRL_SET_SESS_CACHE_MODE,
    SSL_CTRL_SET_TLSEXT_HOSTNAME,
    SSL_FILETYPE_PEM,
    SSL_POLL_ITEM,
    SSL_SESS_CACHE_CLIENT,
    SSL_SHUTDOWN_EX_ARGS,
    SSL_STREAM_RESET_ARGS,
    SSL_TLSEXT_ERR_ALERT_FATAL,
    SSL_TLSEXT_ERR_OK,
    LibSSL,
    alpn_wire,
    timeval,
)

Obs = list[Any]

#: Calls whose failing return value (0 or -1) is compared too.
HANDSHAKES = ("SSL_connect", "SSL_do_handshake", "SSL_accept")


def _timeout_kind(seconds: float | None) -> str:
    if seconds is None:
        return "inf"
    return "0" if seconds == 0 else "finite"


class Adapter:
    """What both clients share: the trace, handle names, the socket."""

    name = "?"

    def __init__(self) -> None:
        self.trace: list[Obs] = []
        self.conn: Any = None
        self._names: dict[int, str] = {}
        self._objects: dict[str, Any] = {}
        self.sock: socket.socket | None = None
        self.sessions_seen = 0
        self.snapshots = True
        self.dtls: Any = None

    # -- bookkeeping --------------------------------------------------------

    def _name(self, obj: Any, prefix: str) -> str:
        key = self._key(obj)
        if key not in self._names:
            count = sum(1 for n in self._names.values() if n[0] == prefix[0])
            name = prefix if prefix in ("C", "L") else f"{prefix}{count}"
            self._names[key] = name
            self._objects[name] = obj
        return self._names[key]

    def _key(self, obj: Any) -> int:
        return id(obj)

    def record(self, label: str, obs: Obs, *, snapshot: bool = True) -> Obs:
        step: list[Any] = [label, obs]
        if snapshot and self.snapshots and self.conn is not None:
            timeout, read, write = self.event_state()
            # Exact deadlines differ by design (ACK delays, PTO estimates):
            # between calls only "a timer is armed" is compared.
            step.append(["inf" if timeout == "inf" else "armed", read, write])
        self.trace.append(step)
        return obs

    def note(self, label: str, value: Any) -> None:
        """Record a fact the scenario computed itself (no call made)."""
        self.trace.append([label, ["value", value]])

    def connect_socket(self, address: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(address)
        sock.setblocking(False)
        self.sock = sock
        return sock

    def unconnected_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self.sock = sock
        return sock

    def bind_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def event_state(self) -> list[Any]:
        raise NotImplementedError


# ===========================================================================
# OpenSSL 3.5
# ===========================================================================


class OpenSSLClient(Adapter):
    """libssl 3.5 through ctypes."""

    name = "openssl"

    def __init__(self, lib: LibSSL) -> None:
        super().__init__()
        self.lib = lib
        self.ctx: Any = None
        self._callbacks: list[Any] = []

    def _key(self, obj: Any) -> int:
        return int(obj)

    def _err(self, ssl: Any, ret: int) -> Obs:
        err = self.lib.SSL_get_error(ssl, ret)
        self.lib.ERR_clear_error()
        return ["err", err]

    def obj(self, name: str) -> Any:
        return self._objects[name]

    # -- setup --------------------------------------------------------------

    def new_ctx(
        self,
        *,
        cafile: str | None,
        alpn: list[str],
        server: bool = False,
        certfile: str | None = None,
        keyfile: str | None = None,
        thread: bool = False,
    ) -> None:
        lib = self.lib
        if server:
            method = lib.OSSL_QUIC_server_method()
        elif thread:
            method = lib.OSSL_QUIC_client_thread_method()
        else:
            method = lib.OSSL_QUIC_client_method()
        ctx = lib.SSL_CTX_new(method)
        assert ctx, lib.errors()
        self.ctx = ctx
        if server:
            assert certfile and keyfile
            assert lib.SSL_CTX_use_certificate_chain_file(ctx, certfile.encode()) == 1
            assert (
                lib.SSL_CTX_use_PrivateKey_file(ctx, keyfile.encode(), SSL_FILETYPE_PEM)
                == 1
            )
            wanted = [p.encode() for p in alpn]

            def select(
                ssl: Any, out: Any, outlen: Any, inp: Any, inlen: int, arg: Any
            ) -> int:
                offered = ctypes.string_at(inp, inlen)
                i = 0
                while i < len(offered):
                    n = offered[i]
                    name = offered[i + 1 : i + 1 + n]
                    if name in wanted:
                        out[0] = ctypes.cast(
                            ctypes.c_void_p(
                                ctypes.cast(inp, ctypes.c_void_p).value + i + 1  # type: ignore[operator]
                            ),
                            ctypes.POINTER(ctypes.c_ubyte),
                        )
                        outlen[0] = n
                        return SSL_TLSEXT_ERR_OK
                    i += 1 + n
                return SSL_TLSEXT_ERR_ALERT_FATAL

            cb = ALPN_SELECT_CB(select)
            self._callbacks.append(cb)
            lib.SSL_CTX_set_alpn_select_cb(ctx, cb, None)
            return
        if cafile is not None:
            lib.SSL_CTX_set_verify(ctx, 1, None)
            assert lib.SSL_CTX_load_verify_locations(ctx, cafile.encode(), None) == 1
        else:
            lib.SSL_CTX_set_verify(ctx, 0, None)
        wire = alpn_wire(alpn)
        assert lib.SSL_CTX_set_alpn_protos(ctx, wire, len(wire)) == 0

    def new_conn(
        self, address: tuple[str, int], host: str | None, *, connected: bool = True
    ) -> None:
        lib = self.lib
        ssl = lib.SSL_new(self.ctx)
        assert ssl, lib.errors()
        self.conn = ssl
        self._name(ssl, "C")
        sock = self.connect_socket(address) if connected else self.unconnected_socket()
        assert lib.SSL_set_fd(ssl, sock.fileno()) == 1
        if host is not None:
            lib.SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, host.encode())
            assert lib.SSL_set1_host(ssl, host.encode()) == 1

    def set1_initial_peer_addr(self, address: tuple[str, int]) -> Obs:
        import ipaddress

        lib = self.lib
        addr = lib.BIO_ADDR_new()
        raw = ipaddress.IPv4Address(address[0]).packed
        assert lib.BIO_ADDR_rawmake(
            addr, socket.AF_INET, raw, 4, socket.htons(address[1])
        )
        ret = lib.SSL_set1_initial_peer_addr(self.conn, addr)
        lib.BIO_ADDR_free(addr)
        return self._int("SSL_set1_initial_peer_addr", ret, self.conn)

    def drop_conn(self) -> None:
        """Free the connection (not the context): a scenario's second one."""
        for name in [n for n in self._objects if n[0] == "S" or n == "C"]:
            obj = self._objects.pop(name)
            self._names.pop(int(obj), None)
            self.lib.SSL_free(obj)
        self.conn = None
        self.close()

    def set_new_session_cb(self) -> None:
        lib = self.lib

        def on_new(ssl: Any, sess: Any) -> int:
            self.sessions_seen += 1
            return 0  # we did not take a reference

        cb = NEW_SESSION_CB(on_new)
        self._callbacks.append(cb)
        lib.SSL_CTX_ctrl(
            self.ctx, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_CLIENT, None
        )
        lib.SSL_CTX_sess_set_new_cb(self.ctx, cb)

    def free_all(self) -> None:
        for name, obj in list(self._objects.items()):
            if name != "C" and name[0] == "S" and obj:
                self.lib.SSL_free(obj)
        if self.conn:
            self.lib.SSL_free(self.conn)
            self.conn = None
        listener = self._objects.get("L")
        if listener:
            self.lib.SSL_free(listener)
        if self.ctx:
            self.lib.SSL_CTX_free(self.ctx)
            self.ctx = None
        self._objects.clear()
        self._names.clear()
        self.close()

    # -- event state --------------------------------------------------------

    def _timeout(self, ssl: Any) -> Obs:
        tv = timeval()
        inf = c_int()
        ret = self.lib.SSL_get_event_timeout(ssl, byref(tv), byref(inf))
        if ret != 1:
            return self._err(ssl, ret)
        if inf.value:
            return ["ok", "inf"]
        return ["ok", _timeout_kind(tv.tv_sec + tv.tv_usec / 1e6)]

    def event_state(self) -> list[Any]:
        lib = self.lib
        ssl = self.conn
        return [
            self._timeout(ssl)[1],
            lib.SSL_net_read_desired(ssl),
            lib.SSL_net_write_desired(ssl),
        ]

    # -- calls --------------------------------------------------------------

    def _int(self, label: str, ret: int, ssl: Any, ok: int = 1) -> Obs:
        if ret >= ok:
            return self.record(label, ["ok", ret])
        if label in HANDSHAKES:
            # 0: the handshake ended in a close; <0: would block, or could not run
            return self.record(label, [*self._err(ssl, ret), 0 if ret == 0 else -1])
        return self.record(label, self._err(ssl, ret))

    def connect(self) -> Obs:
        return self._int("SSL_connect", self.lib.SSL_connect(self.conn), self.conn)

    def do_handshake(self) -> Obs:
        ssl = self.conn
        return self._int("SSL_do_handshake", self.lib.SSL_do_handshake(ssl), ssl)

    def set_blocking_mode(self, obj: str, blocking: bool) -> Obs:
        ssl = self.obj(obj)
        ret = self.lib.SSL_set_blocking_mode(ssl, int(blocking))
        return self._int("SSL_set_blocking_mode", ret, ssl)

    def get_blocking_mode(self, obj: str) -> Obs:
        return self.record(
            "SSL_get_blocking_mode",
            ["ok", self.lib.SSL_get_blocking_mode(self.obj(obj))],
        )

    def is_init_finished(self) -> Obs:
        return self.record(
            "SSL_is_init_finished", ["ok", self.lib.SSL_is_init_finished(self.conn)]
        )

    def read(self, obj: str, n: int, *, peek: bool = False) -> Obs:
        ssl = self.obj(obj)
        buf = ctypes.create_string_buffer(max(n, 1))
        got = c_size_t()
        fn = self.lib.SSL_peek_ex if peek else self.lib.SSL_read_ex
        ret = fn(ssl, buf, n, byref(got))
        label = "SSL_peek_ex" if peek else "SSL_read_ex"
        if ret == 1:
            return self.record(label, ["ok", buf.raw[: got.value].decode("latin-1")])
        return self.record(label, self._err(ssl, ret))

    def write(self, obj: str, data: bytes, flags: int | None = None) -> Obs:
        ssl = self.obj(obj)
        done = c_size_t()
        if flags is None:
            ret = self.lib.SSL_write_ex(ssl, data, len(data), byref(done))
            label = "SSL_write_ex"
        else:
            ret = self.lib.SSL_write_ex2(ssl, data, len(data), flags, byref(done))
            label = "SSL_write_ex2"
        if ret == 1:
            return self.record(label, ["ok", done.value])
        return self.record(label, self._err(ssl, ret))

    def pending(self, obj: str) -> Obs:
        ssl = self.obj(obj)
        return self.record(
            "SSL_pending/has_pending",
            ["ok", [self.lib.SSL_pending(ssl), self.lib.SSL_has_pending(ssl)]],
        )

    def stream_conclude(self, obj: str) -> Obs:
        ssl = self.obj(obj)
        return self._int(
            "SSL_stream_conclude", self.lib.SSL_stream_conclude(ssl, 0), ssl
        )

    def stream_reset(self, obj: str, code: int) -> Obs:
        ssl = self.obj(obj)
        args = SSL_STREAM_RESET_ARGS(code)
        ret = self.lib.SSL_stream_reset(ssl, byref(args), ctypes.sizeof(args))
        return self._int("SSL_stream_reset", ret, ssl)

    def stream_states(self, obj: str) -> Obs:
        """Read and write states and error codes, in one step."""
        ssl = self.obj(obj)
        lib = self.lib
        rcode = c_uint64()
        wcode = c_uint64()
        rret = lib.SSL_get_stream_read_error_code(ssl, byref(rcode))
        wret = lib.SSL_get_stream_write_error_code(ssl, byref(wcode))
        lib.ERR_clear_error()
        return self.record(
            "SSL_get_stream_{read,write}_{state,error_code}",
            [
                "ok",
                [
                    lib.SSL_get_stream_read_state(ssl),
                    lib.SSL_get_stream_write_state(ssl),
                    [rret, rcode.value if rret == 1 else None],
                    [wret, wcode.value if wret == 1 else None],
                ],
            ],
        )

    def stream_info(self, obj: str) -> Obs:
        """Stream ID, type and locality."""
        ssl = self.obj(obj)
        lib = self.lib
        sid = lib.SSL_get_stream_id(ssl)
        lib.ERR_clear_error()
        return self.record(
            "SSL_get_stream_id/type, SSL_is_stream_local",
            [
                "ok",
                [
                    None if sid == 2**64 - 1 else sid,
                    lib.SSL_get_stream_type(ssl),
                    lib.SSL_is_stream_local(ssl),
                ],
            ],
        )

    def object_kind(self, obj: str) -> Obs:
        ssl = self.obj(obj)
        lib = self.lib
        conn = lib.SSL_get0_connection(ssl)
        return self.record(
            "SSL_is_connection/is_quic/is_listener/is_server, SSL_get0_connection",
            [
                "ok",
                [
                    lib.SSL_is_connection(ssl),
                    lib.SSL_is_quic(ssl),
                    lib.SSL_is_listener(ssl),
                    None if lib.SSL_is_listener(ssl) else lib.SSL_is_server(ssl),
                    self._names.get(int(conn or 0)),
                ],
            ],
        )

    def new_stream(self, flags: int) -> Obs:
        ssl = self.lib.SSL_new_stream(self.conn, flags)
        if not ssl:
            return self.record("SSL_new_stream", self._err(self.conn, 0))
        return self.record("SSL_new_stream", ["ok", self._name(ssl, "S")])

    def accept_stream(self, flags: int) -> Obs:
        self.lib.ERR_clear_error()
        ssl = self.lib.SSL_accept_stream(self.conn, flags)
        if not ssl:
            if not self.lib.ERR_peek_error():
                return self.record("SSL_accept_stream", ["null"])
            return self.record("SSL_accept_stream", ["null", *self._err(self.conn, 0)])
        return self.record("SSL_accept_stream", ["ok", self._name(ssl, "S")])

    def accept_queue_len(self) -> Obs:
        return self.record(
            "SSL_get_accept_stream_queue_len",
            ["ok", self.lib.SSL_get_accept_stream_queue_len(self.conn)],
        )

    def set_default_stream_mode(self, mode: int) -> Obs:
        ret = self.lib.SSL_set_default_stream_mode(self.conn, mode)
        return self._int("SSL_set_default_stream_mode", ret, self.conn)

    def set_incoming_stream_policy(self, policy: int, code: int) -> Obs:
        ret = self.lib.SSL_set_incoming_stream_policy(self.conn, policy, code)
        return self._int("SSL_set_incoming_stream_policy", ret, self.conn)

    def handle_events(self, obj: str = "C") -> Obs:
        ssl = self.obj(obj)
        return self._int("SSL_handle_events", self.lib.SSL_handle_events(ssl), ssl)

    def event_timeout(self, obj: str = "C") -> Obs:
        return self.record("SSL_get_event_timeout", self._timeout(self.obj(obj)))

    def net_desired(self, obj: str = "C") -> Obs:
        ssl = self.obj(obj)
        return self.record(
            "SSL_net_read_desired/write_desired",
            [
                "ok",
                [
                    self.lib.SSL_net_read_desired(ssl),
                    self.lib.SSL_net_write_desired(ssl),
                ],
            ],
        )

    def poll_descriptors(self, obj: str = "C") -> Obs:
        ssl = self.obj(obj)
        out = []
        for fn in (
            self.lib.SSL_get_rpoll_descriptor,
            self.lib.SSL_get_wpoll_descriptor,
        ):
            desc = BIO_POLL_DESCRIPTOR()
            ret = fn(ssl, byref(desc))
            fd = desc.value.fd
            out.append(
                ["ok", "socket" if self.sock and fd == self.sock.fileno() else fd]
                if ret == 1
                else self._err(ssl, ret)
            )
        fd = self.lib.SSL_get_fd(ssl)
        self.lib.ERR_clear_error()
        out.append(["ok", "socket" if self.sock and fd == self.sock.fileno() else fd])
        return self.record("SSL_get_rpoll/wpoll_descriptor, SSL_get_fd", ["ok", out])

    def shutdown(self, flags: int, code: int = 0, reason: str = "") -> Obs:
        args = SSL_SHUTDOWN_EX_ARGS(code, reason.encode())
        ret = self.lib.SSL_shutdown_ex(
            self.conn, flags, byref(args), ctypes.sizeof(args)
        )
        if ret >= 0:
            return self.record("SSL_shutdown_ex", ["ok", ret])
        return self.record("SSL_shutdown_ex", [*self._err(self.conn, ret), ret])

    def close_info(self) -> Obs:
        info = SSL_CONN_CLOSE_INFO()
        ret = self.lib.SSL_get_conn_close_info(
            self.conn, byref(info), ctypes.sizeof(info)
        )
        if ret != 1:
            return self.record("SSL_get_conn_close_info", ["ok", None])
        reason = (info.reason or b"")[: info.reason_len].decode("latin-1")
        return self.record(
            "SSL_get_conn_close_info",
            ["ok", [info.error_code, info.frame_type, reason, info.flags]],
        )

    def key_update(self, kind: int) -> Obs:
        return self._int(
            "SSL_key_update", self.lib.SSL_key_update(self.conn, kind), self.conn
        )

    def get_value(self, obj: str, cls: int, vid: int) -> Obs:
        ssl = self.obj(obj)
        value = c_uint64()
        ret = self.lib.SSL_get_value_uint(ssl, cls, vid, byref(value))
        if ret == 1:
            return self.record(f"SSL_get_value_uint({cls},{vid})", ["ok", value.value])
        return self.record(f"SSL_get_value_uint({cls},{vid})", self._err(ssl, ret))

    def set_value(self, obj: str, cls: int, vid: int, v: int) -> Obs:
        ssl = self.obj(obj)
        ret = self.lib.SSL_set_value_uint(ssl, cls, vid, v)
        return self._int(f"SSL_set_value_uint({cls},{vid})", ret, ssl)

    def poll(self, items: list[tuple[str, int]]) -> Obs:
        arr = (SSL_POLL_ITEM * len(items))()
        for i, (name, events) in enumerate(items):
            arr[i].desc.type = BIO_POLL_DESCRIPTOR_TYPE_SSL
            arr[i].desc.value.ssl = self.obj(name)
            arr[i].events = events
        tv = timeval(0, 0)
        count = c_size_t()
        ret = self.lib.SSL_poll(
            arr, len(items), ctypes.sizeof(SSL_POLL_ITEM), byref(tv), 0, byref(count)
        )
        self.lib.ERR_clear_error()
        return self.record(
            "SSL_poll",
            ["ok", [ret, count.value, [arr[i].revents for i in range(len(items))]]],
        )

    def get_error(self, obj: str, ret: int = 0) -> Obs:
        return self.record(
            "SSL_get_error", ["ok", self.lib.SSL_get_error(self.obj(obj), ret)]
        )

    def mode(self, obj: str, op: str, bits: int = 0) -> Obs:
        ssl = self.obj(obj)
        if op == "set":
            ret = self.lib.SSL_ctrl(ssl, SSL_CTRL_MODE, bits, None)
        elif op == "clear":
            ret = self.lib.SSL_ctrl(ssl, SSL_CTRL_CLEAR_MODE, bits, None)
        else:
            ret = self.lib.SSL_ctrl(ssl, SSL_CTRL_MODE, 0, None)
        return self.record(f"SSL_{op}_mode", ["ok", ret])

    def handshake_facts(self) -> Obs:
        lib = self.lib
        ssl = self.conn
        data = ctypes.POINTER(ctypes.c_ubyte)()
        length = c_uint()
        lib.SSL_get0_alpn_selected(ssl, byref(data), byref(length))
        alpn = ctypes.string_at(data, length.value).decode() if length.value else None
        cipher = lib.SSL_get_current_cipher(ssl)
        name = lib.SSL_CIPHER_get_name(cipher).decode() if cipher else None
        self.record(
            "SSL_get0_alpn_selected/get_current_cipher/get_verify_result",
            ["ok", [alpn, name, lib.SSL_get_verify_result(ssl)]],
        )
        return self.record("SSL_session_reused", ["ok", lib.SSL_session_reused(ssl)])

    def verify_result(self) -> Obs:
        return self.record(
            "SSL_get_verify_result", ["ok", self.lib.SSL_get_verify_result(self.conn)]
        )

    def async_state(self, obj: str = "C") -> Obs:
        ssl = self.obj(obj)
        lib = self.lib
        num = c_size_t()
        all_ret = lib.SSL_get_all_async_fds(ssl, None, byref(num))
        nadd = c_size_t()
        ndel = c_size_t()
        changed_ret = lib.SSL_get_changed_async_fds(
            ssl, None, byref(nadd), None, byref(ndel)
        )
        status = c_int(-1)
        status_ret = lib.SSL_get_async_status(ssl, byref(status))
        lib.ERR_clear_error()
        return self.record(
            "SSL_waiting_for_async/get_all_async_fds/get_changed_async_fds/get_async_status",
            [
                "ok",
                [
                    lib.SSL_waiting_for_async(ssl),
                    [all_ret, num.value if all_ret else None],
                    [changed_ret, [nadd.value, ndel.value] if changed_ret else None],
                    [status_ret, status.value if status_ret else None],
                ],
            ],
        )

    def inject_net_dgram(self, data: bytes) -> Obs:
        ret = self.lib.SSL_inject_net_dgram(self.conn, data, len(data), None, None)
        return self._int("SSL_inject_net_dgram", ret, self.conn)

    def get1_session(self) -> Any:
        return self.lib.SSL_get1_session(self.conn)

    def set_session(self, session: Any) -> Obs:
        ret = self.lib.SSL_set_session(self.conn, session)
        self.lib.SSL_SESSION_free(session)
        return self._int("SSL_set_session", ret, self.conn)

    def free(self, obj: str) -> Obs:
        ssl = self._objects.pop(obj)
        self._names.pop(int(ssl), None)
        self.lib.SSL_free(ssl)
        return self.record("SSL_free", ["ok", 1])

    # -- the server side (listeners) -----------------------------------------

    def new_listener(self, flags: int) -> tuple[str, int]:
        lib = self.lib
        listener = lib.SSL_new_listener(self.ctx, flags)
        assert listener, lib.errors()
        self._name(listener, "L")
        sock = self.bind_socket()
        assert lib.SSL_set_fd(listener, sock.fileno()) == 1
        address: tuple[str, int] = sock.getsockname()
        return address

    def listen(self) -> Obs:
        listener = self.obj("L")
        return self._int("SSL_listen", self.lib.SSL_listen(listener), listener)

    def accept_connection(self, flags: int) -> Obs:
        lib = self.lib
        lib.ERR_clear_error()
        ssl = lib.SSL_accept_connection(self.obj("L"), flags)
        if not ssl:
            if not lib.ERR_peek_error():
                return self.record("SSL_accept_connection", ["null"])
            return self.record(
                "SSL_accept_connection", ["null", *self._err(self.obj("L"), 0)]
            )
        if self.conn is None:
            self.conn = ssl
            self._name(ssl, "C")
        return self.record("SSL_accept_connection", ["ok", self._names[int(ssl)]])

    def accept_connection_queue_len(self) -> Obs:
        return self.record(
            "SSL_get_accept_connection_queue_len",
            ["ok", self.lib.SSL_get_accept_connection_queue_len(self.obj("L"))],
        )

    def accept(self) -> Obs:
        return self._int("SSL_accept", self.lib.SSL_accept(self.conn), self.conn)

    def get0_listener(self, obj: str) -> Obs:
        found = self.lib.SSL_get0_listener(self.obj(obj))
        return self.record(
            "SSL_get0_listener", ["ok", self._names.get(int(found or 0))]
        )

    # -- DTLS (the retransmission difference) ---------------------------------

    def dtls_client(self, address: tuple[str, int]) -> None:
        lib = self.lib
        ctx = lib.SSL_CTX_new(lib.DTLS_client_method())
        lib.SSL_CTX_set_verify(ctx, 0, None)
        self.ctx = ctx
        ssl = lib.SSL_new(ctx)
        sock = self.connect_socket(address)
        bio = lib.BIO_new_dgram(sock.fileno(), 0)  # BIO_NOCLOSE
        lib.SSL_set_bio(ssl, bio, bio)
        self.dtls = ssl
        self._name(ssl, "D")

    def dtls_connect(self) -> Obs:
        ret = self.lib.SSL_connect(self.dtls)
        if ret == 1:
            return self.record("SSL_connect (DTLS)", ["ok", 1])
        return self.record("SSL_connect (DTLS)", self._err(self.dtls, ret))

    def dtls_event_timeout(self) -> Obs:
        tv = timeval()
        ret = self.lib.SSL_ctrl(self.dtls, DTLS_CTRL_GET_TIMEOUT, 0, ctypes.byref(tv))
        if not ret:
            return self.record("DTLSv1_get_timeout", ["ok", "inf"])
        return self.record(
            "DTLSv1_get_timeout", ["ok", _timeout_kind(tv.tv_sec + tv.tv_usec / 1e6)]
        )

    def dtls_handle_events(self) -> Obs:
        ret = self.lib.SSL_ctrl(self.dtls, DTLS_CTRL_HANDLE_TIMEOUT, 0, None)
        return self.record("DTLSv1_handle_timeout", ["ok", int(ret >= 0)])

    def dtls_free(self) -> None:
        self.lib.SSL_free(self.dtls)
        self._objects.pop("D", None)
        self.dtls = None


# ===========================================================================
# quicconn
# ===========================================================================


class QuicconnClient(Adapter):
    """quicconn, with its Python forms mapped back to OpenSSL's values."""

    name = "quicconn"

    def __init__(self) -> None:
        super().__init__()
        self.ctx: Any = None

    def obj(self, name: str) -> Any:
        return self._objects[name]

    def _call(self, label: str, target: Any, func: Any, convert: Any = None) -> Obs:
        try:
            value = func()
        except quicconn.Error as exc:
            assert target.get_error() == exc.code, (label, target.get_error(), exc)
            if label in HANDSHAKES:
                closed = self.conn.get_conn_close_info() is not None
                return self.record(label, ["err", exc.code, 0 if closed else -1])
            return self.record(label, ["err", exc.code])
        except (ValueError, TypeError) as exc:
            self.trace.append([f"# {label}: {type(exc).__name__}: {exc}", ["info"]])
            if label in HANDSHAKES:
                return self.record(label, ["err", target.get_error(), -1])
            return self.record(label, ["err", target.get_error()])
        return self.record(label, ["ok", convert(value) if convert else value])

    # -- setup --------------------------------------------------------------

    def new_ctx(
        self,
        *,
        cafile: str | None,
        alpn: list[str],
        server: bool = False,
        certfile: str | None = None,
        keyfile: str | None = None,
        thread: bool = False,
    ) -> None:
        ctx = quicconn.Context(quicconn.SERVER if server else quicconn.CLIENT)
        if server:
            ctx.load_cert_chain(certfile, keyfile)
        elif cafile is not None:
            ctx.verify_mode = quicconn.VERIFY_PEER
            ctx.load_verify_locations(cafile)
        else:
            ctx.verify_mode = quicconn.VERIFY_NONE
        ctx.set_alpn_protos(alpn)
        self.ctx = ctx

    def new_conn(
        self, address: tuple[str, int], host: str | None, *, connected: bool = True
    ) -> None:
        conn = quicconn.Connection(self.ctx)
        self.conn = conn
        self._name(conn, "C")
        sock = self.connect_socket(address) if connected else self.unconnected_socket()
        conn.set_fd(sock)
        if host is not None:
            conn.set_tlsext_host_name(host)
            conn.set1_host(host)

    def set1_initial_peer_addr(self, address: tuple[str, int]) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_set1_initial_peer_addr",
            conn,
            lambda: conn.set1_initial_peer_addr(address),
            lambda v: 1,
        )

    def drop_conn(self) -> None:
        for name in [n for n in self._objects if n[0] == "S" or n == "C"]:
            obj = self._objects.pop(name)
            self._names.pop(id(obj), None)
            obj.free()
        self.conn = None
        self.close()

    def set_new_session_cb(self) -> None:
        def on_new(conn: Any, session: Any) -> None:
            self.sessions_seen += 1

        self.ctx.sess_set_new_cb(on_new)

    def free_all(self) -> None:
        for name, obj in list(self._objects.items()):
            if name[0] == "S":
                obj.free()
        if self.conn is not None:
            self.conn.free()
            self.conn = None
        listener = self._objects.get("L")
        if listener is not None:
            listener.free()
        self._objects.clear()
        self._names.clear()
        self.close()

    # -- event state --------------------------------------------------------

    def event_state(self) -> list[Any]:
        conn = self.conn
        return [
            _timeout_kind(conn.get_event_timeout()),
            int(conn.net_read_desired()),
            int(conn.net_write_desired()),
        ]

    # -- calls --------------------------------------------------------------

    def connect(self) -> Obs:
        return self._call("SSL_connect", self.conn, self.conn.connect, lambda v: 1)

    def do_handshake(self) -> Obs:
        return self._call(
            "SSL_do_handshake", self.conn, self.conn.do_handshake, lambda v: 1
        )

    def set_blocking_mode(self, obj: str, blocking: bool) -> Obs:
        o = self.obj(obj)
        return self._call(
            "SSL_set_blocking_mode",
            o,
            lambda: o.set_blocking_mode(blocking),
            lambda v: 1,
        )

    def get_blocking_mode(self, obj: str) -> Obs:
        return self.record(
            "SSL_get_blocking_mode", ["ok", int(self.obj(obj).get_blocking_mode())]
        )

    def is_init_finished(self) -> Obs:
        return self.record(
            "SSL_is_init_finished", ["ok", int(self.conn.is_init_finished())]
        )

    def read(self, obj: str, n: int, *, peek: bool = False) -> Obs:
        o = self.obj(obj)
        label = "SSL_peek_ex" if peek else "SSL_read_ex"
        fn = o.peek if peek else o.read
        return self._call(label, o, lambda: fn(n), lambda v: v.decode("latin-1"))

    def write(self, obj: str, data: bytes, flags: int | None = None) -> Obs:
        o = self.obj(obj)
        if flags is None:
            return self._call("SSL_write_ex", o, lambda: o.write(data))
        return self._call("SSL_write_ex2", o, lambda: o.write_ex2(data, flags))

    def pending(self, obj: str) -> Obs:
        o = self.obj(obj)
        return self.record(
            "SSL_pending/has_pending", ["ok", [o.pending(), int(o.has_pending())]]
        )

    def stream_conclude(self, obj: str) -> Obs:
        o = self.obj(obj)
        return self._call("SSL_stream_conclude", o, o.stream_conclude, lambda v: 1)

    def stream_reset(self, obj: str, code: int) -> Obs:
        o = self.obj(obj)
        return self._call(
            "SSL_stream_reset", o, lambda: o.stream_reset(code), lambda v: 1
        )

    @staticmethod
    def _code(value: int | None, state: int) -> list[Any]:
        """The documented mapping of ``int | None`` to OpenSSL's 1/0/-1."""
        if value is not None:
            return [1, value]
        if state == quicconn.STREAM_STATE_FINISHED:
            return [0, None]
        return [-1, None]

    def stream_states(self, obj: str) -> Obs:
        o = self.obj(obj)
        rstate = o.get_stream_read_state()
        wstate = o.get_stream_write_state()
        return self.record(
            "SSL_get_stream_{read,write}_{state,error_code}",
            [
                "ok",
                [
                    rstate,
                    wstate,
                    self._code(o.get_stream_read_error_code(), rstate),
                    self._code(o.get_stream_write_error_code(), wstate),
                ],
            ],
        )

    def stream_info(self, obj: str) -> Obs:
        o = self.obj(obj)
        try:
            local = int(o.is_stream_local())
        except quicconn.Error:
            local = -1  # the Python form of OpenSSL's -1: no stream
        return self.record(
            "SSL_get_stream_id/type, SSL_is_stream_local",
            ["ok", [o.get_stream_id(), o.get_stream_type(), local]],
        )

    def object_kind(self, obj: str) -> Obs:
        o = self.obj(obj)
        if isinstance(o, quicconn.Connection):
            conn = o
        elif isinstance(o, quicconn.Stream):
            conn = o.get0_connection()
        else:
            conn = None
        return self.record(
            "SSL_is_connection/is_quic/is_listener/is_server, SSL_get0_connection",
            [
                "ok",
                [
                    int(o.is_connection()),
                    int(o.is_quic()),
                    int(o.is_listener()),
                    None if o.is_listener() else int(o.is_server()),
                    self._names.get(id(conn)),
                ],
            ],
        )

    def new_stream(self, flags: int) -> Obs:
        return self._call(
            "SSL_new_stream",
            self.conn,
            lambda: self.conn.new_stream(flags),
            lambda s: self._name(s, "S"),
        )

    def accept_stream(self, flags: int) -> Obs:
        conn = self.conn
        try:
            stream = conn.accept_stream(flags)
        except quicconn.Error as exc:
            return self.record("SSL_accept_stream", ["null", "err", exc.code])
        except (ValueError, TypeError):
            return self.record("SSL_accept_stream", ["null", "err", conn.get_error()])
        if stream is None:
            return self.record("SSL_accept_stream", ["null"])
        return self.record("SSL_accept_stream", ["ok", self._name(stream, "S")])

    def accept_queue_len(self) -> Obs:
        return self.record(
            "SSL_get_accept_stream_queue_len",
            ["ok", self.conn.get_accept_stream_queue_len()],
        )

    def set_default_stream_mode(self, mode: int) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_set_default_stream_mode",
            conn,
            lambda: conn.set_default_stream_mode(mode),
            lambda v: 1,
        )

    def set_incoming_stream_policy(self, policy: int, code: int) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_set_incoming_stream_policy",
            conn,
            lambda: conn.set_incoming_stream_policy(policy, code),
            lambda v: 1,
        )

    def handle_events(self, obj: str = "C") -> Obs:
        o = self.obj(obj)
        return self._call("SSL_handle_events", o, o.handle_events, lambda v: 1)

    def event_timeout(self, obj: str = "C") -> Obs:
        o = self.obj(obj)
        return self._call(
            "SSL_get_event_timeout", o, o.get_event_timeout, _timeout_kind
        )

    def net_desired(self, obj: str = "C") -> Obs:
        o = self.obj(obj)
        return self.record(
            "SSL_net_read_desired/write_desired",
            ["ok", [int(o.net_read_desired()), int(o.net_write_desired())]],
        )

    def poll_descriptors(self, obj: str = "C") -> Obs:
        o = self.obj(obj)
        out = []
        for fn in (o.get_rpoll_descriptor, o.get_wpoll_descriptor):
            try:
                fd = fn()
            except (quicconn.Error, ValueError) as exc:
                code = exc.code if isinstance(exc, quicconn.Error) else o.get_error()
                out.append(["err", code])
                continue
            out.append(
                ["ok", "socket" if self.sock and fd == self.sock.fileno() else fd]
            )
        fd = o.fileno() if hasattr(o, "fileno") else o.get0_connection().fileno()
        out.append(["ok", "socket" if self.sock and fd == self.sock.fileno() else fd])
        return self.record("SSL_get_rpoll/wpoll_descriptor, SSL_get_fd", ["ok", out])

    def shutdown(self, flags: int, code: int = 0, reason: str = "") -> Obs:
        conn = self.conn
        return self._call(
            "SSL_shutdown_ex", conn, lambda: conn.shutdown(flags, code, reason), int
        )

    def close_info(self) -> Obs:
        info = self.conn.get_conn_close_info()
        if info is None:
            return self.record("SSL_get_conn_close_info", ["ok", None])
        return self.record(
            "SSL_get_conn_close_info",
            ["ok", [info.error_code, info.frame_type or 0, info.reason, info.flags]],
        )

    def key_update(self, kind: int) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_key_update", conn, lambda: conn.key_update(kind), lambda v: 1
        )

    def get_value(self, obj: str, cls: int, vid: int) -> Obs:
        o = self.obj(obj)
        return self._call(
            f"SSL_get_value_uint({cls},{vid})", o, lambda: o.get_value_uint(cls, vid)
        )

    def set_value(self, obj: str, cls: int, vid: int, v: int) -> Obs:
        o = self.obj(obj)
        return self._call(
            f"SSL_set_value_uint({cls},{vid})",
            o,
            lambda: o.set_value_uint(cls, vid, v),
            lambda r: 1,
        )

    def poll(self, items: list[tuple[str, int]]) -> Obs:
        revents = quicconn.poll([(self.obj(n), ev) for n, ev in items], timeout=0)
        count = sum(1 for r in revents if r)
        return self.record("SSL_poll", ["ok", [1, count, revents]])

    def get_error(self, obj: str, ret: int = 0) -> Obs:
        return self.record("SSL_get_error", ["ok", self.obj(obj).get_error()])

    def mode(self, obj: str, op: str, bits: int = 0) -> Obs:
        o = self.obj(obj)
        if op == "set":
            value = o.set_mode(bits)
        elif op == "clear":
            value = o.clear_mode(bits)
        else:
            value = o.get_mode()
        return self.record(f"SSL_{op}_mode", ["ok", value])

    def handshake_facts(self) -> Obs:
        conn = self.conn
        self.record(
            "SSL_get0_alpn_selected/get_current_cipher/get_verify_result",
            [
                "ok",
                [
                    conn.get0_alpn_selected(),
                    conn.get_current_cipher(),
                    conn.get_verify_result(),
                ],
            ],
        )
        return self.record("SSL_session_reused", ["ok", int(conn.session_reused())])

    def verify_result(self) -> Obs:
        return self.record(
            "SSL_get_verify_result", ["ok", self.conn.get_verify_result()]
        )

    def async_state(self, obj: str = "C") -> Obs:
        o = self.obj(obj)

        def attempt(fn: Any, convert: Any) -> list[Any]:
            try:
                return [1, convert(fn())]
            except (quicconn.Error, ValueError):
                return [0, None]

        return self.record(
            "SSL_waiting_for_async/get_all_async_fds/get_changed_async_fds/get_async_status",
            [
                "ok",
                [
                    int(o.waiting_for_async()),
                    attempt(o.get_all_async_fds, len),
                    attempt(o.get_changed_async_fds, lambda v: [len(v[0]), len(v[1])]),
                    attempt(o.get_async_status, lambda v: v),
                ],
            ],
        )

    def inject_net_dgram(self, data: bytes) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_inject_net_dgram",
            conn,
            lambda: conn.inject_net_dgram(data),
            lambda v: 1,
        )

    def get1_session(self) -> Any:
        return self.conn.get1_session()

    def set_session(self, session: Any) -> Obs:
        conn = self.conn
        return self._call(
            "SSL_set_session", conn, lambda: conn.set_session(session), lambda v: 1
        )

    # -- DTLS (the retransmission difference) ---------------------------------

    def dtls_client(self, address: tuple[str, int]) -> None:
        ctx = quicconn.DTLSContext(quicconn.CLIENT)
        ctx.verify_mode = quicconn.VERIFY_NONE
        conn = quicconn.DTLSConnection(ctx)
        conn.set_fd(self.connect_socket(address))
        conn.set_blocking_mode(False)
        self.dtls = conn
        self._name(conn, "D")

    def dtls_connect(self) -> Obs:
        return self._call(
            "SSL_connect (DTLS)", self.dtls, self.dtls.connect, lambda v: 1
        )

    def dtls_event_timeout(self) -> Obs:
        return self.record(
            "DTLSv1_get_timeout", ["ok", _timeout_kind(self.dtls.get_event_timeout())]
        )

    def dtls_handle_events(self) -> Obs:
        self.dtls.handle_events()
        return self.record("DTLSv1_handle_timeout", ["ok", 1])

    def dtls_free(self) -> None:
        self.dtls.free()
        self._objects.pop("D", None)
        self.dtls = None

    # -- the server side (listeners) -----------------------------------------

    def new_listener(self, flags: int) -> tuple[str, int]:
        sock = self.bind_socket()
        listener = self.ctx.new_listener(sock, flags)
        self._name(listener, "L")
        address: tuple[str, int] = sock.getsockname()
        return address

    def listen(self) -> Obs:
        listener = self.obj("L")
        return self._call("SSL_listen", listener, listener.listen, lambda v: 1)

    def accept_connection(self, flags: int) -> Obs:
        listener = self.obj("L")
        try:
            conn = listener.accept_connection(flags)
        except quicconn.Error as exc:
            return self.record("SSL_accept_connection", ["null", "err", exc.code])
        if conn is None:
            return self.record("SSL_accept_connection", ["null"])
        if self.conn is None:
            self.conn = conn
            self._name(conn, "C")
        return self.record("SSL_accept_connection", ["ok", self._names[id(conn)]])

    def accept_connection_queue_len(self) -> Obs:
        return self.record(
            "SSL_get_accept_connection_queue_len",
            ["ok", self.obj("L").get_accept_connection_queue_len()],
        )

    def accept(self) -> Obs:
        return self._call("SSL_accept", self.conn, self.conn.accept, lambda v: 1)

    def get0_listener(self, obj: str) -> Obs:
        found = self.obj(obj).get0_listener()
        return self.record("SSL_get0_listener", ["ok", self._names.get(id(found))])

    def free(self, obj: str) -> Obs:
        o = self._objects.pop(obj)
        self._names.pop(id(o), None)
        o.free()
        return self.record("SSL_free", ["ok", 1])


__all__ = ["Adapter", "OpenSSLClient", "QuicconnClient"]
