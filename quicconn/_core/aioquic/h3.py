"""HTTP/3 framing and QPACK from aioquic's ``H3Connection``, as an :class:`H3Codec`.

``H3Connection`` is written against aioquic's ``QuicConnection``; here it
talks to :class:`_QuicShim`, which offers the slice of that class it uses
and turns it into calls on an :class:`~quicconn._core.interface.H3Transport`
(quicconn streams, in practice).  Incoming stream data goes in as aioquic's
own events, and the HTTP events that come out are translated into the
interface's neutral :class:`H3HeadersReceived` / :class:`H3DataReceived`.

The shim has to look like ``QuicConnection`` in two private attributes that
``H3Connection`` reads: ``_quic_logger`` (None: no HTTP/3 qlog events) and
``_remote_max_datagram_frame_size`` (see :class:`_QuicShim`).

:class:`_H3Connection` changes aioquic's codec where quicconn promises
something else, through its private members:

* ``_get_local_settings``: SETTINGS_H3_DATAGRAM (RFC 9297) without
  WebTransport; SETTINGS_MAX_FIELD_SECTION_SIZE; a QPACK dynamic table of
  0 bytes (``_decoder``, ``_max_table_capacity``, ``_blocked_streams``):
  pylsqpack's decoder has no size limit, and with a dynamic table one
  byte of a field section can stand for a whole table entry (4 KiB), so a
  small HEADERS frame could decode to hundreds of megabytes; without one
  a field section decodes to at most about a hundred times its size.
* ``_init_connection``: no MAX_PUSH_ID (``_max_push_id``): quicconn's
  clients take no server push.
* ``_handle_request_or_push_frame`` and ``_handle_request_or_push_end``:
  a malformed message (aioquic's ``MessageError``) is a stream error
  (RFC 9114 section 4.1.2), reported as :class:`H3StreamError`, not a
  connection close.
* ``_check_content_length`` and ``_decode_headers``: a response to HEAD,
  and a 204 or 304 response, may state a content-length without content
  (RFC 9114 section 4.1.2); aioquic checks it against the DATA frames.
* ``_stream``: a stream given up is forgotten (:meth:`discard_stream`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pylsqpack
from aioquic.h3 import events as h3_events
from aioquic.h3.connection import ErrorCode, H3Connection, MessageError, Setting
from aioquic.quic import events as quic_events

from ..interface import (
    H3DatagramReceived,
    H3DataReceived,
    H3Event,
    H3HeadersReceived,
    H3StreamError,
    H3Transport,
    HeaderField,
)

#: Responses that never have content, whatever content-length says.
_BODILESS_STATUSES = frozenset({b"204", b"304"})


class _QuicShim:
    """The slice of aioquic's ``QuicConnection`` that ``H3Connection`` calls."""

    def __init__(self, transport: H3Transport, is_client: bool) -> None:
        self._transport = transport
        self.configuration = SimpleNamespace(is_client=is_client)
        self._quic_logger = None

    @property
    def _remote_max_datagram_frame_size(self) -> int | None:
        # H3Connection rejects SETTINGS_H3_DATAGRAM=1 from a peer that did not
        # send this transport parameter (RFC 9297, section 2.1.1), so it must be
        # the peer's real value even though quicconn sends no HTTP datagrams.
        return self._transport.peer_max_datagram_frame_size()

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        return self._transport.open_stream(is_unidirectional)

    def send_stream_data(
        self, stream_id: int, data: bytes, end_stream: bool = False
    ) -> None:
        self._transport.write(stream_id, data, end_stream)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._transport.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self._transport.stop_stream(stream_id, error_code)

    def close(
        self,
        error_code: int = 0,
        frame_type: int | None = None,
        reason_phrase: str = "",
    ) -> None:
        self._transport.close(error_code, reason_phrase)

    def send_datagram_frame(self, data: bytes) -> None:
        self._transport.send_datagram(data)


