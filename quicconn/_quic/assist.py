"""The assist thread of a thread-assisted domain (OpenSSL's TACM).

``OSSL_QUIC_client_thread_method()`` and domains made with
``SSL_DOMAIN_FLAG_THREAD_ASSISTED`` have a background thread that handles
timer events and network I/O while the application makes no call: ACKs go
out, lost packets are retransmitted, flow control moves, incoming data is
processed (``poll()`` with ``POLL_FLAG_NO_HANDLE_EVENTS`` then sees it), and
keep-alive PINGs hold the connection open past its idle timeout.

The assist thread is nothing but a thread blocked in a call that never
completes: ``Reactor.block_until`` with a predicate that only turns true
when the reactor closes.  It therefore meets the application's threads in
the reactor's :class:`~quicconn._io.waiter.Waiter`, as any blocking call
does: one thread sleeps in ``poll(2)`` on the socket with the lock
released, the others on a condition; whoever ticks wakes the rest; a call
that changes the deadline (a write arming a retransmission timer) wakes the
sleeping thread, which sleeps again until the new deadline.  Every public
call takes the reactor lock, so each is safe from any thread.  Idle, the
thread wakes only at timer deadlines: no busy waiting.

One thread per socket (quicconn's reactors are per socket; OpenSSL has one
per domain).  It ends when the reactor closes, that is when the last object
on the socket is freed.
"""

from __future__ import annotations

import logging
import threading
import weakref

from .._io.clock import Clock, FakeClock
from .reactor import Reactor

logger = logging.getLogger("quicconn.assist")

__all__ = ["AssistThread", "assist_of", "check_real_clock", "start_assist"]


class AssistThread:
    """Ticks one reactor at its deadlines and on readable datagrams."""

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.thread = threading.Thread(
            target=self._run, name="quicconn-assist", daemon=True
        )
        #: Ticks made (for tests and diagnostics).
        self.ticks = 0

    def _run(self) -> None:
        reactor = self.reactor

        def closed() -> bool:
            self.ticks += 1
            return reactor.closed

        try:
            with reactor.lock:
                reactor.block_until(closed)
        except Exception:  # pragma: no cover - a bug, but never a silent hang
            logger.exception("the assist thread failed; timers now need calls")


#: The assist thread of each reactor that has one.
_running: weakref.WeakKeyDictionary[Reactor, AssistThread] = weakref.WeakKeyDictionary()
_running_lock = threading.Lock()


def check_real_clock(clock: Clock) -> None:
    """ValueError for a FakeClock: an assist thread cannot run on one."""
    if isinstance(clock, FakeClock):
        raise ValueError(
            "thread-assisted mode needs a real clock: on a FakeClock the assist "
            "thread's waits would move the test's clock by themselves"
        )


def start_assist(reactor: Reactor) -> AssistThread:
    """Give ``reactor`` an assist thread (once); it runs until it closes."""
    check_real_clock(reactor.clock)
    with _running_lock:
        assist = _running.get(reactor)
        if assist is None:
            assist = _running[reactor] = AssistThread(reactor)
            assist.thread.start()
    return assist


def assist_of(reactor: Reactor) -> AssistThread | None:
    """The assist thread of ``reactor``, if it has one."""
    with _running_lock:
        return _running.get(reactor)
