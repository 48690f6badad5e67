"""A connection's MODE_ASYNC surface (OpenSSL's async calls on an SSL object).

A connection in MODE_ASYNC with an engine runs its core's packet
processing in async jobs until the handshake completes.  A job that needs
the private key pauses while the engine signs; the call that finds it
paused raises ``WantAsyncError`` (nonblocking) or sleeps until the engine
finishes (blocking).  The next tick after the completion resumes it.  The
machinery is ``quicconn/_asyncjob/``; the channel owns the job host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .._asyncjob.engine import AsyncEngine
from .._constants import ASYNC_STATUS_UNSUPPORTED
from .binding import Binding

T = TypeVar("T")

#: ``callback(ssl_object, arg)``, as SSL_set_async_callback's.
AsyncCallback = Callable[[Any, Any], Any]


class AsyncSurface:
    """Mixin: the MODE_ASYNC calls of a connection."""

    _binding: Binding
    _async_engine: AsyncEngine | None
    _async_callback: AsyncCallback | None
    _async_callback_arg: Any

    def _context_engine(self) -> AsyncEngine | None:
        raise NotImplementedError

    def set_async_engine(self, engine: AsyncEngine | None) -> None:
        """Offload this connection's private-key operations to ``engine``.

        quicconn's counterpart of using an async-capable ENGINE for the
        key; overrides the context's engine (Context.set_async_engine).
        Takes effect when the handshake starts, with MODE_ASYNC set.
        """
        if engine is not None and not isinstance(engine, AsyncEngine):
            raise TypeError(f"expected a quicconn.AsyncEngine, not {engine!r}")
        self._async_engine = engine

    def get_async_engine(self) -> AsyncEngine | None:
        """The engine this connection uses (its own, else the context's)."""
        return self._async_engine or self._context_engine()

    def set_async_callback(self, callback: AsyncCallback | None) -> None:
        """Call ``callback(conn, arg)`` when a paused job can resume.

        Mirrors SSL_set_async_callback; the context's callback is the
        default.  It runs once per engine completion, in the engine's
        thread: like OpenSSL's, it must be small and nonblocking and should
        only schedule the retry, not call back into the connection.
        """
        if callback is not None and not callable(callback):
            raise TypeError("the async callback must be callable")
        self._async_callback = callback

    def set_async_callback_arg(self, arg: Any) -> None:
        """The ``arg`` given to the async callback (SSL_set_async_callback_arg)."""
        self._async_callback_arg = arg

    def _async_wake_app(self) -> None:
        callback = self._async_callback
        if callback is not None:
            callback(self, self._async_callback_arg)

    def waiting_for_async(self) -> bool:
        """Whether a job is paused for an engine (SSL_waiting_for_async)."""
        host = self._binding.channel.async_host
        return host is not None and host.waiting

    def get_all_async_fds(self) -> list[int]:
        """Descriptors that poll readable when the engine is done.

        Mirrors SSL_get_all_async_fds: wait for "read ready" with
        select/poll and do not read them; then retry the call that raised
        WantAsyncError.  Empty until an engine first paused a job.
        """
        host = self._binding.channel.async_host
        if host is None:
            return []
        with self._binding.lock():
            return host.wait_ctx.all_fds()

    def get_changed_async_fds(self) -> tuple[list[int], list[int]]:
        """``(added, deleted)`` wait fds since the last WANT_ASYNC.

        Mirrors SSL_get_changed_async_fds (two lists instead of four
        out-parameters).
        """
        host = self._binding.channel.async_host
        if host is None:
            return [], []
        with self._binding.lock():
            return host.wait_ctx.changed_fds()

    def get_async_status(self) -> int:
        """The engine's status: ``ASYNC_STATUS_*`` (SSL_get_async_status).

        UNSUPPORTED until an engine took an operation; then OK (submitted),
        EAGAIN (the engine was busy: retry, and the job submits again) or
        ERR (the engine failed: the handshake fails).
        """
        host = self._binding.channel.async_host
        return ASYNC_STATUS_UNSUPPORTED if host is None else host.wait_ctx.status


__all__ = ["AsyncCallback", "AsyncSurface"]
