"""A connection's numeric values: ``SSL_get_value_uint`` / ``SSL_set_value_uint``.

Each value is a ``(class, id)`` pair with OpenSSL's integer values: the
idle timeout (milliseconds, in the FEATURE_REQUEST, FEATURE_PEER_REQUEST
and FEATURE_NEGOTIATED classes), the streams each side may still open, the
event-handling mode, and the default stream's write-buffer figures.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from .._constants import (
    VALUE_CLASS_FEATURE_NEGOTIATED,
    VALUE_CLASS_FEATURE_PEER_REQUEST,
    VALUE_CLASS_FEATURE_REQUEST,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_EVENT_HANDLING_MODE_IMPLICIT,
    VALUE_EVENT_HANDLING_MODE_INHERIT,
    VALUE_QUIC_IDLE_TIMEOUT,
    VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL,
    VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL,
    VALUE_STREAM_WRITE_BUF_AVAIL,
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
)
from .binding import Binding
from .call import api
from .stream import StreamHandle

#: Stream-availability values: (unidirectional?, local?).
_STREAMS_AVAILABLE = {
    VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL: (False, True),
    VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL: (True, True),
    VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL: (False, False),
    VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL: (True, False),
}
_WRITE_BUFFER = (
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
    VALUE_STREAM_WRITE_BUF_AVAIL,
)


def get_value(
    binding: Binding, default: StreamHandle, value_class: int, value_id: int
) -> int:
    """SSL_get_value_uint on a connection."""
    if value_id == VALUE_QUIC_IDLE_TIMEOUT:
        return _idle_timeout(binding, value_class)
    if value_class != VALUE_CLASS_GENERIC:
        raise ValueError(f"value {value_id} has no class {value_class}")
    if value_id == VALUE_EVENT_HANDLING_MODE:
        return binding.event_mode
    if value_id in _STREAMS_AVAILABLE:
        uni, local = _STREAMS_AVAILABLE[value_id]
        core = binding.channel.require_core()
        if local:
            return core.local_streams_available(uni)
        return core.remote_streams_available(uni)
    if value_id in _WRITE_BUFFER:
        return default.write_buffer_value(value_id)
    raise ValueError(f"unknown value id {value_id}")


def _idle_timeout(binding: Binding, value_class: int) -> int:
    channel = binding.channel
    if value_class == VALUE_CLASS_FEATURE_REQUEST:
        return round(channel.settings.idle_timeout * 1000)
    core = channel.core
    if value_class == VALUE_CLASS_FEATURE_PEER_REQUEST:
        peer = core.peer_idle_timeout() if core else None
        if peer is None:
            raise ValueError("the peer's idle timeout is known after the handshake")
        return round(peer * 1000)
    if value_class == VALUE_CLASS_FEATURE_NEGOTIATED:
        if core is None or not core.handshake_complete:
            raise ValueError("the idle timeout is negotiated during the handshake")
        value = core.negotiated_idle_timeout()
        return 0 if value is None else round(value * 1000)
    raise ValueError(f"the idle timeout has no value class {value_class}")


def set_value(binding: Binding, value_class: int, value_id: int, value: int) -> None:
    """SSL_set_value_uint on a connection.

    The idle timeout request (milliseconds, FEATURE_REQUEST) can only be
    changed before the handshake starts, as in OpenSSL.
    """
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"values are non-negative integers, not {value!r}")
    if value_id == VALUE_QUIC_IDLE_TIMEOUT:
        if value_class != VALUE_CLASS_FEATURE_REQUEST:
            raise ValueError("only the FEATURE_REQUEST idle timeout can be set")
        if binding.channel.started:
            raise ValueError("the idle timeout can only be set before the handshake")
        binding.channel.settings.idle_timeout = value / 1000.0
        return
    if value_class == VALUE_CLASS_GENERIC and value_id == VALUE_EVENT_HANDLING_MODE:
        if value not in (
            VALUE_EVENT_HANDLING_MODE_INHERIT,
            VALUE_EVENT_HANDLING_MODE_IMPLICIT,
            VALUE_EVENT_HANDLING_MODE_EXPLICIT,
        ):
            raise ValueError(f"unknown event handling mode {value}")
        binding.event_mode = value
        return
    raise ValueError(f"value {value_id} (class {value_class}) cannot be set")


class ValueSurface:
    """Mixin: a connection's values and mode bits."""

    _binding: Binding
    _default: StreamHandle
    _last_error: int

    def _call_lock(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    @api
    def get_value_uint(self, value_class: int, value_id: int) -> int:
        """Read a numeric setting (SSL_get_value_uint): the idle timeout (ms;
        classes FEATURE_REQUEST, FEATURE_PEER_REQUEST, FEATURE_NEGOTIATED),
        stream availability, the event-handling mode, write-buffer figures."""
        return get_value(self._binding, self._default, value_class, value_id)

    @api
    def set_value_uint(self, value_class: int, value_id: int, value: int) -> None:
        """Change a numeric setting (SSL_set_value_uint): the idle timeout
        request (before the handshake) or the event-handling mode."""
        set_value(self._binding, value_class, value_id, value)

    def set_mode(self, mode: int) -> int:
        """Add mode bits for this connection (SSL_set_mode)."""
        self._binding.mode |= mode
        return self._binding.mode

    def clear_mode(self, mode: int) -> int:
        """Remove mode bits (SSL_clear_mode)."""
        self._binding.mode &= ~mode
        return self._binding.mode

    def get_mode(self) -> int:
        """This connection's mode bits (SSL_get_mode)."""
        return self._binding.mode


__all__ = ["ValueSurface", "get_value", "set_value"]
