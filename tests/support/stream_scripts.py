"""A script-driven harness for stream behaviour (in the spirit of OpenSSL's
``test/quic_multistream_test.c``, written from scratch for quicconn).

A :class:`Script` is a list of operations, each performed by the client
(``C``) or the server (``S``) side of one QUIC connection.  Within a side,
operations run in order; across sides, only causality orders them (a read
waits for the write it expects) plus explicit :func:`sync` points.

The same script runs three ways:

* **nonblocking** - one thread, both connections nonblocking; the runner
  steps whichever side can make progress (an operation that would block
  just reports "not yet") and waits on both sockets when neither can;
* **blocking** - one thread per side, both connections blocking; every
  call blocks as the application's would;
* **fakeclock** - like nonblocking, over a :class:`DatagramPair` with a
  :class:`FakeClock`: time jumps to the next timer instead of passing, so
  idle timeouts and loss recovery run instantly.

Operations are small objects with ``step(side) -> bool``: True when done,
False when they cannot complete yet (nonblocking: a ``Want*`` error, or a
condition that does not hold yet).  A blocking call inside a step simply
blocks.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import quicconn
from quicconn.testing import DatagramPair, FakeClock
from tests.support.certs import CertFiles

ALPN = "quicconn-test"
SCRIPT_TIMEOUT = 20.0  # seconds of real time per script
FAKE_TIME_LIMIT = 600.0  # seconds of fake time per fakeclock script


# ----------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------


@dataclass(frozen=True)
class ContextConfig:
    """Context-level settings of one side (transport parameters)."""

    max_streams_bidi: int = 128
    max_streams_uni: int = 128
    max_stream_data: int = 1024 * 1024
    max_data: int = 4 * 1024 * 1024
    idle_timeout: float = 30.0
    stream_write_buffer_size: int = 1024 * 1024

    def apply(self, ctx: quicconn.Context) -> None:
        ctx.max_streams_bidi = self.max_streams_bidi
        ctx.max_streams_uni = self.max_streams_uni
        ctx.max_stream_data = self.max_stream_data
        ctx.max_data = self.max_data
        ctx.idle_timeout = self.idle_timeout
        ctx.stream_write_buffer_size = self.stream_write_buffer_size


@dataclass(frozen=True)
class ConnConfig:
    """Per-connection settings applied before the script starts."""

    default_mode: int = quicconn.DEFAULT_STREAM_MODE_NONE
    policy: int = quicconn.INCOMING_STREAM_POLICY_AUTO
    policy_code: int = 0
    mode: int = 0  # SSL_set_mode bits, e.g. MODE_ENABLE_PARTIAL_WRITE

    def apply(self, conn: quicconn.Connection) -> None:
        conn.set_default_stream_mode(self.default_mode)
        conn.set_incoming_stream_policy(self.policy, self.policy_code)
        if self.mode:
            conn.set_mode(self.mode)


MODES = ("nonblocking", "blocking", "fakeclock")


@dataclass(frozen=True)
class Script:
    name: str
    ops: tuple[Op, ...]
    client: ConnConfig = ConnConfig()
    server: ConnConfig = ConnConfig()
    client_ctx: ContextConfig = ContextConfig()
    server_ctx: ContextConfig = ContextConfig()
    modes: tuple[str, ...] = MODES
    #: Core capabilities the script rests on (tests/support/cores.py).
    needs: tuple[Any, ...] = ()


def script(name: str, *ops: Op, **config: Any) -> Script:
    return Script(name, tuple(ops), **config)


# ----------------------------------------------------------------------
# the side an operation acts on
# ----------------------------------------------------------------------


class Side:
    """One endpoint during a run: its connection, named streams, scratch."""

    def __init__(self, name: str, conn: quicconn.Connection, run: Run) -> None:
        self.name = name
        self.conn = conn
        self.run = run
        self.blocking = False
        self.streams: dict[str, quicconn.Stream] = {}
        self.pool: dict[int, quicconn.Stream] = {}  # accepted, not yet named
        self.scratch: dict[int, Any] = {}
        self.index = 0  # next operation
        self.ops: list[Op] = []
        self.done = False

    @property
    def peer(self) -> Side:
        return self.run.sides["S" if self.name == "C" else "C"]

    def stream(self, name: str | None) -> Any:
        """A named stream, or the connection itself (default stream) for None."""
        if name is None:
            return self.conn
        try:
            return self.streams[name]
        except KeyError:
            raise AssertionError(f"{self.name}: no stream named {name!r}") from None

    def pump(self) -> None:
        """Let the network make progress (blocking runner: this side only)."""
        self.run.pump(self)


class Run:
    """Shared state of one script run."""

    def __init__(
        self, mode: str, env: dict[str, Any], *, blocking: bool, fake_clock: bool
    ) -> None:
        self.mode = mode
        self.env = env
        self.blocking = blocking
        self.fake_clock = fake_clock
        self.sides: dict[str, Side] = {}
        self.sync_lock = threading.Condition()
        self.reached: dict[str, set[str]] = {}
        self.failed = threading.Event()
        self.wait: Callable[[Side | None], None] = lambda side: None

    def pump(self, side: Side) -> None:
        self.wait(side)


# ----------------------------------------------------------------------
# operations
# ----------------------------------------------------------------------


class Op:
    """One step of a script, performed by ``side`` ("C" or "S")."""

    side = "C"
    only: str | None = None  # a mode this op is limited to, or None

    def step(self, s: Side) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
        )
        return f"{self.side}.{type(self).__name__}({fields})"


def _retryable(exc: BaseException) -> bool:
    return isinstance(
        exc,
        quicconn.WantReadError
        | quicconn.WantWriteError
        | quicconn.StreamCountLimitedError,
    )


class Call(Op):
    """Run ``fn(side)`` once; ``Want*`` errors mean "not yet"."""

    def __init__(self, side: str, fn: Callable[[Side], Any], label: str = "") -> None:
        self.side = side
        self.fn = fn
        self.label = label

    def step(self, s: Side) -> bool:
        try:
            self.fn(s)
        except Exception as exc:
            if _retryable(exc):
                return False
            raise
        return True

    def describe(self) -> str:
        return f"{self.side}.Call({self.label or self.fn.__name__})"


class Check(Op):
    """Assert ``fn(side)`` right away (no retry)."""

    def __init__(self, side: str, fn: Callable[[Side], Any], label: str = "") -> None:
        self.side = side
        self.fn = fn
        self.label = label

    def step(self, s: Side) -> bool:
        result = self.fn(s)
        assert result is None or result is True, f"check failed: {self.label}"
        return True

    def describe(self) -> str:
        return f"{self.side}.Check({self.label})"


class Eventually(Op):
    """Wait until ``fn(side)`` is true (re-evaluated as the network moves)."""

    def __init__(self, side: str, fn: Callable[[Side], bool], label: str) -> None:
        self.side = side
        self.fn = fn
        self.label = label
        self.last: Any = None

    def step(self, s: Side) -> bool:
        s.conn.handle_events()
        return bool(self.fn(s))

    def describe(self) -> str:
        return f"{self.side}.Eventually({self.label})"


class NewStream(Op):
    def __init__(
        self,
        side: str,
        name: str,
        flags: int = 0,
        expect_id: int | None = None,
    ) -> None:
        self.side = side
        self.name = name
        self.flags = flags
        self.expect_id = expect_id

    def step(self, s: Side) -> bool:
        try:
            stream = s.conn.new_stream(self.flags)
        except quicconn.StreamCountLimitedError:
            return False
        if self.expect_id is not None:
            assert stream.get_stream_id() == self.expect_id, (
                f"stream id {stream.get_stream_id()} != {self.expect_id}"
            )
        s.streams[self.name] = stream
        return True


class Accept(Op):
    def __init__(
        self,
        side: str,
        name: str,
        flags: int = 0,
        expect_id: int | None = None,
        expect_type: int | None = None,
        bind_id: int | None = None,
    ) -> None:
        self.side = side
        self.name = name
        self.flags = flags
        self.expect_id = expect_id
        self.expect_type = expect_type
        self.bind_id = bind_id

    def step(self, s: Side) -> bool:
        flags = self.flags
        if not s.blocking:
            flags |= quicconn.ACCEPT_STREAM_NO_BLOCK
        if self.bind_id is not None:
            # Streams may arrive in any order (loss): accept into a pool
            # until the one with this ID shows up.
            while self.bind_id not in s.pool:
                got = s.conn.accept_stream(flags)
                if got is None:
                    return False
                s.pool[got.get_stream_id()] = got
            stream = s.pool.pop(self.bind_id)
        else:
            got = s.conn.accept_stream(flags)
            if got is None:
                return False
            stream = got
        if self.expect_id is not None:
            assert stream.get_stream_id() == self.expect_id, (
                f"accepted stream {stream.get_stream_id()}, expected {self.expect_id}"
            )
        if self.expect_type is not None:
            assert stream.get_stream_type() == self.expect_type
        assert not stream.is_stream_local()
        assert stream.get0_connection() is s.conn
        s.streams[self.name] = stream
        return True


class Write(Op):
    """Write all of ``data`` (plus FIN with ``conclude``), however it takes.

    Nonblocking, all-or-nothing mode retries the same call; partial mode
    advances by the returned counts.  ``scratch`` records how many calls
    returned a short count, for :class:`ExpectPartialWrites`.
    """

    def __init__(
        self, side: str, name: str | None, data: bytes, conclude: bool = False
    ) -> None:
        self.side = side
        self.name = name
        self.data = data
        self.conclude = conclude

    def describe(self) -> str:
        return (
            f"{self.side}.Write({self.name!r}, {len(self.data)} bytes, "
            f"conclude={self.conclude})"
        )

    def step(self, s: Side) -> bool:
        state = s.scratch.setdefault(id(self), {"offset": 0, "short": 0, "want": 0})
        target = s.stream(self.name)
        view = memoryview(self.data)
        flags = quicconn.WRITE_FLAG_CONCLUDE if self.conclude else 0
        while state["offset"] < len(view) or (not view and state["offset"] == 0):
            remaining = view[state["offset"] :]
            try:
                n = target.write_ex2(remaining, flags)
            except quicconn.WantWriteError:
                state["want"] += 1
                return False
            if n < len(remaining):
                state["short"] += 1
            state["offset"] += n
            if not view:
                break
        s.run.env.setdefault("writes", {})[(s.name, self.name)] = state
        return True


class ReadExpect(Op):
    """Read exactly ``data`` (in as many reads as it takes)."""

    def __init__(self, side: str, name: str | None, data: bytes) -> None:
        self.side = side
        self.name = name
        self.data = data

    def describe(self) -> str:
        return f"{self.side}.ReadExpect({self.name!r}, {len(self.data)} bytes)"

    def step(self, s: Side) -> bool:
        got = s.scratch.setdefault(id(self), bytearray())
        target = s.stream(self.name)
        while len(got) < len(self.data):
            try:
                chunk = target.read(len(self.data) - len(got))
            except quicconn.WantReadError:
                return False
            got += chunk
        assert bytes(got) == self.data, (
            f"{s.name} read {len(got)} bytes that differ from the "
            f"{len(self.data)} expected (first 40: {bytes(got[:40])!r})"
        )
        return True


class ExpectFin(Op):
    def __init__(self, side: str, name: str | None) -> None:
        self.side = side
        self.name = name

    def step(self, s: Side) -> bool:
        try:
            data = s.stream(self.name).read(1)
        except quicconn.WantReadError:
            return False
        except quicconn.ZeroReturnError as exc:
            assert exc.code == quicconn.ERROR_ZERO_RETURN
            return True
        raise AssertionError(f"expected FIN, read {data!r}")


class ExpectReset(Op):
    """Read until ``StreamResetError`` with ``code`` (data before it is dropped)."""

    def __init__(self, side: str, name: str | None, code: int) -> None:
        self.side = side
        self.name = name
        self.code = code

    def step(self, s: Side) -> bool:
        target = s.stream(self.name)
        while True:
            try:
                target.read(65536)
            except quicconn.WantReadError:
                return False
            except quicconn.StreamResetError as exc:
                assert exc.error_code == self.code, (
                    f"reset code {exc.error_code}, expected {self.code}"
                )
                assert exc.code == quicconn.ERROR_SSL
                return True


class Raises(Op):
    """``fn(side)`` must raise ``exc`` (checked with ``check`` if given)."""

    def __init__(
        self,
        side: str,
        fn: Callable[[Side], Any],
        exc: type[BaseException] | tuple[type[BaseException], ...],
        label: str,
        check: Callable[[Any], bool] | None = None,
    ) -> None:
        self.side = side
        self.fn = fn
        self.exc = exc
        self.label = label
        self.check = check

    def step(self, s: Side) -> bool:
        try:
            result = self.fn(s)
        except self.exc as caught:
            if self.check is not None:
                assert self.check(caught), f"{self.label}: unexpected {caught!r}"
            return True
        except Exception as other:
            if _retryable(other) and not (
                isinstance(self.exc, type) and isinstance(other, self.exc)
            ):
                return False
            raise
        raise AssertionError(f"{self.label}: expected {self.exc}, got {result!r}")

    def describe(self) -> str:
        return f"{self.side}.Raises({self.label})"


class Shutdown(Op):
    def __init__(self, side: str, code: int = 0, reason: str = "", flags: int = 0):
        self.side = side
        self.code = code
        self.reason = reason
        self.flags = flags

    def step(self, s: Side) -> bool:
        flags = self.flags
        if not s.blocking:
            flags |= quicconn.SHUTDOWN_FLAG_NO_BLOCK
        return s.conn.shutdown(flags, self.code, self.reason)


class Sync(Op):
    """Both sides must reach this point before either goes on."""

    def __init__(self, side: str, label: str) -> None:
        self.side = side
        self.label = label

    def step(self, s: Side) -> bool:
        run = s.run
        with run.sync_lock:
            run.reached.setdefault(self.label, set()).add(s.name)
            run.sync_lock.notify_all()
            return s.peer.name in run.reached[self.label]


class Only(Op):
    """Run ``op`` only in some runs: "nonblocking" (any nonblocking run, on
    any transport), "blocking" (any blocking run) or "fakeclock" (runs on a
    FakeClock)."""

    def __init__(self, mode: str, op: Op) -> None:
        assert mode in MODES, mode
        self.side = op.side
        self.mode = mode
        self.op = op

    def step(self, s: Side) -> bool:
        run = s.run
        wanted = {
            "nonblocking": not run.blocking,
            "blocking": run.blocking,
            "fakeclock": run.fake_clock,
        }[self.mode]
        if not wanted:
            return True
        return self.op.step(s)

    def describe(self) -> str:
        return f"Only[{self.mode}]({self.op.describe()})"


# ----------------------------------------------------------------------
# builders: C.write("a", b"..."), S.accept("a"), sync("x"), ...
# ----------------------------------------------------------------------


class _Builder:
    def __init__(self, side: str) -> None:
        self.side = side

    def new_stream(self, name: str, flags: int = 0, expect_id: int | None = None) -> Op:
        return NewStream(self.side, name, flags, expect_id)

    def accept(
        self,
        name: str,
        flags: int = 0,
        expect_id: int | None = None,
        expect_type: int | None = None,
        bind_id: int | None = None,
    ) -> Op:
        return Accept(self.side, name, flags, expect_id, expect_type, bind_id)

    def write(self, name: str | None, data: bytes, conclude: bool = False) -> Op:
        return Write(self.side, name, data, conclude)

    def read_expect(self, name: str | None, data: bytes) -> Op:
        return ReadExpect(self.side, name, data)

    def expect_fin(self, name: str | None) -> Op:
        return ExpectFin(self.side, name)

    def expect_reset(self, name: str | None, code: int) -> Op:
        return ExpectReset(self.side, name, code)

    def conclude(self, name: str | None) -> Op:
        return Call(self.side, lambda s: s.stream(name).stream_conclude(), "conclude")

    def reset(self, name: str | None, code: int) -> Op:
        return Call(self.side, lambda s: s.stream(name).stream_reset(code), "reset")

    def free(self, name: str) -> Op:
        return Call(self.side, lambda s: s.stream(name).free(), f"free {name}")

    def call(self, fn: Callable[[Side], Any], label: str = "") -> Op:
        return Call(self.side, fn, label)

    def check(self, fn: Callable[[Side], Any], label: str = "") -> Op:
        return Check(self.side, fn, label)

    def eventually(self, fn: Callable[[Side], bool], label: str) -> Op:
        return Eventually(self.side, fn, label)

    def raises(
        self,
        fn: Callable[[Side], Any],
        exc: type[BaseException] | tuple[type[BaseException], ...],
        label: str,
        check: Callable[[Any], bool] | None = None,
    ) -> Op:
        return Raises(self.side, fn, exc, label, check)

    def expect_read_state(self, name: str | None, state: int) -> Op:
        return Eventually(
            self.side,
            lambda s: s.stream(name).get_stream_read_state() == state,
            f"read state of {name} == {state}",
        )

    def expect_write_state(self, name: str | None, state: int) -> Op:
        return Eventually(
            self.side,
            lambda s: s.stream(name).get_stream_write_state() == state,
            f"write state of {name} == {state}",
        )

    def expect_queue_len(self, count: int) -> Op:
        return Eventually(
            self.side,
            lambda s: s.conn.get_accept_stream_queue_len() == count,
            f"accept queue length == {count}",
        )

    def expect_closed(self, code: int | None = None, remote: bool | None = None) -> Op:
        def closed(s: Side) -> bool:
            info = s.conn.get_conn_close_info()
            if info is None:
                return False
            if code is not None:
                assert info.error_code == code, f"close code {info.error_code}: {info}"
            if remote is not None:
                assert info.is_local is not remote, f"close info {info}"
            return True

        return Eventually(self.side, closed, f"connection closed (code {code})")

    def shutdown(self, code: int = 0, reason: str = "", flags: int = 0) -> Op:
        return Shutdown(self.side, code, reason, flags)

    def set_default_stream_mode(self, mode: int) -> Op:
        return Check(
            self.side, lambda s: s.conn.set_default_stream_mode(mode), "set mode"
        )

    def set_incoming_policy(self, policy: int, code: int = 0) -> Op:
        return Check(
            self.side,
            lambda s: s.conn.set_incoming_stream_policy(policy, code),
            "set policy",
        )


C = _Builder("C")
S = _Builder("S")


def sync(label: str) -> tuple[Op, Op]:
    return (Sync("C", label), Sync("S", label))


def flatten(ops: tuple[Any, ...]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        if isinstance(op, tuple):
            out.extend(op)
        else:
            out.append(op)
    return out


# ----------------------------------------------------------------------
# where a run happens: core, blocking mode, transport
# ----------------------------------------------------------------------

#: The transports a pair can be joined by: real UDP sockets on loopback, or
#: quicconn.testing.DatagramPair (in memory).
TRANSPORTS = ("udp", "memory")


@dataclass(frozen=True)
class Setup:
    """How one run is wired: the QUIC core, blocking or not, the transport.

    A ``memory`` pair runs on a :class:`FakeClock` unless ``fake_clock``
    says otherwise; by default that is every nonblocking run, where the
    runner moves time to the next datagram or timer whenever no side can
    go on.  Blocking runs on memory use the real clock: each side blocks in
    its own thread, and a blocking wait on a fake clock jumps to the
    waiter's next timer even while the other thread is about to answer
    (after a handshake that timer is the idle timeout).  UDP is always on
    the real clock.
    """

    transport: str = "udp"
    blocking: bool = False
    core: str | None = None  # None: the context's default (QUICCONN_CORE, auto)
    fake_clock: bool | None = None

    def __post_init__(self) -> None:
        assert self.transport in TRANSPORTS, self.transport
        assert not (self.transport == "udp" and self.fake_clock), "UDP is real time"

    @property
    def uses_fake_clock(self) -> bool:
        if self.transport != "memory":
            return False
        return (not self.blocking) if self.fake_clock is None else self.fake_clock

    @property
    def label(self) -> str:
        mode = "blocking" if self.blocking else "nonblocking"
        clock = "fakeclock" if self.uses_fake_clock else "realclock"
        core = self.core or "default-core"
        return f"{core}/{mode}/{self.transport}/{clock}"


#: The runs test_streams_scripts.py names (MODES), as setups.
LEGACY_SETUPS = {
    "nonblocking": Setup("udp", blocking=False),
    "blocking": Setup("udp", blocking=True),
    "fakeclock": Setup("memory", blocking=False, fake_clock=True),
}


# ----------------------------------------------------------------------
# endpoints
# ----------------------------------------------------------------------


class ListenerPool:
    """Listeners on loopback, one per (core, server context configuration)."""

    def __init__(self, pki: CertFiles) -> None:
        self.pki = pki
        self._listeners: dict[tuple[str | None, ContextConfig], quicconn.Listener] = {}

    def get(self, config: ContextConfig, core: str | None = None) -> quicconn.Listener:
        listener = self._listeners.get((core, config))
        if listener is None:
            ctx = server_context(self.pki, config, core=core)
            listener = ctx.new_listener(
                ("127.0.0.1", 0), quicconn.LISTENER_FLAG_NO_VALIDATE
            )
            listener.set_blocking_mode(False)
            listener.listen()
            self._listeners[(core, config)] = listener
        return listener

    def close(self) -> None:
        for listener in self._listeners.values():
            listener.free()
        self._listeners.clear()


def server_context(
    pki: CertFiles, config: ContextConfig, *, core: str | None = None
) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER, core=core)
    assert core is None or ctx.core == core, (ctx.core, core)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    ctx.set_alpn_protos([ALPN])
    config.apply(ctx)
    return ctx


def client_context(
    pki: CertFiles, config: ContextConfig, *, core: str | None = None
) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.CLIENT, core=core)
    assert core is None or ctx.core == core, (ctx.core, core)
    ctx.load_verify_locations(str(pki.ca))
    ctx.set_alpn_protos([ALPN])
    config.apply(ctx)
    return ctx


def _wait_sockets(conns: list[Any], limit: float) -> None:
    timeouts = [t for c in conns if (t := c.get_event_timeout()) is not None]
    wait = min([limit, *timeouts])
    fds = [c.fileno() for c in conns]
    select.select(fds, [], [], max(0.0, wait))


@dataclass
class Pair:
    """A client connection and the listener it talks to, in one setup.

    ``server`` is the accepted connection (None until accepted).  ``env``
    is what scripts see as ``run.env``: the listener, and on a memory
    transport the :class:`DatagramPair` (``"pair"``) and, on a fake clock,
    the :class:`FakeClock` (``"clock"``).
    """

    setup: Setup
    client: quicconn.Connection
    listener: quicconn.Listener
    datagrams: DatagramPair | None = None
    clock: FakeClock | None = None
    server: quicconn.Connection | None = None
    env: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env.setdefault("listener", self.listener)
        if self.datagrams is not None:
            self.env.setdefault("pair", self.datagrams)
        if self.clock is not None:
            self.env.setdefault("clock", self.clock)

    def tick(self) -> None:
        """One ``handle_events()`` on each side (the listener's reactor
        carries the server connection)."""
        self.client.handle_events()
        self.listener.handle_events()

    def pump(self, limit: float = 0.005) -> None:
        """Let the network move once, without blocking for long.

        Fake clock: deliver what is due, else jump to the next arrival or
        timer.  Real clock: tick both sides and wait on their descriptors
        for at most ``limit`` seconds (or the nearer deadline).
        """
        if self.clock is not None:
            assert self.datagrams is not None
            _advance(self.clock, [self.client, self.listener], self.datagrams)
            return
        self.tick()
        _wait_sockets([self.client, self.listener], limit)

    def next_timeout(self) -> float | None:
        """The nearer of the two sides' ``get_event_timeout()``."""
        pending = (self.client.get_event_timeout(), self.listener.get_event_timeout())
        timeouts = [t for t in pending if t is not None]
        return min(timeouts) if timeouts else None

    def settle(self, quiet: float = 1.0, limit: float = 10.0) -> None:
        """Pump until no timer is due within ``quiet`` seconds on either side
        (handshake confirmation, ACKs and probes done; only the idle timer
        is left), or both sides are closed.  At most ``limit`` seconds of
        real time."""
        deadline = time.monotonic() + limit
        while True:
            if self.clock is None:
                self.tick()
            timeout = self.next_timeout()
            if (timeout is None or timeout > quiet) and (
                self.datagrams is None or self.datagrams.in_flight() == 0
            ):
                return
            assert time.monotonic() < deadline, f"pair did not settle ({timeout})"
            if self.clock is None:
                _wait_sockets([self.client, self.listener], quiet)
            else:
                self.pump()

    def handshake(self, client_config: ConnConfig, server_config: ConnConfig) -> None:
        """Connect nonblocking, both sides configured as given."""
        client = self.client
        client.set_blocking_mode(False)
        client_config.apply(client)
        client_done = server_done = False
        deadline = time.monotonic() + 10
        while not (client_done and server_done):
            assert time.monotonic() < deadline, "handshake did not complete"
            if self.clock is not None:
                assert self.clock.now() < 1000.0 + FAKE_TIME_LIMIT, "fake handshake"
            if not client_done:
                try:
                    client.connect()
                    client_done = True
                except quicconn.WantReadError:
                    pass
            if self.server is None:
                self.server = self.listener.accept_connection(
                    quicconn.ACCEPT_CONNECTION_NO_BLOCK
                )
                if self.server is not None:
                    self.server.set_blocking_mode(False)
                    server_config.apply(self.server)
            if self.server is not None and not server_done:
                try:
                    self.server.accept()
                    server_done = True
                except quicconn.WantReadError:
                    pass
            if not (client_done and server_done):
                self.pump(0.01)


