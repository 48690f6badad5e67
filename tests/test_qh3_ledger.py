"""The qh3 backend's stream ledger: when a FIN held back by pacing has left.

qh3 can hold a FIN-only frame behind pacing, and drops a pacing timer that
lapsed with nothing left to send.  The ledger keeps "handed over, not yet
shown to have left" until a flush at or after the last pacing deadline, and
``shutdown()`` waits for that.  The multi-stream demo's blocking
``shutdown()`` once waited for good (2 runs in 80 under CPU load): no flush
came after the deadline, because no timer asked for one.  The ledger now
names that deadline, and the core's timer includes it.
"""

from __future__ import annotations

from quicconn._core.qh3.streams import StreamLedger
from quicconn._core.settings import CoreSettings


class PacedCore:
    """What :meth:`StreamLedger.flushed` reads of qh3's core: its timer."""

    def __init__(self) -> None:
        self.timer: tuple[str, float] | None = None

    def get_timer(self) -> tuple[str, float] | None:
        return self.timer


def test_a_fin_held_by_pacing_names_the_flush_that_proves_it_left() -> None:
    ledger = StreamLedger(CoreSettings(is_client=True))
    core = PacedCore()
    assert ledger.flush_due_at() is None
    ledger.send_stream_data(None, 0, b"GET /\r\n", True)
    core.timer = ("pacing", 5.0)
    ledger.flushed(core, 4.0)  # type: ignore[arg-type]
    assert ledger.flush_due_at() == 5.0
    core.timer = None  # qh3 dropped the lapsed pacing timer
    ledger.flushed(core, 4.5)  # type: ignore[arg-type]
    assert ledger.flush_due_at() == 5.0  # not yet shown to have left
    ledger.flushed(core, 5.0)  # type: ignore[arg-type]
    assert ledger.flush_due_at() is None


def test_an_unpaced_write_needs_no_timer() -> None:
    ledger = StreamLedger(CoreSettings(is_client=True))
    ledger.send_stream_data(None, 0, b"data", False)
    assert ledger.flush_due_at() is None  # the write's own flush clears it
    ledger.flushed(PacedCore(), 1.0)  # type: ignore[arg-type]
    assert ledger.flush_due_at() is None
