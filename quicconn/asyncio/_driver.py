"""The asyncio driver: a :class:`~quicconn._objects.loop_driver.LoopDriver`
on an asyncio event loop (the default loop or uvloop).

The reactor's descriptor is registered once with ``loop.add_reader``; a
writer is added only while ``net_write_desired()``; one ``TimerHandle`` is
re-armed from the reactor's deadline after every tick.  Tasks wait on
futures that the driver resolves when their connection moves on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from .._errors import WantReadError, WantWriteError
from .._objects.loop_driver import TIMER_GRAIN, LoopDriver, timer_delay
from .._quic.reactor import Reactor

T = TypeVar("T")

_WANT = (WantReadError, WantWriteError)


class AsyncioDriver(LoopDriver):
    """Drives one reactor from one asyncio loop."""

    def __init__(self, reactor: Reactor, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reactor)
        self.loop = loop
        self._thread = threading.get_ident()
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        loop.add_reader(self.fileno, self.handle_events)
        self.touch()

    def _request_dispatch(self) -> None:
        if self.loop.is_closed():
            return  # freed after its loop ended: nothing waits any more
        if threading.get_ident() == self._thread:
            self.loop.call_soon(self.dispatch)
        else:  # a call made from another thread (allowed, if unusual)
            self.loop.call_soon_threadsafe(self.dispatch)

    def _rearm(self, timeout: float | None, want_write: bool) -> None:
        loop = self.loop
        if want_write != self._writing:
            self._writing = want_write
            if want_write:
                loop.add_writer(self.fileno, self.handle_events)
            else:
                loop.remove_writer(self.fileno)
        if timeout is None:
            return  # an armed timer fires once for nothing; none is re-armed
        at = loop.time() + timer_delay(timeout)
        timer = self._timer
        if timer is not None:
            if self._timer_at <= at + TIMER_GRAIN / 2:
                return  # armed as early or earlier: it fires, then re-arms
            timer.cancel()
        self._timer = loop.call_at(at, self._on_timer)
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = None
        self.handle_events()

    def _unwatch(self) -> None:
        loop = self.loop
        if loop.is_closed():
            return
        loop.remove_reader(self.fileno)
        if self._writing:
            loop.remove_writer(self.fileno)
            self._writing = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- what tasks use -------------------------------------------------------

    async def wait(self, key: object, timeout: float | None = None) -> bool:
        """Wait until the connection ``key`` moves on (or the socket
        closes): True; or until ``timeout`` seconds passed: False."""
        future: asyncio.Future[bool] = self.loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(True)

        def expire() -> None:
            if not future.done():
                future.set_result(False)

        self.add_wakeup(key, wake)
        timer = None if timeout is None else self.loop.call_later(timeout, expire)
        try:
            woken = await future
        except asyncio.CancelledError:
            self.remove_wakeup(key, wake)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not woken:
            self.remove_wakeup(key, wake)
        return woken

    async def complete(
        self, key: Callable[[], object], attempt: Callable[[], T | None]
    ) -> T:
        """Run a nonblocking ``attempt`` until it neither raises ``Want*``
        nor returns None (OpenSSL's "not yet" of SSL_accept_stream and
        SSL_shutdown), waiting for the connection ``key()`` in between."""
        while True:
            try:
                result = attempt()
            except _WANT:
                result = None
            if result is not None:
                self.touch()
                return result
            await self.wait(key())


def driver_for(reactor: Reactor | None) -> AsyncioDriver:
    """The running loop's driver of ``reactor``, made on first use."""
    if reactor is None:
        raise ValueError("the object has no transport yet: call set_fd() first")
    loop = asyncio.get_running_loop()
    observer = reactor.observer
    if isinstance(observer, AsyncioDriver) and not observer.closed:
        if observer.loop is not loop:
            raise ValueError(
                "this socket is driven by another asyncio loop; use each "
                "connection from the loop that opened it"
            )
        return observer
    if reactor.closed:
        raise ValueError("the socket was closed")
    return AsyncioDriver(reactor, loop)


__all__ = ["AsyncioDriver", "driver_for"]
