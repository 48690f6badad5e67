"""``Binding``: what a connection's OpenSSL-shaped objects share (OpenSSL's QCTX).

A connection and every stream object of it reach their channel and reactor
through one binding, which also holds the connection-wide call settings:
blocking mode, event-handling mode, mode bits.  :meth:`Binding.run` is the
call discipline of ``call.py`` with the reactor as the driver, and the
exceptions of a call that would block or whose reactor went away.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from .._constants import (
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_EVENT_HANDLING_MODE_INHERIT,
)
from .._quic.channel import Channel, EarlyData
from .._quic.conditions import Condition, QuicFailure
from .._quic.reactor import Reactor
from .call import poll_once, run_call

T = TypeVar("T")

_WOULD_BLOCK = {
    Condition.WANT_READ: "the operation would block until more data arrives or a "
    "timer fires",
    Condition.WANT_WRITE: "the operation would block until the peer grants buffer "
    "space",
    Condition.ASYNC_PENDING: "an async private-key operation is in flight: wait for "
    "get_all_async_fds() to poll readable (or the async callback), then retry the "
    "call",
    Condition.ASYNC_NO_JOB: "no async job is free (async_init_thread limit): retry "
    "once a paused connection has resumed",
}


class Binding:
    """One connection's channel, reactor and call settings."""

    def __init__(
        self, channel: Channel, mode: int, start_handshake: Callable[[], None]
    ) -> None:
        self.channel = channel
        self.blocking = True
        #: OpenSSL reads INHERIT (0) until set; INHERIT means implicit.
        self.event_mode = VALUE_EVENT_HANDLING_MODE_INHERIT
        self.mode = mode
        self.freed = False
        #: Starts a client handshake with the connection's names and session.
        self.start_handshake = start_handshake

    @property
    def reactor(self) -> Reactor | None:
        return self.channel.reactor

    def require_reactor(self) -> Reactor:
        reactor = self.channel.reactor
        if reactor is None:
            self.raise_if_freed()
            raise ValueError("no transport: call set_fd() or set_transport() first")
        return reactor

    def raise_if_freed(self) -> None:
        if self.freed:
            raise ValueError("the connection was freed (SSL_free); it is unusable")

    def lock(self) -> AbstractContextManager[object]:
        """The reactor lock, or nothing before a transport is attached."""
        reactor = self.channel.reactor
        if reactor is None:
            self.raise_if_freed()
            return contextlib.nullcontext()
        return reactor.lock

    def implicit_events(
        self, event_mode: int = VALUE_EVENT_HANDLING_MODE_INHERIT
    ) -> bool:
        """Whether a nonblocking call may tick (not in explicit mode)."""
        if event_mode == VALUE_EVENT_HANDLING_MODE_INHERIT:
            event_mode = self.event_mode
        return event_mode != VALUE_EVENT_HANDLING_MODE_EXPLICIT

    # -- the call discipline ------------------------------------------------

    def run(
        self,
        attempt: Callable[[], T | None],
        want: Condition,
        *,
        blocking: bool | None = None,
        event_mode: int = VALUE_EVENT_HANDLING_MODE_INHERIT,
    ) -> T:
        """Complete ``attempt``: tick and retry, then ``want`` or a wait."""
        return run_call(
            attempt,
            self.require_reactor(),
            blocking=self.blocking if blocking is None else blocking,
            implicit_events=self.implicit_events(event_mode),
            would_block=lambda: self.would_block(want),
            stopped=self._stopped,
        )

    def poll_once(
        self,
        attempt: Callable[[], T | None],
        *,
        event_mode: int = VALUE_EVENT_HANDLING_MODE_INHERIT,
    ) -> T | None:
        """Try ``attempt``, ticking once unless event handling is explicit."""
        return poll_once(
            attempt,
            self.require_reactor(),
            implicit_events=self.implicit_events(event_mode),
        )

    def would_block(self, want: Condition) -> QuicFailure:
        """The failure of a nonblocking call: an async hold-up, else ``want``."""
        condition = self.channel.async_condition() or want
        return QuicFailure(condition, _WOULD_BLOCK[condition])

    def _stopped(self) -> Exception:
        if self.freed:
            return ValueError("the connection was freed while a call was waiting")
        return QuicFailure(
            Condition.SOCKET_FAILED,
            "the connection's transport was closed while waiting",
        )

    # -- the implicit handshake of stream I/O -------------------------------

    def ready_for_stream_io(self) -> None:
        """Run the handshake first, as SSL_read/SSL_write do.

        A client resuming a session that allows early data may use streams
        at once: what it writes before the handshake completes goes as 0-RTT.
        """
        channel = self.channel
        if not channel.started:
            self.start_handshake()
        core = channel.require_core()
        if core.handshake_complete:
            return
        if channel.early_data_possible():
            channel.raise_if_failed()
            channel.early_data = EarlyData.SENT
            return
        self.run(channel.handshake_done, Condition.WANT_READ)


__all__ = ["Binding"]