@contextmanager
def open_pair(
    setup: Setup,
    pki: CertFiles,
    pool: ListenerPool | None,
    client_ctx: ContextConfig = ContextConfig(),
    server_ctx: ContextConfig = ContextConfig(),
) -> Iterator[Pair]:
    """A client (not yet connected) and a listening server, as ``setup`` says.

    UDP listeners come from ``pool`` (shared across runs); a memory pair
    gets its own listener, freed on exit with the client and the server.
    """
    core = setup.core
    client = quicconn.Connection(client_context(pki, client_ctx, core=core))
    sock: socket.socket | None = None
    own_listener: quicconn.Listener | None = None
    pair: Pair | None = None
    try:
        if setup.transport == "udp":
            assert pool is not None, "UDP runs need a ListenerPool"
            listener = pool.get(server_ctx, core)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            client.set_fd(sock)
            client.set1_initial_peer_addr(listener.local_address())
            pair = Pair(setup, client, listener)
        else:
            clock = FakeClock() if setup.uses_fake_clock else None
            datagrams = DatagramPair(clock)
            own_listener = listener = server_context(
                pki, server_ctx, core=core
            ).new_listener(datagrams.server, quicconn.LISTENER_FLAG_NO_VALIDATE)
            listener.set_blocking_mode(False)
            listener.listen()
            client.set_transport(datagrams.client)
            client.set1_initial_peer_addr(datagrams.SERVER_ADDRESS)
            pair = Pair(setup, client, listener, datagrams, clock)
        client.set1_host("127.0.0.1")
        yield pair
    finally:
        client.free()
        if sock is not None:
            sock.close()
        if pair is not None and pair.server is not None:
            pair.server.free()
        if own_listener is not None:
            own_listener.free()


