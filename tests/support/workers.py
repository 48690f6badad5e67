"""Worker targets for tests of quicconn.scale (module-level: workers are
spawned interpreters that import them).

``echo_worker`` echoes each connection's default stream, prefixed with
the worker's index, so a client learns which worker served it.
"""

from __future__ import annotations

import selectors
from typing import Any

import quicconn
from quicconn.scale import Worker
from tests.support.echo import EchoServer


def echo_worker(
    worker: Worker, cert: str, key: str, alpn: list[str], flags: int = 0
) -> dict[str, Any]:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protos(alpn)
    # The tests are about where datagrams go, not timeouts: a client starved
    # by a loaded machine keeps its half-open connection.
    ctx.handshake_timeout = 30
    listener = worker.new_listener(ctx, flags)
    server = EchoServer(listener, prefix=bytes([worker.index]))
    selector = selectors.DefaultSelector()
    selector.register(listener.fileno(), selectors.EVENT_READ)
    while not worker.stopping:
        timeout = listener.get_event_timeout()
        selector.select(0.05 if timeout is None else min(timeout, 0.05))
        listener.handle_events()
        server.step()
    selector.close()
    return {
        "completed": server.completed,
        "errors": [repr(e) for e in server.errors],
        "open": len(server.conns),
    }
