"""The trio driver: a :class:`~quicconn._objects.loop_driver.LoopDriver`
run by one system task per socket.

The task waits for the socket to be readable (writable while
``net_write_desired()``) inside a cancel scope whose deadline is the
reactor's; a call that moved the deadline updates the scope's deadline,
and a call that needs a dispatch cancels the scope.  Tasks waiting on a
connection park in a :class:`trio.lowlevel.ParkingLot` per connection.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import TypeVar

import trio

from .._errors import WantReadError, WantWriteError
from .._objects.loop_driver import LoopDriver, Wakeup, timer_delay
from .._quic.reactor import Reactor

logger = logging.getLogger("quicconn.trio")

T = TypeVar("T")

_WANT = (WantReadError, WantWriteError)


class TrioDriver(LoopDriver):
    """Drives one reactor from one ``trio.run``."""

    def __init__(self, reactor: Reactor) -> None:
        super().__init__(reactor)
        self.token = trio.lowlevel.current_trio_token()
        self._scope: trio.CancelScope | None = None
        self._deadline = math.inf
        self._want_write = False
        self._requested = False
        self._lots: dict[object, tuple[trio.lowlevel.ParkingLot, Wakeup]] = {}
        trio.lowlevel.spawn_system_task(
            self._run, name=f"quicconn driver (fd {self.fileno})"
        )
        self.touch()

    # -- LoopDriver ------------------------------------------------------------

    def _request_dispatch(self) -> None:
        self._requested = True
        scope = self._scope
        if scope is not None:
            scope.cancel()

    def _rearm(self, timeout: float | None, want_write: bool) -> None:
        if timeout is None:
            self._deadline = math.inf
        else:
            self._deadline = trio.current_time() + timer_delay(timeout)
        scope = self._scope
        if want_write != self._want_write:
            self._want_write = want_write
            if scope is not None:
                scope.cancel()  # wait for the other direction
        elif scope is not None:
            scope.deadline = self._deadline

    def _unwatch(self) -> None:
        # Wake the driver task from its wait before the descriptor closes
        # (trio requires it: the number could be reused at once).
        with contextlib.suppress(RuntimeError):  # no trio run: nobody waits
            trio.lowlevel.notify_closing(self.fileno)

    async def _run(self) -> None:
        fileno = self.fileno
        try:
            while not self.closed:
                if self._requested:
                    self._requested = False
                    self.dispatch()
                    continue
                with trio.CancelScope(deadline=self._deadline) as scope:
                    self._scope = scope
                    try:
                        if self._want_write:
                            await trio.lowlevel.wait_writable(fileno)
                        else:
                            await trio.lowlevel.wait_readable(fileno)
                    except trio.ClosedResourceError:
                        pass  # the reactor closed (notify_closing)
                self._scope = None
                if self.closed:
                    break
                if scope.cancelled_caught and self._requested:
                    continue  # a dispatch was asked for: no tick needed
                self.handle_events()
            self.dispatch()  # closed: wake every waiting task
        except Exception:  # pragma: no cover - a bug; never crash trio.run
            logger.exception("the quicconn trio driver failed")

    # -- what tasks use ----------------------------------------------------------

    def _unpark(self, key: object) -> None:
        entry = self._lots.pop(key, None)
        if entry is not None:
            entry[0].unpark_all()

    async def wait(self, key: object, timeout: float | None = None) -> bool:
        """Wait until the connection ``key`` moves on (or the socket
        closes): True; or until ``timeout`` seconds passed: False."""
        entry = self._lots.get(key)
        if entry is None:

            def wakeup() -> None:
                self._unpark(key)

            entry = self._lots[key] = (trio.lowlevel.ParkingLot(), wakeup)
            self.add_wakeup(key, wakeup)
        lot, wakeup = entry
        woken = False
        try:
            if timeout is None:
                await lot.park()
                woken = True
            else:
                with trio.move_on_after(timeout):
                    await lot.park()
                    woken = True
        finally:
            if not woken and not lot and self._lots.get(key) is entry:
                # Cancelled or timed out, and nobody else waits: forget the
                # wake-up (a key such as a finished request may never move).
                del self._lots[key]
                self.remove_wakeup(key, wakeup)
        return woken

    async def complete(
        self, key: Callable[[], object], attempt: Callable[[], T | None]
    ) -> T:
        """Run a nonblocking ``attempt`` until it neither raises ``Want*``
        nor returns None, waiting for the connection ``key()`` in between.

        A checkpoint either way, as trio expects: cancellable before the
        attempt (nothing taken yet) and while waiting, shielded after it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                result = attempt()
            except _WANT:
                result = None
            except Exception:
                if not waited:  # a failure is a checkpoint too
                    await trio.lowlevel.cancel_shielded_checkpoint()
                raise
            if result is not None:
                self.touch()
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return result
            await self.wait(key())
            waited = True


def driver_for(reactor: Reactor | None) -> TrioDriver:
    """The current trio run's driver of ``reactor``, made on first use."""
    if reactor is None:
        raise ValueError("the object has no transport yet: call set_fd() first")
    token = trio.lowlevel.current_trio_token()
    observer = reactor.observer
    if isinstance(observer, TrioDriver):
        if observer.token is token and not observer.closed:
            return observer
        if observer.token is not token:
            reactor.observer = None  # left over from an earlier trio.run
    if reactor.closed:
        raise ValueError("the socket was closed")
    return TrioDriver(reactor)


__all__ = ["TrioDriver", "driver_for"]
