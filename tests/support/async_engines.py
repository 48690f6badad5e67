"""An offload engine the test controls, for MODE_ASYNC tests.

``ControlledEngine`` holds every signing request until the test says what
happens to it, and completes it from a thread of its own (named
``test-engine``), as a hardware engine's completion would arrive.  A script
of per-submission outcomes lets a test make the engine busy (EAGAIN) or
refuse (ERR).
"""

from __future__ import annotations

import threading
from collections import deque

import quicconn
from quicconn import SignRequest

HOLD = "hold"  #: accept and keep the request until complete()/fail()
AUTO = "auto"  #: accept and sign at once, from the engine thread
EAGAIN = "eagain"  #: refuse for now (ASYNC_STATUS_EAGAIN)
REFUSE = "refuse"  #: refuse for good (ASYNC_STATUS_ERR)


class ControlledEngine(quicconn.AsyncEngine):
    def __init__(self, default: str = HOLD) -> None:
        self.default = default
        self.script: deque[str] = deque()
        self.held: list[SignRequest] = []
        self.submissions: list[str] = []
        self._cond = threading.Condition()

    def submit(self, request: SignRequest) -> int:
        outcome = self.script.popleft() if self.script else self.default
        with self._cond:
            self.submissions.append(outcome)
            if outcome == EAGAIN:
                return quicconn.ASYNC_STATUS_EAGAIN
            if outcome == REFUSE:
                return quicconn.ASYNC_STATUS_ERR
            if outcome == HOLD:
                self.held.append(request)
                self._cond.notify_all()
                return quicconn.ASYNC_STATUS_OK
        self._in_engine_thread(lambda: request.complete(request.sign()))
        return quicconn.ASYNC_STATUS_OK

    def wait_held(self, count: int = 1, timeout: float = 10.0) -> list[SignRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.held) >= count, timeout):
                raise AssertionError(f"the engine never held {count} request(s)")
            return list(self.held)

    def complete(self, request: SignRequest | None = None) -> SignRequest:
        """Sign a held request (the oldest by default) in the engine thread."""
        request = self._take(request)
        self._in_engine_thread(lambda: request.complete(request.sign()), wait=True)
        return request

    def fail(self, reason: str, request: SignRequest | None = None) -> SignRequest:
        request = self._take(request)
        self._in_engine_thread(lambda: request.fail(reason), wait=True)
        return request

    def _take(self, request: SignRequest | None) -> SignRequest:
        with self._cond:
            if request is None:
                request = self.held[0]
            self.held.remove(request)
        return request

    @staticmethod
    def _in_engine_thread(fn: object, wait: bool = False) -> None:
        assert callable(fn)
        thread = threading.Thread(target=fn, name="test-engine", daemon=True)
        thread.start()
        if wait:
            thread.join(timeout=10)
