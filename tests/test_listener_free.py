"""``listener.free()`` from another thread wakes a thread blocked in
``accept_connection()``, also while accepted connections keep the socket
open (issue 16, item 9; docs/server.md)."""

from __future__ import annotations

import threading
import time

import pytest

import quicconn
from tests.support.certs import CertFiles

pytestmark = pytest.mark.usefixtures("each_core")


def test_free_wakes_a_blocked_accept_while_connections_live(pki: CertFiles) -> None:
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["quicconn-test"]
    )
    port = listener.local_address()[1]
    accepted: list[quicconn.Connection] = []
    first = threading.Thread(
        target=lambda: accepted.append(listener.accept_connection())
    )
    first.start()
    client = quicconn.connect(
        "127.0.0.1", port, alpn=["quicconn-test"], cafile=str(pki.ca)
    )
    first.join(10)
    (server,) = accepted  # alive: it keeps the listener's socket open

    outcome: list[BaseException | None] = []

    def accept_again() -> None:
        try:
            listener.accept_connection()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    blocked = threading.Thread(target=accept_again, daemon=True)
    blocked.start()
    time.sleep(0.3)  # it is asleep in accept_connection() now
    assert blocked.is_alive()
    started = time.monotonic()
    listener.free()
    blocked.join(5)
    assert not blocked.is_alive(), "listener.free() did not wake accept_connection()"
    assert time.monotonic() - started < 2
    (error,) = outcome
    assert isinstance(error, quicconn.SyscallError)
    assert "freed" in str(error)
    # The accepted connection still works after the listener is gone.
    client.write(b"ping")
    server.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_AUTO_BIDI)
    assert server.read() == b"ping"
    client.free()
    server.free()
