"""The limits an HTTP session and the file server hold a peer to.

Every number here bounds memory or work a peer can make this side spend;
docs/security.md lists them with what each protects against.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, not {value!r}")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a session accepts from its peer (a quicconn extension).

    * ``max_field_section_size``: the largest header (or trailer) section,
      in RFC 9114's measure (name + value + 32 bytes per field).  HTTP/3
      announces it as SETTINGS_MAX_FIELD_SECTION_SIZE and refuses a
      HEADERS frame that *declares* more, before buffering any of it; a
      server answers 431, a client fails the request (H3_EXCESSIVE_LOAD).
    * ``max_header_fields``: the most fields in one section.
    * ``max_request_line``: the longest hq-interop request line
      (``GET /path``); a longer one resets the stream.
    """

    max_field_section_size: int = 64 * KIB
    max_header_fields: int = 100
    max_request_line: int = 8 * KIB

    def __post_init__(self) -> None:
        _positive("max_field_section_size", self.max_field_section_size)
        _positive("max_header_fields", self.max_header_fields)
        _positive("max_request_line", self.max_request_line)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a :class:`~quicconn.http.FileServer` spends on its clients.

    * ``max_memory``: bytes of responses in flight over all connections
      (written to QUIC streams and not yet acknowledged, plus what waits to
      be written); the server reads no more file data while it is reached.
      Each connection is further held to its context's
      ``connection_write_buffer_size`` and the peer's MAX_DATA credit.
    * ``http``: the :class:`HttpLimits` of every session.
    """

    max_memory: int = 64 * MIB
    http: HttpLimits = HttpLimits()

    def __post_init__(self) -> None:
        _positive("max_memory", self.max_memory)
        if not isinstance(self.http, HttpLimits):
            raise TypeError(f"http must be an HttpLimits, not {self.http!r}")


__all__ = ["HttpLimits", "ServerLimits"]
