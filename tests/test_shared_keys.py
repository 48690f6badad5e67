"""What servers of a pool share: keys and the connection IDs they choose.

Sealed session tickets, Retry tokens under a shared key, QUIC-LB server
connection IDs on a plain listener, the context settings and
``quicconn.scale.ServerKeys``.  The worker groups that rely on them are
tests/test_workers.py.
"""

from __future__ import annotations

import datetime
import os
import stat
import threading

import pytest

import quicconn
from quicconn._core.tickets import TicketSealer, replace_ticket_label
from quicconn._core.tokens import RetryTokens
from quicconn._objects.connection import channel_of
from quicconn._quic import channel as channel_module
from quicconn.scale import QuicLbConfig, QuicLbDecoder, ServerKeys
from tests.support.certs import CertFiles
from tests.support.cores import Capability, capabilities, default_core, require

ALPN = ["quicconn-keys"]
HOST = QuicLbConfig(b"\x5e\x12", nonce_length=5)


class Ticket:
    """A session ticket as both cores describe one (only what is sealed)."""

    def __init__(self, *, naive: bool, early: int | None) -> None:
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        if naive:
            now = now.replace(tzinfo=None)
        self.cipher_suite = 0x1301
        self.not_valid_before = now
        self.not_valid_after = now + datetime.timedelta(days=1)
        self.age_add = 0x12345678
        self.max_early_data_size = early
        self.resumption_secret = os.urandom(32)
        self.server_name = "example.net"


@pytest.mark.parametrize("naive", [True, False])
@pytest.mark.parametrize("early", [None, 0xFFFFFFFF])
def test_a_sealed_ticket_opens_under_the_same_key_only(naive, early):
    import json

    key = os.urandom(32)
    ticket = Ticket(naive=naive, early=early)
    label = TicketSealer(key).seal(ticket)
    assert len(label) < 120
    session = TicketSealer(key).open(label)
    assert session is not None
    fields = json.loads(session)
    assert bytes.fromhex(fields["resumption_secret"]) == ticket.resumption_secret
    assert bytes.fromhex(fields["ticket"]) == label
    assert fields["max_early_data_size"] == early
    before = datetime.datetime.fromisoformat(fields["not_valid_before"])
    assert before == ticket.not_valid_before  # naive stays naive, aware aware
    assert TicketSealer(os.urandom(32)).open(label) is None
    assert TicketSealer(key).open(label[:-1] + bytes([label[-1] ^ 1])) is None
    assert TicketSealer(key).open(os.urandom(64)) is None  # a remembered label


def test_the_new_session_ticket_message_gets_the_new_label():
    body = (
        (86400).to_bytes(4, "big")
        + (7).to_bytes(4, "big")
        + b"\x01\xaa"  # nonce
        + (3).to_bytes(2, "big")
        + b"old"
        + (8).to_bytes(2, "big")
        + b"\x00\x2a\x00\x04\xff\xff\xff\xff"  # early_data extension
    )
    message = b"\x04" + len(body).to_bytes(3, "big") + body
    new = replace_ticket_label(message, b"a much longer label")
    assert new[0] == 4 and int.from_bytes(new[1:4], "big") == len(new) - 4
    assert new[4:14] == body[:10]
    assert new[14:16] == (19).to_bytes(2, "big")
    assert new[16:35] == b"a much longer label"
    assert new[35:] == body[15:]
    with pytest.raises(ValueError):
        replace_ticket_label(b"\x02" + message[1:], b"x")
    with pytest.raises(ValueError):
        replace_ticket_label(message[:-3], b"x")


def test_retry_tokens_validate_wherever_the_key_is_shared():
    key = os.urandom(16)
    address = ("192.0.2.7", 4433)
    token = RetryTokens(key).issue(address, b"odcid-01", b"retry-scid", 100.0)
    assert RetryTokens(key).validate(address, b"retry-scid", token, 101.0) == (
        b"odcid-01"
    )
    with pytest.raises(ValueError, match="not issued here"):
        RetryTokens(os.urandom(16)).validate(address, b"retry-scid", token, 101.0)


def serve_one(listener: quicconn.Listener, cids: list[bytes]) -> threading.Thread:
    def run() -> None:
        conn = listener.accept_connection()
        assert conn is not None
        conn.accept()
        cids.append(channel_of(conn).require_core().host_cid)
        data = conn.read(5)
        conn.write_ex2(data, quicconn.WRITE_FLAG_CONCLUDE)
        conn.shutdown(quicconn.SHUTDOWN_FLAG_WAIT_PEER)
        conn.free()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def lb_listener(pki: CertFiles) -> quicconn.Listener:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    ctx.quic_lb = HOST
    return ctx.new_listener(("127.0.0.1", 0))


