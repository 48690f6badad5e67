"""QUIC domains: SSL_new_domain, SSL_CTX_set_domain_flags,
SSL_new_listener_from, SSL_is_domain, SSL_get0_domain, poll() over domains.

The flag rules are checked against OpenSSL 3.5's own libssl (run through
ctypes under Debian trixie's loader, tests/peers/openssl35_domains.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import quicconn
from tests.support.certs import CertFiles

ALPN = ["quicconn-test"]
PEERS = Path(__file__).resolve().parent / "peers"
INPUTS = [0, 1, 2, 4, 8, 16, 3, 5, 6, 9, 17, 20, 24, 32]


def quicconn_flags() -> dict[str, object]:
    """The same tables as tests/peers/openssl35_domains.py, from quicconn."""
    out: dict[str, dict[str, int | None]] = {
        "defaults": {},
        "set": {},
        "new_domain": {},
    }
    for name, role in (
        ("client", quicconn.CLIENT),
        ("client_thread", quicconn.CLIENT_THREAD),
        ("server", quicconn.SERVER),
    ):
        out["defaults"][name] = quicconn.Context(role).get_domain_flags()
    ctx = quicconn.Context(quicconn.SERVER)
    for flags in INPUTS:
        try:
            ctx.set_domain_flags(flags)
        except ValueError:
            out["set"][str(flags)] = None  # OpenSSL fails and keeps the old flags
        else:
            out["set"][str(flags)] = ctx.get_domain_flags()
    ctx = quicconn.Context(quicconn.SERVER)
    for flags in INPUTS:
        try:
            out["new_domain"][str(flags)] = ctx.new_domain(flags).get_domain_flags()
        except ValueError:
            out["new_domain"][str(flags)] = None
    return dict(out)


@pytest.mark.peer
def test_domain_flags_follow_openssl_35(openssl35: str) -> None:
    root = re.search(r'^ROOT="([^"]+)"', Path(openssl35).read_text(), re.M)
    assert root, f"cannot find OpenSSL 3.5's tree in {openssl35}"
    tree = root.group(1)
    libs = f"{tree}/usr/lib/x86_64-linux-gnu:{tree}/lib/x86_64-linux-gnu"
    result = subprocess.run(
        [
            f"{tree}/usr/lib64/ld-linux-x86-64.so.2",
            "--library-path",
            libs,
            "/usr/bin/python3",
            str(PEERS / "openssl35_domains.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "OPENSSL_MODULES": f"{tree}/usr/lib/x86_64-linux-gnu/ossl-modules",
        },
        check=True,
    )
    openssl = json.loads(result.stdout)
    ours = quicconn_flags()
    for table in ("defaults", "set", "new_domain"):
        assert ours[table] == openssl[table], table
    objects = openssl["objects"]
    assert objects == {
        "domain_is_domain": 1,
        "domain_get0_domain_is_itself": True,
        "listener_from_domain_is_domain": 0,
        "listener_from_domain_get0_domain": True,
        "plain_listener_get0_domain_is_null": True,
        "listener_from_a_listener": False,
    }


def test_the_flag_rules() -> None:
    tables = quicconn_flags()
    assert tables["defaults"] == {"client": 18, "client_thread": 14, "server": 18}
    sets = tables["set"]
    assert isinstance(sets, dict)
    assert sets["0"] == quicconn.DOMAIN_FLAG_MULTI_THREAD  # a model is added
    assert sets["4"] == (
        quicconn.DOMAIN_FLAG_THREAD_ASSISTED | quicconn.DOMAIN_FLAG_MULTI_THREAD
    )
    assert sets["3"] is None and sets["5"] is None and sets["32"] is None
    ctx = quicconn.Context(quicconn.SERVER)
    with pytest.raises(ValueError, match="choose one concurrency model"):
        ctx.set_domain_flags(
            quicconn.DOMAIN_FLAG_SINGLE_THREAD | quicconn.DOMAIN_FLAG_THREAD_ASSISTED
        )
    with pytest.raises(ValueError, match="unknown domain flags 0x20"):
        ctx.new_domain(32)
    with pytest.raises(TypeError):
        ctx.set_domain_flags("fast")  # type: ignore[arg-type]
    assert ctx.get_domain_flags() == 18, "a refused call changes nothing"


def test_domain_objects_and_their_relations(pki: CertFiles) -> None:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    with ctx.new_domain(quicconn.DOMAIN_FLAG_SINGLE_THREAD) as domain:
        assert domain.is_domain() and domain.get0_domain() is domain
        assert not domain.is_listener()
        assert domain.get_domain_flags() == quicconn.DOMAIN_FLAG_SINGLE_THREAD
        assert domain.get_event_timeout() is None  # nothing in it yet
        domain.handle_events()  # a no-op, not an error
        listener = domain.new_listener_from(("127.0.0.1", 0))
        assert not listener.is_domain() and listener.get0_domain() is domain
        assert listener.get_domain_flags() == quicconn.DOMAIN_FLAG_SINGLE_THREAD
        # No BLOCKING flag: its objects start nonblocking (openssl-quic-concurrency).
        assert not listener.get_blocking_mode()
        assert listener.accept_connection() is None
        plain = ctx.new_listener(("127.0.0.1", 0))
        assert plain.get0_domain() is None  # an implicit domain is not visible
        assert plain.get_domain_flags() == 18 and plain.get_blocking_mode()
        cctx = quicconn.Context(quicconn.CLIENT)
        conn = quicconn.Connection(cctx)
        assert not conn.is_domain() and conn.get0_domain() is None
        assert conn.get_domain_flags() == 18
        plain.free()
        listener.free()
    with pytest.raises(ValueError, match="freed"):
        domain.new_listener_from(("127.0.0.1", 0))


def _client(pki: CertFiles, port: int) -> quicconn.Connection:
    cctx = quicconn.Context(quicconn.CLIENT)
    cctx.load_verify_locations(pki.ca)
    cctx.set_alpn_protos(ALPN)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    conn = quicconn.Connection(cctx)
    conn.set_fd(sock.fileno())
    sock.close()
    conn.set1_host("localhost")
    return conn


def test_poll_over_a_domain_waits_on_all_its_listeners(pki: CertFiles) -> None:
    """One blocking poll() on a domain wakes for a connection on any of its
    two listeners and reports IC; the accepted connection belongs to it."""
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(ALPN)
    domain = ctx.new_domain()
    listeners = [domain.new_listener_from(("127.0.0.1", 0)) for _ in range(2)]
    for listener in listeners:
        listener.listen()
    assert quicconn.poll([(domain, quicconn.POLL_EVENT_IC)], timeout=0) == [0]
    port = listeners[1].local_address()[1]
    client = _client(pki, port)
    connector = threading.Thread(target=client.connect)
    connector.start()
    try:
        revents = quicconn.poll([(domain, quicconn.POLL_EVENT_IC)], timeout=10)
        assert revents == [quicconn.POLL_EVENT_IC]
        assert listeners[0].get_accept_connection_queue_len() == 0
        server = listeners[1].accept_connection()
        assert server is not None and server.get0_domain() is domain
        assert domain.get_event_timeout() is not None
        server.accept()
        connector.join(10)
        assert client.is_init_finished()
        server.free()
    finally:
        connector.join(10)
        client.free()
        for listener in listeners:
            listener.free()
    domain.free()
    assert quicconn.poll([(domain, quicconn.POLL_EVENT_IC)], timeout=0) == [
        quicconn.POLL_EVENT_F
    ]
    assert quicconn.handle_events(domain) is None