@contextmanager
def connected_pair(
    setup: Setup, pki: CertFiles, pool: ListenerPool | None, sc: Script
) -> Iterator[Pair]:
    """A handshaken pair configured by ``sc``; both sides still nonblocking."""
    with open_pair(setup, pki, pool, sc.client_ctx, sc.server_ctx) as pair:
        pair.handshake(sc.client, sc.server)
        yield pair


@contextmanager
def loopback_pair(
    pool: ListenerPool, sc: Script
) -> Iterator[tuple[quicconn.Connection, quicconn.Connection, dict[str, Any]]]:
    """A handshaken client/server connection pair over real UDP sockets."""
    with connected_pair(LEGACY_SETUPS["nonblocking"], pool.pki, pool, sc) as pair:
        assert pair.server is not None
        yield pair.client, pair.server, pair.env


@contextmanager
def fakeclock_pair(
    pki: CertFiles, sc: Script
) -> Iterator[tuple[quicconn.Connection, quicconn.Connection, dict[str, Any]]]:
    """A handshaken pair over a DatagramPair with a FakeClock."""
    with connected_pair(LEGACY_SETUPS["fakeclock"], pki, None, sc) as pair:
        assert pair.server is not None
        yield pair.client, pair.server, pair.env


def _advance(clock: FakeClock, conns: list[Any], pair: DatagramPair) -> None:
    """Move fake time to the next event: a datagram arrival or a timer.

    Datagrams already due are processed without moving time, so that the
    operations get a chance to react before any timer fires.
    """
    now = clock.now()
    arrivals = [
        t
        for t in (pair.client.next_arrival(), pair.server.next_arrival())
        if t is not None
    ]
    if any(t <= now for t in arrivals):
        for conn in conns:
            conn.handle_events()
        return
    candidates = list(arrivals)
    for conn in conns:
        timeout = conn.get_event_timeout()
        if timeout is not None:
            candidates.append(now + timeout)
    if not candidates:
        raise AssertionError("fake-clock run is stuck: nothing in flight, no timer")
    clock.advance_to(min(candidates))
    for conn in conns:
        conn.handle_events()


