"""The conformance matrix: every test here runs once per cell.

A cell is (core, mode, transport): each installed core backend
(``Context(..., core=name)`` on both sides), blocking and nonblocking
connections, real UDP on 127.0.0.1 and the in-memory ``DatagramPair``.
Test IDs read ``test_x[aioquic-blocking-udp]``.

A test that lacks the ``ends`` (or ``cell``) fixture would run once, over
whatever core is the default: collection refuses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import CELLS, Cell, Endpoints
from tests.support.certs import CertFiles
from tests.support.stream_scripts import ListenerPool

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=CELLS, ids=[c.id for c in CELLS])
def cell(request: pytest.FixtureRequest) -> Cell:
    value: Cell = request.param
    return value


@pytest.fixture(scope="session")
def conformance_pool(pki: CertFiles) -> Iterator[ListenerPool]:
    """UDP listeners, one per (core, server settings), shared by all cells."""
    pool = ListenerPool(pki)
    yield pool
    pool.close()


@pytest.fixture
def ends(cell: Cell, pki: CertFiles, conformance_pool: ListenerPool) -> Endpoints:
    """The pair factory every ``check_*`` takes."""
    return Endpoints(cell, pki, conformance_pool)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if HERE not in path.parents:
            continue
        fixtures = getattr(item, "fixturenames", ())
        if "cell" not in fixtures:
            raise pytest.UsageError(
                f"{item.nodeid}: a conformance test must run over the matrix "
                "(take the `ends` or `cell` fixture)"
            )
