"""Drive nonblocking quicconn objects the way an application event loop would."""

from __future__ import annotations

import selectors
import time
from collections.abc import Callable
from typing import Any, TypeVar

import quicconn

T = TypeVar("T")


def wait_for_activity(obj: Any, limit: float = 1.0) -> None:
    """Wait on the object's descriptor for what it desires, up to its timeout."""
    events = selectors.EVENT_READ if obj.net_read_desired() else 0
    if obj.net_write_desired():
        events |= selectors.EVENT_WRITE
    timeout = obj.get_event_timeout()
    timeout = limit if timeout is None else min(timeout, limit)
    with selectors.DefaultSelector() as selector:
        if events:
            selector.register(obj.get_rpoll_descriptor(), events)
        selector.select(timeout)


def retry(obj: Any, call: Callable[[], T], deadline: float = 30.0) -> T:
    """Retry ``call`` on WantRead/WantWrite, waiting as the OpenSSL demos do."""
    end = time.monotonic() + deadline
    while True:
        try:
            return call()
        except (quicconn.WantReadError, quicconn.WantWriteError):
            if time.monotonic() > end:
                raise TimeoutError(f"{call} did not complete in {deadline} s") from None
            wait_for_activity(obj)


def read_to_fin(obj: Any, reader: Any = None) -> bytes:
    """Read until ZeroReturnError, nonblocking."""
    source = reader if reader is not None else obj
    out = bytearray()
    while True:
        try:
            out += retry(obj, source.read)
        except quicconn.ZeroReturnError:
            return bytes(out)


def write_all(
    obj: Any, data: bytes, writer: Any = None, conclude: bool = False
) -> None:
    """Write everything with nonblocking partial writes, then optionally FIN."""
    target = writer if writer is not None else obj
    view = memoryview(data)
    while view:
        sent = retry(obj, lambda chunk=view: target.write(chunk))
        view = view[sent:]
    if conclude:
        retry(obj, target.stream_conclude)
