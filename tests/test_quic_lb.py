"""QUIC-LB connection IDs (draft-ietf-quic-load-balancers, plaintext
algorithm): the encoder every server uses and the decoder a load balancer
(or a test) routes with."""

from __future__ import annotations

import dataclasses

import pytest

from quicconn.scale import QuicLbConfig, QuicLbDecoder


def test_the_drafts_unencrypted_test_vector():
    # draft-ietf-quic-load-balancers, "Unencrypted CIDs": config rotation
    # 0, server ID c4605e, nonce 4504cc4f, length self-described.
    config = QuicLbConfig(bytes.fromhex("c4605e"), nonce_length=4, config_id=0)
    cid = bytes.fromhex("07c4605e4504cc4f")
    assert config.cid_length == len(cid)
    assert config.first_octet() == cid[0]
    assert QuicLbDecoder([config]).server_id(cid) == bytes.fromhex("c4605e")
    made = config.new_cid()
    assert made[:4] == cid[:4] and len(made) == len(cid)


def test_ids_carry_config_rotation_length_server_id_and_a_fresh_nonce():
    config = QuicLbConfig(b"\x0a\x0b", nonce_length=6, config_id=5)
    cids = {config.new_cid() for _ in range(1000)}
    assert len(cids) == 1000  # the nonce makes each one unique
    for cid in cids:
        assert len(cid) == 9
        assert cid[0] >> 5 == 5 and cid[0] & 0x1F == 8
        assert cid[1:3] == b"\x0a\x0b"


def test_server_use_bytes_open_the_nonce_and_the_load_balancer_ignores_them():
    host = QuicLbConfig(b"\x01\x02", nonce_length=6)
    workers = [dataclasses.replace(host, server_use=bytes([i])) for i in range(3)]
    decoder = QuicLbDecoder([host])
    for index, config in enumerate(workers):
        cid = config.new_cid()
        assert cid[host.server_use_offset] == index
        assert decoder.server_id(cid) == b"\x01\x02"


def test_without_length_encoding_the_low_bits_are_random():
    config = QuicLbConfig(b"\x07", nonce_length=4, config_id=2, encode_length=False)
    assert config.first_octet() is None
    lows = {config.new_cid()[0] & 0x1F for _ in range(400)}
    assert len(lows) > 16
    assert all(cid >> 5 == 2 for cid in (config.new_cid()[0] for _ in range(50)))


def test_the_decoder_routes_short_and_long_headers_and_refuses_the_unroutable():
    a = QuicLbConfig(b"\xaa", nonce_length=5, config_id=1)
    b = QuicLbConfig(b"\xbb\xbb", nonce_length=6, config_id=3)
    decoder = QuicLbDecoder([a, b])
    for config in (a, b):
        cid = config.new_cid()
        short = b"\x41" + cid + b"\x00" * 30
        long = b"\xc0\x00\x00\x00\x01" + bytes([len(cid)]) + cid + b"\x08" + bytes(8)
        assert decoder.route(short) == config.server_id
        assert decoder.route(long) == config.server_id
    unroutable = bytes([0xE0 | 7]) + bytes(7)
    assert decoder.server_id(unroutable) is None  # codepoint 0b111
    assert decoder.server_id(bytes([0x40 | 7]) + bytes(7)) is None  # config 2: unknown
    assert decoder.server_id(a.new_cid()[:4]) is None  # too short
    assert decoder.route(b"") is None and decoder.route(b"\xc0\x00") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server_id": b""}, "server_id"),
        ({"server_id": b"\x01", "config_id": 7}, "config_id"),
        ({"server_id": b"\x01", "nonce_length": 3}, "nonce_length"),
        ({"server_id": bytes(16), "nonce_length": 4}, "exceed"),
        ({"server_id": b"\x01", "nonce_length": 4, "server_use": b"\x01"}, "random"),
    ],
)
def test_bad_configurations_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuicLbConfig(**kwargs)
