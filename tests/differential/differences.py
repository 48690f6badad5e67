"""Where quicconn deliberately differs from OpenSSL 3.5.9, step by step.

Each entry names a step of a scenario (its label and which occurrence of
that label, from 0), the observation OpenSSL gives there, the one quicconn
gives, and the paragraph of docs/api-mapping.md ("Differences from
OpenSSL 3.5, measured") that documents why.  The differential test asserts
both values exactly: if either side changes, the entry (and the doc) must
change with it.
"""

from __future__ import annotations

from typing import Any

ASYNC_OPENSSL = ["ok", [0, [0, None], [0, None], [0, None]]]
ASYNC_QUICCONN = ["ok", [0, [1, 0], [1, [0, 0]], [1, 0]]]

#: (scenario, label, occurrence) -> (OpenSSL's observation, quicconn's, doc anchor)
DIFFERENCES: dict[tuple[str, str, int], tuple[Any, Any, str]] = {
    (
        "handshake_blocking",
        "SSL_is_connection/is_quic/is_listener/is_server, SSL_get0_connection",
        0,
    ): (
        ["ok", [1, 1, 0, 1, "C"]],
        ["ok", [1, 1, 0, 0, "C"]],
        "is_server before the handshake",
    ),
    (
        "before_connect",
        "SSL_waiting_for_async/get_all_async_fds/get_changed_async_fds/get_async_status",
        0,
    ): (ASYNC_OPENSSL, ASYNC_QUICCONN, "async calls before any job"),
    (
        "async_calls_on_quic",
        "SSL_waiting_for_async/get_all_async_fds/get_changed_async_fds/get_async_status",
        0,
    ): (ASYNC_OPENSSL, ASYNC_QUICCONN, "async calls before any job"),
    (
        "async_calls_on_quic",
        "SSL_waiting_for_async/get_all_async_fds/get_changed_async_fds/get_async_status",
        1,
    ): (ASYNC_OPENSSL, ASYNC_QUICCONN, "async calls before any job"),
    ("conclude_then_ack", "SSL_stream_conclude", 1): (
        ["err", 1],
        ["ok", 1],
        "a second stream_conclude",
    ),
    ("new_streams", "SSL_new_stream", 2): (
        ["ok", "S2"],
        ["err", 1],
        "unknown flags and out-of-range codes",
    ),
    ("misuse", "SSL_stream_reset", 0): (
        ["ok", 1],
        ["err", 1],
        "unknown flags and out-of-range codes",
    ),
    ("misuse", "SSL_shutdown_ex", 0): (
        ["ok", 0],
        ["err", 1],
        "unknown flags and out-of-range codes",
    ),
    ("misuse", "SSL_set_incoming_stream_policy", 0): (
        ["ok", 1],
        ["err", 1],
        "unknown flags and out-of-range codes",
    ),
    ("accept_stream_kind_filter", "SSL_get_stream_id/type, SSL_is_stream_local", 0): (
        ["ok", [1, 3, 0]],
        ["ok", [3, 1, 0]],
        "ACCEPT_STREAM_UNI and _BIDI",
    ),
    ("values", "SSL_get_value_uint(0,2)", 0): (
        ["ok", 100],
        ["ok", 128],
        "default stream limits",
    ),
    ("values", "SSL_get_value_uint(0,4)", 0): (
        ["ok", 100],
        ["ok", 128],
        "default stream limits",
    ),
    ("peer_closes", "SSL_poll", 0): (
        ["ok", [1, 1, [4, 0]]],
        ["ok", [1, 2, [4, 48]]],
        "stream poll events on a closed connection",
    ),
    ("peer_closes", "SSL_key_update", 0): (
        ["ok", 1],
        ["err", 1],
        "key updates",
    ),
    ("key_update", "SSL_key_update", 0): (["err", 1], ["ok", 1], "key updates"),
    ("key_update", "SSL_key_update", 1): (["err", 1], ["ok", 1], "key updates"),
    ("dtls_retransmission", "sent by the retried connect", 0): (
        ["value", 1],
        ["value", 0],
        "DTLS: retransmission inside the handshake call",
    ),
    ("dtls_retransmission", "sent by handle_events", 0): (
        ["value", 0],
        ["value", 1],
        "DTLS: retransmission inside the handshake call",
    ),
    # Only SSL_session_reused differs: the cipher (its own step) is the
    # peer's choice, the same on both sides, whichever core the peer runs on.
    ("session_after_free_without_shutdown", "SSL_session_reused", 1): (
        ["ok", 0],
        ["ok", 1],
        "sessions of connections freed without a shutdown",
    ),
}

#: Differences on one QUIC core only: core name -> entries as above, except
#: that quicconn's observation is a list of the observations accepted.
CORE_DIFFERENCES: dict[str, dict[tuple[str, str, int], tuple[Any, list[Any], str]]] = {
    "qh3": {
        # qh3 acknowledges a lone ack-eliciting packet 1 ms after it
        # arrived: read later than that after connect() returned, the
        # timeout is 0 (the ACK of the server's last flight is due) until
        # the next handle_events() sends it.  Read sooner, it is finite.
        ("stream_event_surface", "SSL_get_event_timeout", 0): (
            ["ok", "finite"],
            [["ok", "0"], ["ok", "finite"]],
            "an ACK due after the handshake",
        ),
    },
}

__all__ = ["CORE_DIFFERENCES", "DIFFERENCES"]
