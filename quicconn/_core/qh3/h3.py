"""HTTP/3 framing and QPACK from qh3's ``H3Connection``, as an :class:`H3Codec`.

qh3's ``H3Connection`` (QPACK in Rust) is written against qh3's
``QuicConnection``; here it talks to :class:`_QuicShim`, which offers the
slice of that class it uses and turns it into calls on an
:class:`~quicconn._core.interface.H3Transport` (quicconn streams, in
practice).  Incoming stream data goes in as qh3's own events; the HTTP
events that come out become the interface's neutral
:class:`H3HeadersReceived` / :class:`H3DataReceived` (an informational
1xx response is a HEADERS frame like any other, as on the aioquic core).

The shim has to look like ``QuicConnection`` in two private attributes that
``H3Connection`` reads: ``_quic_logger`` (None: no HTTP/3 qlog events) and
``_remote_max_datagram_frame_size`` (see :class:`_QuicShim`).

:class:`_H3Connection` changes qh3's codec where quicconn promises
something else, through its private members:

* ``_get_local_settings``: qh3 always announces SETTINGS_H3_DATAGRAM,
  which RFC 9297 allows only alongside the max_datagram_frame_size
  transport parameter; quicconn announces it only when DATAGRAM frames are
  on (as the aioquic core).  SETTINGS_MAX_FIELD_SECTION_SIZE is the
  session's limit, and so is the QPACK decoder's (``_decoder``,
  ``_max_field_section_size``, ``_max_encoded_field_section_size``: qh3
  picks 256 KiB for a server, 1 MiB for a client).
  SETTINGS_QPACK_BLOCKED_STREAMS is 0 (``_blocked_streams``): a field
  section waiting for the encoder stream would have the codec buffer all
  that follows it on its stream, and holding that data back in QUIC's
  buffers instead can fill the connection's flow-control window, which the
  encoder stream needs to get through (a deadlock).
* ``_init_connection``: no MAX_PUSH_ID (``_max_push_id``): quicconn's
  clients take no server push.
* ``_handle_request_or_push_frame``: a malformed message (``MessageError``)
  or a field section that decodes past the limit (``FieldSectionTooLarge``)
  is a stream error reported as :class:`H3StreamError`, not a connection
  close (RFC 9114 section 4.1.2).
* ``_stream``, ``_blocked_stream_map``: a stream given up is forgotten.

HTTP datagrams (RFC 9297): qh3's ``H3Connection`` calls the varint that
starts one a *flow ID* and passes it through unchanged (the draft's
meaning); RFC 9297 made it the Quarter Stream ID, the request stream's ID
divided by four.  The codec converts both ways, so the wire format is
RFC 9297's, as on the aioquic core.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from qh3._hazmat import QpackDecoder
from qh3.h3 import events as h3_events
from qh3.h3.connection import (
    ErrorCode,
    FieldSectionTooLarge,
    H3Connection,
    MessageError,
    Setting,
)
from qh3.quic import events as quic_events

from ..interface import (
    H3DatagramReceived,
    H3DataReceived,
    H3Event,
    H3HeadersReceived,
    H3StreamError,
    H3Transport,
    HeaderField,
)


class _QuicShim:
    """The slice of qh3's ``QuicConnection`` that ``H3Connection`` calls."""

    def __init__(self, transport: H3Transport, is_client: bool) -> None:
        self._transport = transport
        self.configuration = SimpleNamespace(is_client=is_client)
        self._quic_logger = None

    @property
    def _remote_max_datagram_frame_size(self) -> int | None:
        # H3Connection rejects SETTINGS_H3_DATAGRAM=1 from a peer that did
        # not send this transport parameter (RFC 9297, section 2.1.1).
        return self._transport.peer_max_datagram_frame_size()

    def get_next_available_stream_id(self, is_unidirectional: bool = False) -> int:
        return self._transport.open_stream(is_unidirectional)

    def send_stream_data(
        self, stream_id: int, data: bytes, end_stream: bool = False
    ) -> None:
        self._transport.write(stream_id, bytes(data), end_stream)

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
    """qh3's codec with quicconn's policies (see the module docstring)."""

    def __init__(
        self, quic: _QuicShim, *, datagrams: bool, max_field_section_size: int
    ) -> None:
        self._h3_datagrams = datagrams
        self._field_section_limit = max_field_section_size
        #: Stream errors found while handling the current event.
        self.stream_errors: list[H3StreamError] = []
        super().__init__(quic)  # type: ignore[arg-type]
        # The decoder stops at the session's limit, and no stream may wait
        # for the encoder stream (the SETTINGS just sent said so; nothing
        # was decoded yet).
        self._max_field_section_size = max_field_section_size
        self._max_encoded_field_section_size = max_field_section_size * 4 + 32
        self._blocked_streams = 0
        self._decoder = QpackDecoder(
            self._max_table_capacity, 0, max_field_section_size=max_field_section_size
        )

    def _get_local_settings(self) -> dict[int, int]:
        settings: dict[int, int] = super()._get_local_settings()
        if not self._h3_datagrams:
            settings.pop(Setting.H3_DATAGRAM, None)
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self._field_section_limit
        settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        return settings

    def _init_connection(self) -> None:
        self._max_push_id = None  # no server push: no MAX_PUSH_ID frame
        super()._init_connection()

    def _handle_request_or_push_frame(
        self,
        frame_type: int,
        frame_data: bytes | None,
        stream: Any,
        stream_ended: bool,
        **kwargs: Any,
    ) -> list[h3_events.H3Event]:
        try:
            events: list[h3_events.H3Event] = super()._handle_request_or_push_frame(
                frame_type, frame_data, stream, stream_ended, **kwargs
            )
        except MessageError as exc:
            code, reason = ErrorCode.H3_MESSAGE_ERROR, exc.reason_phrase
        except FieldSectionTooLarge as exc:
            code, reason = ErrorCode.H3_EXCESSIVE_LOAD, exc.reason_phrase
        else:
            return events
        self.stream_errors.append(H3StreamError(stream.stream_id, code, reason))
        return []

    def discard_stream(self, stream_id: int) -> None:
        self._stream.pop(stream_id, None)
        self._blocked_stream_map.pop(stream_id, None)


class Qh3H3Codec:
    """An :class:`~quicconn._core.interface.H3Codec` on qh3's ``H3Connection``.

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
                        event.stream_id, list(event.headers), event.stream_ended
                    )
                )
            elif isinstance(event, h3_events.InformationalHeadersReceived):
                events.append(
                    H3HeadersReceived(event.stream_id, list(event.headers), False)
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
                # qh3's flow ID is RFC 9297's Quarter Stream ID.
                events.append(H3DatagramReceived(event.flow_id * 4, event.data))
        return events

    def send_datagram(self, stream_id: int, data: bytes) -> None:
        # The caller checked that it is a request stream (a multiple of 4).
        self._h3.send_datagram(stream_id // 4, data)

    def discard_stream(self, stream_id: int) -> None:
        self._h3.discard_stream(stream_id)

    def received_settings(self) -> dict[int, int] | None:
        settings = self._h3.received_settings
        return None if settings is None else dict(settings)


__all__ = ["Qh3H3Codec"]