# ----------------------------------------------------------------------
# runners
# ----------------------------------------------------------------------


@dataclass
class Outcome:
    mode: str
    steps: int = 0
    notes: list[str] = field(default_factory=list)


def _split(sc: Script, run: Run) -> None:
    ops = flatten(sc.ops)
    for side in run.sides.values():
        side.ops = [op for op in ops if op.side == side.name]


def _where(run: Run) -> str:
    parts = []
    for side in run.sides.values():
        if side.index < len(side.ops):
            parts.append(
                f"{side.name} at op {side.index}: {side.ops[side.index].describe()}"
            )
        else:
            parts.append(f"{side.name} done")
    return "; ".join(parts)


def run_script(
    sc: Script, mode: str, pool: ListenerPool | None, pki: CertFiles
) -> Outcome:
    """Run ``sc`` in one of the :data:`MODES` (the default core)."""
    return run_setup(sc, LEGACY_SETUPS[mode], pool, pki, label=mode)


def run_setup(
    sc: Script,
    setup: Setup,
    pool: ListenerPool | None,
    pki: CertFiles,
    label: str | None = None,
) -> Outcome:
    """Handshake a pair as ``setup`` says, then run ``sc`` over it."""
    with connected_pair(setup, pki, pool, sc) as pair:
        return run_on(sc, pair, label=label)


