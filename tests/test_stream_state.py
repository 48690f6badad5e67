"""The stream state machines of RFC 9000 section 3, and OpenSSL's view of them."""

from __future__ import annotations

import itertools

import pytest

import quicconn as q
from quicconn._quic.stream_state import (
    RecvEvent,
    RecvState,
    SendEvent,
    SendState,
    StreamStateError,
    next_recv_state,
    next_send_state,
)
from quicconn._quic.streams import StreamRecord

# The transitions of RFC 9000's figures 2 and 3 (plus the idempotent
# re-reads an application makes after the end of a stream).
SEND_ALLOWED = {
    (SendState.READY, SendEvent.WRITE): SendState.SEND,
    (SendState.SEND, SendEvent.WRITE): SendState.SEND,
    (SendState.READY, SendEvent.CONCLUDE): SendState.DATA_SENT,
    (SendState.SEND, SendEvent.CONCLUDE): SendState.DATA_SENT,
    (SendState.READY, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.SEND, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.DATA_SENT, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.DATA_SENT, SendEvent.ALL_ACKED): SendState.DATA_RECVD,
    (SendState.RESET_SENT, SendEvent.RESET_ACKED): SendState.RESET_RECVD,
}
RECV_ALLOWED = {
    (RecvState.RECV, RecvEvent.DATA): RecvState.RECV,
    (RecvState.RECV, RecvEvent.FINAL_SIZE): RecvState.SIZE_KNOWN,
    (RecvState.SIZE_KNOWN, RecvEvent.ALL_DATA): RecvState.DATA_RECVD,
    (RecvState.RECV, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.SIZE_KNOWN, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.DATA_RECVD, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.DATA_RECVD, RecvEvent.APP_READ_ALL): RecvState.DATA_READ,
    (RecvState.DATA_READ, RecvEvent.APP_READ_ALL): RecvState.DATA_READ,
    (RecvState.RESET_RECVD, RecvEvent.APP_READ_RESET): RecvState.RESET_READ,
    (RecvState.RESET_READ, RecvEvent.APP_READ_RESET): RecvState.RESET_READ,
}


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(SendState, SendEvent))
)
def test_sending_part_allows_exactly_rfc_9000_transitions(
    state: SendState, event: SendEvent
) -> None:
    if (state, event) in SEND_ALLOWED:
        assert next_send_state(state, event) is SEND_ALLOWED[state, event]
    else:
        with pytest.raises(StreamStateError, match=state.value):
            next_send_state(state, event)


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(RecvState, RecvEvent))
)
def test_receiving_part_allows_exactly_rfc_9000_transitions(
    state: RecvState, event: RecvEvent
) -> None:
    if (state, event) in RECV_ALLOWED:
        assert next_recv_state(state, event) is RECV_ALLOWED[state, event]
    else:
        with pytest.raises(StreamStateError, match=state.value):
            next_recv_state(state, event)


def test_a_fin_moves_the_receiving_part_to_data_recvd() -> None:
    record = StreamRecord(1, is_client=True)  # a server-opened bidi stream
    record.push(b"abc", False)
    assert record.recv_state is RecvState.RECV
    record.push(b"def", True)
    assert record.recv_state is RecvState.DATA_RECVD
    assert record.take(-1) == b"abcdef"


def test_directions_follow_the_stream_id() -> None:
    local_uni = StreamRecord(2, is_client=True)
    remote_uni = StreamRecord(3, is_client=True)
    assert local_uni.recv_state is None and local_uni.send_state is SendState.READY
    assert remote_uni.send_state is None and remote_uni.recv_state is RecvState.RECV
    assert local_uni.stream_type == q.STREAM_TYPE_WRITE
    assert remote_uni.stream_type == q.STREAM_TYPE_READ


def test_openssl_states_derive_from_the_parts() -> None:
    from quicconn._quic.stream_state import read_state, write_state

    record = StreamRecord(0, is_client=True)
    assert read_state(record, False) == q.STREAM_STATE_OK
    assert write_state(record, False) == q.STREAM_STATE_OK
    record.send_event(SendEvent.CONCLUDE)
    # OpenSSL 3.5: OK until the peer acknowledged everything and the FIN.
    assert write_state(record, False) == q.STREAM_STATE_OK
    record.send_event(SendEvent.ALL_ACKED)
    assert write_state(record, False) == q.STREAM_STATE_FINISHED
    record.push(b"tail", True)
    # OpenSSL 3.5: OK while data before the FIN is still unread.
    assert read_state(record, False) == q.STREAM_STATE_OK
    record.take(-1)
    assert read_state(record, False) == q.STREAM_STATE_FINISHED
    assert read_state(record, True) == q.STREAM_STATE_CONN_CLOSED
    reset = StreamRecord(4, is_client=True)
    reset.send_event(SendEvent.RESET)
    reset.recv_event(RecvEvent.RESET)
    assert write_state(reset, False) == q.STREAM_STATE_RESET_LOCAL
    assert read_state(reset, False) == q.STREAM_STATE_RESET_REMOTE
    assert read_state(None, False) == q.STREAM_STATE_NONE
    assert write_state(StreamRecord(3, is_client=True), False) == (
        q.STREAM_STATE_WRONG_DIR
    )
