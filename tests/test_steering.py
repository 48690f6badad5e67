"""The classic BPF steering program, run by this machine's kernel.

Datagrams are sent to a SO_REUSEPORT group of real sockets on loopback;
the socket each one lands on must be the one the Python model of the
program (``steering.predict``) names, from every source port."""

from __future__ import annotations

import dataclasses
import os
import select
import socket

import pytest

from quicconn._io import steering
from quicconn.scale import QuicLbConfig


def layout_for(config: QuicLbConfig, workers: int) -> steering.SteeringLayout:
    first = config.first_octet()
    return steering.SteeringLayout(
        workers=workers,
        cid_length=config.cid_length,
        marker=bytes([config.config_id << 5 if first is None else first])
        + config.server_id,
        worker_offset=config.server_use_offset,
        marker_mask=0xE0 if first is None else 0xFF,
    )


def landing(group: list[socket.socket], datagram: bytes, sender: socket.socket) -> int:
    sender.sendto(datagram, group[0].getsockname())
    ready, _, _ = select.select(group, [], [], 2.0)
    assert len(ready) == 1, "the datagram reached no socket, or two"
    assert ready[0].recv(4096) == datagram
    return group.index(ready[0])


def short_packet(cid: bytes) -> bytes:
    return b"\x41" + cid + os.urandom(40)


def long_packet(dcid: bytes, kind: int = 0xC0) -> bytes:
    return bytes([kind]) + b"\x00\x00\x00\x01" + bytes([len(dcid)]) + dcid + b"\x00"


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("encode_length", [True, False])
def test_the_kernel_steers_as_the_model_says(workers, encode_length):
    host = QuicLbConfig(b"\x5a\x17", nonce_length=6, encode_length=encode_length)
    layout = layout_for(host, workers)
    group = steering.reuseport_group(("127.0.0.1", 0), workers)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        steering.attach(group[0], layout)
        hashed: set[int] = set()
        for round_ in range(60):
            worker = round_ % workers
            ours = dataclasses.replace(host, server_use=bytes([worker])).new_cid()
            client_dcid = os.urandom(8 + round_ % 13)
            cases = [
                (short_packet(ours), worker),
                (long_packet(ours, 0xE0) + os.urandom(60), worker),  # Handshake
                (long_packet(client_dcid) + os.urandom(1200), None),  # Initial
                (long_packet(client_dcid, 0xD0) + os.urandom(300), None),  # 0-RTT
            ]
            for datagram, owner in cases:
                expected = steering.predict(layout, datagram)
                assert expected is not None
                if owner is not None:
                    assert expected == owner
                else:
                    hashed.add(expected)
                # From every source port (a NAT rebinding), the same socket.
                assert {landing(group, datagram, s) for s in senders} == {expected}
        assert hashed == set(range(workers)), "the hash reaches every worker"
    finally:
        for sock in group + senders:
            sock.close()


def test_a_server_that_kept_the_clients_id_stays_on_one_worker():
    # The hash of a foreign ID reads its first 8 bytes in both header forms.
    layout = layout_for(QuicLbConfig(b"\x01"), 4)
    for _ in range(200):
        dcid = os.urandom(8)
        initial = long_packet(dcid) + bytes(1200)
        assert steering.predict(layout, short_packet(dcid)) == steering.predict(
            layout, initial
        )


def test_short_or_odd_datagrams_fall_back_to_the_kernels_hash():
    layout = layout_for(QuicLbConfig(b"\x01"), 2)
    assert steering.predict(layout, b"\x40" + bytes(5)) is None
    assert steering.predict(layout, long_packet(bytes(4)) + bytes(40)) is None
    group = steering.reuseport_group(("127.0.0.1", 0), 2)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        steering.attach(group[0], layout)
        # Delivered somewhere (the 4-tuple hash), never lost.
        assert landing(group, b"\x40\x01", sender) in (0, 1)
        steering.detach(group[0])
        assert landing(group, short_packet(bytes(9)), sender) in (0, 1)
    finally:
        for sock in [*group, sender]:
            sock.close()


def test_the_program_is_classic_bpf_the_kernel_accepts_for_any_server_id_length():
    for sid_length in (1, 2, 3, 5, 8, 15):
        config = QuicLbConfig(bytes(range(1, sid_length + 1)), nonce_length=4)
        code = steering.program(layout_for(config, 5))
        assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _, jt, jf, _ in code)
        group = steering.reuseport_group(("127.0.0.1", 0), 2)
        try:
            steering.attach(group[0], layout_for(config, 2))
        finally:
            for sock in group:
                sock.close()
