"""Exceptions raised inside a core end the connection, naming the cause.

A core that raises while it processes a datagram, handles its timer or
builds a datagram can no longer be trusted.  It used to be logged and the
datagram dropped, every time, and the connection then waited for its idle
timeout; now it fails at once with an error naming the exception, and the
peer is told (CONNECTION_CLOSE with INTERNAL_ERROR) when the core can still
send.  The case that showed it: a server certificate whose DNS name is
``*`` made aioquic's host name check raise inside its own error handler.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import quicconn
from quicconn._certs import make_pki
from quicconn._core import rules
from quicconn._objects.connection import channel_of
from quicconn.testing import FakeClock
from tests.support.certs import CertFiles
from tests.support.pair import PairedEndpoints, make_pair

ALPN = ["quicconn-test"]


@pytest.fixture(scope="module")
def star_pki() -> CertFiles:
    """A CA and a leaf whose only name is ``*`` (RSA: its server flight
    spans datagrams, which is what left aioquic's client waiting)."""
    return make_pki(Path(tempfile.mkdtemp()), names=("*",), key_kind="rsa2048")


def run_until_failure(ends: PairedEndpoints, call: Any, limit: float) -> Exception:
    """Drive both ends on the fake clock until ``call()`` raises something
    other than WantReadError; that exception (fail after ``limit`` s)."""
    clock: FakeClock = ends.clock
    start = clock.now()
    while True:
        try:
            call()
        except quicconn.WantReadError:
            pass
        except quicconn.Error as exc:
            return exc
        ends.tick_all()
        if ends.pair.in_flight() == 0:
            wait = ends.next_deadline()
            assert wait is not None, "nothing is armed: the connection hangs"
            clock.advance(wait)
        assert clock.now() - start < limit, f"no failure within {limit} s"


def run_until(ends: PairedEndpoints, done: Any) -> None:
    """Drive both ends on the fake clock until ``done()`` (WantReadError
    counts as not yet)."""
    for _ in range(1000):
        try:
            if done():
                return
        except quicconn.WantReadError:
            pass
        ends.tick_all()
        if ends.pair.in_flight() == 0:
            wait = ends.next_deadline()
            assert wait is not None
            ends.clock.advance(wait)
    raise AssertionError("never done")


@pytest.mark.usefixtures("each_core")
def test_a_certificate_named_star_fails_verification_at_once(
    star_pki: CertFiles,
) -> None:
    ends = make_pair(star_pki)
    try:
        failure = run_until_failure(ends, ends.client.connect, limit=5.0)
        assert isinstance(failure, quicconn.VerificationError), repr(failure)
        assert "certificate verification failed" in str(failure)
        info = ends.client.get_conn_close_info()
        assert info is not None and info.is_local and info.is_transport
        assert info.error_code - rules.CRYPTO_ERROR_BASE in rules.CERTIFICATE_ALERTS
    finally:
        ends.client.free()
        ends.listener.free()


# -- faults injected into each core ------------------------------------------


class FaultyNative:
    """qh3's Rust core, with a method that raises once armed."""

    def __init__(self, native: Any) -> None:
        object.__setattr__(self, "_native", native)
        object.__setattr__(self, "fault", None)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._native, name)
        if name == self.fault:

            def raising(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("injected fault")

            return raising
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "fault":
            object.__setattr__(self, name, value)
        else:
            setattr(self._native, name, value)


#: Where a fault goes: the core method, per backend, that raises.
METHODS = {
    "aioquic": {
        "receive": "receive_datagram",
        "timer": "handle_timer",
        "send": "datagrams_to_send",
    },
    "qh3": {
        "receive": "receive_datagram",
        "timer": "handle_timer",
        "send": "poll_transmit",
    },
}
DOING = {
    "receive": "processing a datagram",
    "timer": "handling its timer",
    "send": "building a datagram",
}


@pytest.fixture
def arm(each_core: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``arm(conn, where)`` makes ``conn``'s core raise from then on."""
    if each_core == "qh3":
        from quicconn._core.qh3 import handshake

        real = handshake.QuicConnectionCore

        def faulty(*args: Any) -> FaultyNative:
            return FaultyNative(real(*args))

        monkeypatch.setattr(handshake, "QuicConnectionCore", faulty)

        def arm_qh3(conn: quicconn.Connection, where: str) -> None:
            native = channel_of(conn).require_core()._native  # type: ignore[attr-defined]
            native.fault = METHODS["qh3"][where]

        yield arm_qh3
    elif each_core == "aioquic":
        from quicconn._core.aioquic.connection import AdaptedQuicConnection

        armed: dict[int, str] = {}
        for method in METHODS["aioquic"].values():
            original = getattr(AdaptedQuicConnection, method)

            def wrapper(
                self: Any, *args: Any, _m: str = method, _o: Any = original, **kw: Any
            ) -> Any:
                if armed.get(id(self)) == _m:
                    raise RuntimeError("injected fault")
                return _o(self, *args, **kw)

            monkeypatch.setattr(AdaptedQuicConnection, method, wrapper)

        def arm_aioquic(conn: quicconn.Connection, where: str) -> None:
            quic = channel_of(conn).require_core()._quic  # type: ignore[attr-defined]
            armed[id(quic)] = METHODS["aioquic"][where]

        yield arm_aioquic
    else:
        pytest.skip(f"no fault injection written for the {each_core!r} core")


@pytest.mark.parametrize("where", ["receive", "timer", "send"])
def test_a_core_that_raises_ends_its_connection_naming_the_exception(
    pki: CertFiles, arm: Any, where: str
) -> None:
    ends = make_pair(pki)
    try:
        ends.handshake()
        server = ends.server
        assert server is not None
        ends.client.write(b"to the server")  # opens the stream both use
        run_until(ends, lambda: server.read(100) == b"to the server")
        arm(ends.client, where)
        # Traffic both ways: the client receives, arms timers and sends.
        server.write(b"to the client")
        ends.client.write(b"again")
        start = ends.clock.now()
        failure = run_until_failure(ends, lambda: ends.client.read(100), limit=5.0)
        assert ends.clock.now() - start < 1.0, "it waited for a timeout"
        assert isinstance(failure, quicconn.ConnectionTerminatedError)
        reason = f"the QUIC core failed {DOING[where]}: RuntimeError: injected fault"
        assert reason in str(failure)
        info = ends.client.get_conn_close_info()
        assert info is not None and info.is_local and info.is_transport
        assert info.error_code == quicconn.QUIC_ERR_INTERNAL_ERROR
        if where != "send":
            # The core could still send: the server is told at once.
            for _ in range(100):
                if server.get_conn_close_info() is not None:
                    break
                ends.tick_all()
                ends.clock.advance(0.001)
            peer = server.get_conn_close_info()
            assert peer is not None and not peer.is_local
            assert peer.error_code == quicconn.QUIC_ERR_INTERNAL_ERROR
            assert "injected fault" in peer.reason
    finally:
        ends.client.free()
        if ends.server is not None:
            ends.server.free()
        ends.listener.free()


def test_exceptions_out_of_tls_become_alerts_naming_them() -> None:
    error = ValueError("bad name")
    code, reason = rules.tls_exception_close(error, checking_certificate=True)
    assert code == rules.CRYPTO_ERROR_BASE + rules.ALERT_BAD_CERTIFICATE
    assert "ValueError: bad name" in reason
    code, reason = rules.tls_exception_close(error, checking_certificate=False)
    assert code == rules.CRYPTO_ERROR_BASE + rules.ALERT_INTERNAL_ERROR
    assert reason == "TLS failed: ValueError: bad name"