def run_on(sc: Script, pair: Pair, label: str | None = None) -> Outcome:
    """Run ``sc`` over a handshaken pair, blocking or not as its setup says."""
    assert pair.server is not None, "run_on needs a handshaken pair"
    if pair.setup.blocking:
        return _run_threads(sc, pair, label or pair.setup.label)
    return _run_cooperative(sc, pair, label or pair.setup.label)


def _run_cooperative(sc: Script, pair: Pair, label: str) -> Outcome:
    assert pair.server is not None
    run = Run(label, pair.env, blocking=False, fake_clock=pair.clock is not None)
    run.sides = {"C": Side("C", pair.client, run), "S": Side("S", pair.server, run)}
    _split(sc, run)
    outcome = Outcome(label)
    clock = pair.clock
    real_deadline = time.monotonic() + SCRIPT_TIMEOUT
    fake_deadline = clock.now() + FAKE_TIME_LIMIT if clock is not None else None
    while True:
        progressed = False
        for side in run.sides.values():
            while side.index < len(side.ops):
                if not side.ops[side.index].step(side):
                    break
                side.index += 1
                outcome.steps += 1
                progressed = True
        if all(side.index >= len(side.ops) for side in run.sides.values()):
            return outcome
        if time.monotonic() > real_deadline or (
            clock is not None
            and fake_deadline is not None
            and clock.now() > fake_deadline
        ):
            raise AssertionError(f"[{label}] script {sc.name} stuck: {_where(run)}")
        if not progressed:
            pair.pump()