class _H3Connection(H3Connection):
    """aioquic's codec with quicconn's policies (see the module docstring)."""

    def __init__(
        self, quic: _QuicShim, *, datagrams: bool, max_field_section_size: int
    ) -> None:
        self._h3_datagrams = datagrams
        self._field_section_limit = max_field_section_size
        #: Streams whose response has no content (HEAD, 204, 304).
        self._bodiless: set[int] = set()
        #: Stream errors found while handling the current event.
        self.stream_errors: list[H3StreamError] = []
        super().__init__(quic)  # type: ignore[arg-type]
        # No dynamic table (the SETTINGS just sent said so).
        self._max_table_capacity = 0
        self._blocked_streams = 0
        self._decoder = pylsqpack.Decoder(0, 0)

    def _get_local_settings(self) -> dict[int, int]:
        settings: dict[int, int] = super()._get_local_settings()
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = 0
        settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self._field_section_limit
        if self._h3_datagrams:
            settings[Setting.H3_DATAGRAM] = 1
        return settings

    def _init_connection(self) -> None:
        self._max_push_id = None  # no server push: no MAX_PUSH_ID frame
        super()._init_connection()

    def send_headers(
        self, stream_id: int, headers: list[HeaderField], end_stream: bool = False
    ) -> None:
        if self._is_client and (b":method", b"HEAD") in headers:
            self._bodiless.add(stream_id)
        super().send_headers(stream_id, headers, end_stream=end_stream)

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> Any:
        headers = super()._decode_headers(stream_id, frame_data)
        if self._is_client:
            for name, value in headers:
                if name == b":status" and value in _BODILESS_STATUSES:
                    self._bodiless.add(stream_id)
        return headers

    def _check_content_length(self, stream: Any) -> None:
        if stream.stream_id not in self._bodiless:
            super()._check_content_length(stream)

    def _handle_request_or_push_frame(
        self, frame_type: int, frame_data: bytes | None, stream: Any, stream_ended: bool
    ) -> list[h3_events.H3Event]:
        try:
            events: list[h3_events.H3Event] = super()._handle_request_or_push_frame(
                frame_type, frame_data, stream, stream_ended
            )
        except MessageError as exc:
            self._malformed(stream.stream_id, exc)
            return []
        return events

    def _handle_request_or_push_end(self, stream: Any) -> list[h3_events.H3Event]:
        try:
            events: list[h3_events.H3Event] = super()._handle_request_or_push_end(
                stream
            )
        except MessageError as exc:
            self._malformed(stream.stream_id, exc)
            return []
        return events

    def _malformed(self, stream_id: int, exc: MessageError) -> None:
        self.stream_errors.append(
            H3StreamError(stream_id, ErrorCode.H3_MESSAGE_ERROR, exc.reason_phrase)
        )

    def discard_stream(self, stream_id: int) -> None:
        self._stream.pop(stream_id, None)
        self._bodiless.discard(stream_id)


class AioquicH3Codec:
    """An :class:`~quicconn._core.interface.H3Codec` on aioquic's ``H3Connection``.

    Creating it opens the control and QPACK streams through the transport.
    """

    def __init__(
        self, transport: H3Transport, *, is_client: bool, max_field_section_size: int
    ) -> None:
        self._datagrams = transport.local_max_datagram_frame_size() is not None
        self._h3 = _H3Connection(
            _QuicShim(transport, is_client),
            datagrams=self._datagrams,
            max_field_section_size=max_field_section_size,
        )

    def handle_stream_data(
        self, stream_id: int, data: bytes, fin: bool
    ) -> list[H3Event]:
        received = self._h3.handle_event(
            quic_events.StreamDataReceived(
                data=data, end_stream=fin, stream_id=stream_id
            )
        )
        events: list[H3Event] = []
        for event in received:
            if isinstance(event, h3_events.HeadersReceived):
                events.append(
                    H3HeadersReceived(
                        event.stream_id, event.headers, event.stream_ended
                    )
                )
            elif isinstance(event, h3_events.DataReceived):
                events.append(
                    H3DataReceived(event.stream_id, event.data, event.stream_ended)
                )
        if self._h3.stream_errors:
            events.extend(self._h3.stream_errors)
            self._h3.stream_errors.clear()
        return events

    def handle_stream_reset(self, stream_id: int, error_code: int) -> None:
        self._h3.handle_event(
            quic_events.StreamReset(error_code=error_code, stream_id=stream_id)
        )

    def handle_stop_sending(self, stream_id: int, error_code: int) -> None:
        self._h3.handle_event(
            quic_events.StopSendingReceived(error_code=error_code, stream_id=stream_id)
        )

    def send_headers(
        self, stream_id: int, headers: list[HeaderField], end_stream: bool
    ) -> None:
        self._h3.send_headers(stream_id, headers, end_stream=end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        self._h3.send_data(stream_id, data, end_stream)

    def datagrams_allowed(self) -> bool:
        settings = self._h3.received_settings
        return (
            self._datagrams
            and settings is not None
            and settings.get(Setting.H3_DATAGRAM) == 1
        )

    def handle_datagram(self, data: bytes) -> list[H3Event]:
        events: list[H3Event] = []
        for event in self._h3.handle_event(quic_events.DatagramFrameReceived(data)):
            if isinstance(event, h3_events.DatagramReceived):
                events.append(H3DatagramReceived(event.stream_id, event.data))
        return events

    def send_datagram(self, stream_id: int, data: bytes) -> None:
        self._h3.send_datagram(stream_id, data)

    def discard_stream(self, stream_id: int) -> None:
        self._h3.discard_stream(stream_id)

    def received_settings(self) -> dict[int, int] | None:
        settings = self._h3.received_settings
        return None if settings is None else dict(settings)


__all__ = ["AioquicH3Codec"]