def exchange(pki: CertFiles, listener: quicconn.Listener) -> bytes:
    conn = quicconn.connect(
        "127.0.0.1", listener.local_address()[1], alpn=ALPN, cafile=str(pki.ca)
    )
    conn.write_ex2(b"hello", quicconn.WRITE_FLAG_CONCLUDE)
    out = conn.read(5)
    conn.shutdown()
    conn.free()
    return out


def test_a_listener_with_quic_lb_chooses_routable_connection_ids(pki):
    listener = lb_listener(pki)
    cids: list[bytes] = []
    try:
        thread = serve_one(listener, cids)
        assert exchange(pki, listener) == b"hello"
        thread.join(10)
    finally:
        listener.free()
    (cid,) = cids
    assert len(cid) == HOST.cid_length
    assert QuicLbDecoder([HOST]).server_id(cid) == HOST.server_id


def test_with_quic_lb_the_server_issues_no_spare_connection_ids(pki, monkeypatch):
    # The QUIC-LB draft asks servers whose IDs are not encrypted not to
    # issue more in NEW_CONNECTION_ID frames; qh3's core issues one of
    # its own choosing.
    require(Capability.CHOSEN_CONNECTION_IDS)
    issued: list[tuple[bool, bytes]] = []
    original = channel_module.Channel.on_connection_id_issued

    def spy(self: channel_module.Channel, cid: bytes) -> None:
        issued.append((self.is_client, cid))
        original(self, cid)

    monkeypatch.setattr(channel_module.Channel, "on_connection_id_issued", spy)
    listener = lb_listener(pki)
    cids: list[bytes] = []
    try:
        thread = serve_one(listener, cids)
        assert exchange(pki, listener) == b"hello"
        thread.join(10)
    finally:
        listener.free()
    assert [cid for is_client, cid in issued if not is_client] == []
    assert any(is_client for is_client, _ in issued)  # the spy saw the client's


def test_context_key_and_quic_lb_settings_are_checked():
    server = quicconn.Context(quicconn.SERVER)
    for name in ("retry_token_key", "session_ticket_key"):
        assert getattr(server, name) is None
        setattr(server, name, bytes(32))
        assert getattr(server, name) == bytes(32)
        with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
            setattr(server, name, bytes(20))
        setattr(server, name, None)
    server.quic_lb = HOST
    assert server.quic_lb is HOST
    with pytest.raises(TypeError, match="QuicLbConfig"):
        server.quic_lb = b"\x01"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="not a client"):
        quicconn.Context(quicconn.CLIENT).quic_lb = HOST


def test_with_quic_lb_a_reset_key_works_on_every_core():
    # The reset key covers the IDs quicconn chose; a core that adds spare
    # IDs of its own lacks CHOSEN_CONNECTION_IDS instead.
    ctx = quicconn.Context(quicconn.SERVER, core=default_core(quicconn.SERVER))
    ctx.quic_lb = HOST
    ctx.stateless_reset_key = os.urandom(32)
    assert ctx.core == default_core(quicconn.SERVER)


def test_server_keys_are_saved_for_the_owner_only_and_loaded(tmp_path):
    keys = ServerKeys.generate()
    assert len({keys.stateless_reset_key, keys.retry_token_key}) == 2
    path = tmp_path / "keys.json"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ServerKeys.load(path) == keys
    assert "<secret>" in repr(keys) and keys.retry_token_key.hex() not in repr(keys)
    path.write_text("{}")
    with pytest.raises(ValueError, match="holds no server keys"):
        ServerKeys.load(path)
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.quic_lb = HOST
    keys.apply(ctx)
    assert ctx.session_ticket_key == keys.session_ticket_key
    assert ctx.stateless_reset_key == keys.stateless_reset_key


def test_ids_of_another_length_need_a_core_that_can_serve_them(pki):
    nine = QuicLbConfig(b"\x5e\x12", nonce_length=6)
    assert nine.cid_length == 9
    for core in ("qh3", "aioquic"):
        ctx = quicconn.Context(quicconn.SERVER, core=core)
        if Capability.ANY_CID_LENGTH in capabilities(core):
            ctx.quic_lb = nine
            assert ctx.quic_lb is nine
        else:
            with pytest.raises(ValueError, match="any length"):
                ctx.quic_lb = nine
            assert ctx.quic_lb is None  # unchanged
    require(Capability.ANY_CID_LENGTH)
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    ctx.quic_lb = nine
    listener = ctx.new_listener(("127.0.0.1", 0))
    cids: list[bytes] = []
    try:
        thread = serve_one(listener, cids)
        assert exchange(pki, listener) == b"hello"
        thread.join(10)
    finally:
        listener.free()
    assert len(cids[0]) == 9