def _run_threads(sc: Script, pair: Pair, label: str) -> Outcome:
    assert pair.server is not None
    run = Run(label, pair.env, blocking=True, fake_clock=pair.clock is not None)
    run.sides = {"C": Side("C", pair.client, run), "S": Side("S", pair.server, run)}
    for side in run.sides.values():
        side.blocking = True
        side.conn.set_blocking_mode(True)

    def pump(side: Side | None) -> None:
        assert side is not None
        if run.failed.is_set():
            raise AssertionError("the other side failed")
        side.conn.handle_events()
        _wait_sockets([side.conn], 0.005)

    run.wait = pump
    _split(sc, run)
    errors: list[BaseException] = []
    outcome = Outcome(label)

    def drive(side: Side) -> None:
        try:
            while side.index < len(side.ops):
                op = side.ops[side.index]
                while not op.step(side):
                    side.pump()
                side.index += 1
            side.done = True
            while not side.peer.done and not run.failed.is_set():
                side.pump()
        except BaseException as exc:
            errors.append(exc)
            run.failed.set()
            _abort(run)

    threads = [
        threading.Thread(target=drive, args=(side,), name=f"script-{side.name}")
        for side in run.sides.values()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + SCRIPT_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        where = _where(run)
        run.failed.set()
        _abort(run)
        for thread in threads:
            thread.join(10)
        raise AssertionError(f"[{label}] script {sc.name} stuck: {where}")
    if errors:
        raise AssertionError(f"[{label}] script {sc.name}: {_where(run)}") from errors[
            0
        ]
    return outcome


def _abort(run: Run) -> None:
    """Close both connections at once so that a side blocked in a call wakes."""
    for side in run.sides.values():
        with suppress(Exception):
            side.conn.shutdown(
                quicconn.SHUTDOWN_FLAG_RAPID
                | quicconn.SHUTDOWN_FLAG_NO_STREAM_FLUSH
                | quicconn.SHUTDOWN_FLAG_NO_BLOCK,
                0x99,
                "test harness abort",
            )
