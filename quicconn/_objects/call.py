"""The one call discipline of every public call of every object.

OpenSSL's QUIC objects (and quicconn's DTLS objects with them) complete a
call the same way:

1. try the operation;
2. if it cannot finish, and event handling is implicit, run the machinery
   once (a reactor tick, ``SSL_handle_events``) and try again;
3. nonblocking: raise ``WantReadError`` / ``WantWriteError`` (or whatever the
   caller says the call is waiting for);
4. blocking: sleep on the object's driver until the operation can finish
   (and, if the call has a timer of its own, at least until its deadline).

:func:`run_call` is that loop, written once; :func:`poll_once` is its
nonblocking half, for calls that report "not yet" by returning (OpenSSL's
``SSL_accept_stream`` returning NULL, ``SSL_shutdown`` returning 0)
instead of raising.  :func:`api` is the wrapper every public method runs
in: it takes the object's lock, turns a QUIC condition into its exception
class (``errors.translate``) and records the ``SSL_get_error`` code of the
call's outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from .._constants import ERROR_SSL
from .._errors import Error
from .._quic.conditions import QuicFailure
from .errors import translate

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["CallTarget", "Driver", "api", "poll_once", "run_call"]


class Driver(Protocol):
    """What a call drives when it cannot finish: a reactor or a DTLS router."""

    def tick(self) -> None:
        """Process what is due now; never blocks (``SSL_handle_events``)."""

    def block_until(
        self,
        predicate: Callable[[], bool],
        *,
        wake_at: Callable[[], float | None] | None = None,
    ) -> bool:
        """Wait, making progress, until ``predicate()``; False if stopped.

        ``wake_at()``, if given, is an instant on the driver's clock (or
        None) at which to test ``predicate()`` again even if nothing else
        happened: a timer the driver does not own.
        """


class CallTarget(Protocol):
    """An object whose public methods run under :func:`api`."""

    _last_error: int

    def _call_lock(self) -> AbstractContextManager[object]:
        """The lock of the machinery under the object (a no-op without one)."""


C = TypeVar("C", bound=CallTarget)


def api(
    method: Callable[Concatenate[C, P], T],
) -> Callable[Concatenate[C, P], T]:
    """Run a public method under its object's lock; record ``get_error()``.

    The recorded code is the ``.code`` of the quicconn error the call raised
    (OpenSSL's ``SSL_get_error``), ``ERROR_SSL`` after misuse (``ValueError``
    or ``TypeError``, where OpenSSL fails the call with SSL_ERROR_SSL), or 0
    after a success.
    """

    @functools.wraps(method)
    def wrapper(self: C, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            with self._call_lock():
                result = method(self, *args, **kwargs)
        except QuicFailure as failure:
            error = translate(failure)
            self._last_error = error.code
            try:
                raise error from None
            finally:
                # The traceback holds this frame: without the del, the error
                # and its frames (with their memoryviews of the caller's
                # buffer, which then cannot be resized) would live on in a
                # reference cycle until the garbage collector ran.
                del error
        except Error as exc:
            self._last_error = exc.code
            raise
        except (ValueError, TypeError):
            # Misuse: OpenSSL raises SSL_ERROR_SSL for it (QUIC_RAISE_NON_NORMAL_ERROR).
            self._last_error = ERROR_SSL
            raise
        self._last_error = 0
        return result

    return wrapper  # type: ignore[return-value]  # functools.wraps typing


def poll_once(
    attempt: Callable[[], T | None], driver: Driver, *, implicit_events: bool
) -> T | None:
    """Try ``attempt``; if it cannot finish, tick once (unless event
    handling is explicit) and try again.  None if it still cannot."""
    result = attempt()
    if result is None and implicit_events:
        driver.tick()
        result = attempt()
    return result


def run_call(
    attempt: Callable[[], T | None],
    driver: Driver,
    *,
    blocking: bool,
    implicit_events: bool,
    would_block: Callable[[], Exception],
    stopped: Callable[[], Exception],
    wake_at: Callable[[], float | None] | None = None,
) -> T:
    """Complete ``attempt`` under the call discipline (module docstring).

    ``attempt`` returns None while it cannot finish, its result once it
    did, and raises for a definite failure.  ``implicit_events`` is False in
    OpenSSL's explicit event-handling mode: a nonblocking call then never
    ticks.  ``would_block`` makes the exception of a nonblocking call that
    cannot finish; ``stopped`` the one of a blocking call whose driver was
    shut down while it waited.

    ``wake_at`` is for a call whose object keeps a timer the driver does not
    own (a DTLS connection's retransmission timer; a DTLS router keeps no
    timers): a blocking wait also wakes at ``wake_at()`` (an instant on the
    driver's clock, or None) and tries again; ``attempt`` handles the timer
    when it is due.
    """
    if not blocking:
        result = poll_once(attempt, driver, implicit_events=implicit_events)
        if result is None:
            raise would_block()
        return result
    result = attempt()
    if result is not None:
        return result
    box: list[T] = []

    def ready() -> bool:
        value = attempt()
        if value is None:
            return False
        box.append(value)
        return True

    if wake_at is None:  # drivers written before wake_at existed keep working
        finished = driver.block_until(ready)
    else:
        finished = driver.block_until(ready, wake_at=wake_at)
    if not finished or not box:
        raise stopped()
    return box[0]
