"""The differential suite: every scenario through OpenSSL 3.5's libssl and quicconn.

One child process (under trixie's loader, see process.py) runs every
scenario twice, against a fresh quicconn peer each time: once with libssl
3.5 through ctypes, once with quicconn.  Each test compares one scenario's
two traces step by step: the call's result (return value and
``SSL_get_error`` code, or the value a getter reports) and the
connection's event state after it.  A step where quicconn deliberately
differs must match its entry in ``differences.py`` on both sides.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import quicconn
from quicconn._certs import make_pki
from tests.support.peers import require_peer

from .differences import CORE_DIFFERENCES, DIFFERENCES
from .process import run_scenarios
from .scenarios import SCENARIOS

pytestmark = pytest.mark.peer


@pytest.fixture(scope="session")
def differential_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_peer("openssl35")
    certdir = tmp_path_factory.mktemp("differential-pki")
    make_pki(certdir)
    make_pki(certdir, prefix="other-")
    return run_scenarios(certdir, [])


def _steps(run: dict[str, Any]) -> list[list[Any]]:
    if "error" in run:
        pytest.fail(f"the scenario raised:\n{run['error']}")
    return [step for step in run["trace"] if not step[0].startswith("#")]


def _render(steps: list[list[Any]]) -> str:
    return "\n".join(f"  {i:2} {json.dumps(s)}" for i, s in enumerate(steps))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_observations_as_openssl35(
    differential_runs: dict[str, Any], name: str
) -> None:
    result = differential_runs["results"][name]
    ours = _steps(result["quicconn"])
    theirs = _steps(result["openssl"])
    version = differential_runs["version"]
    report = f"{version}:\n{_render(theirs)}\nquicconn:\n{_render(ours)}"
    assert len(ours) == len(theirs), report
    # The differential child runs with this process's environment, so its
    # contexts run on the core a context made here runs on.
    core = quicconn.Context(quicconn.CLIENT).core
    on_core = CORE_DIFFERENCES.get(core, {})
    seen: Counter[str] = Counter()
    used = set()
    for index, (o, q) in enumerate(zip(theirs, ours, strict=True)):
        assert o[0] == q[0], f"step {index}: different calls\n{report}"
        key = (name, o[0], seen[o[0]])
        seen[o[0]] += 1
        assert o[2:] == q[2:], f"step {index} ({o[0]}): event state differs\n{report}"
        if key in on_core:
            expected_o, accepted_q, doc = on_core[key]
            used.add(key)
            assert o[1] == expected_o, (
                f"step {index}: OpenSSL changed ({doc})\n{report}"
            )
            assert q[1] in accepted_q, (
                f"step {index}: quicconn on {core} changed ({doc})\n{report}"
            )
        elif key in DIFFERENCES:
            expected_o, expected_q, doc = DIFFERENCES[key]
            used.add(key)
            assert o[1] == expected_o, (
                f"step {index}: OpenSSL changed ({doc})\n{report}"
            )
            assert q[1] == expected_q, (
                f"step {index}: quicconn changed ({doc})\n{report}"
            )
        else:
            assert o[1] == q[1], f"step {index} ({o[0]}) differs\n{report}"
    stale = {k for k in [*DIFFERENCES, *on_core] if k[0] == name} - used
    assert not stale, f"documented differences the run never reached: {stale}"


def test_every_documented_difference_is_in_api_mapping() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api-mapping.md").read_text()
    entries = [*DIFFERENCES.values()]
    entries += [e for per_core in CORE_DIFFERENCES.values() for e in per_core.values()]
    for _o, _q, anchor in entries:
        assert (
            f"**{anchor}**" in doc.lower()
            or f"**{anchor}." in doc.lower()
            or (anchor.lower() in doc.lower())
        ), anchor


def test_the_suite_ran_against_openssl_35(differential_runs: dict[str, Any]) -> None:
    assert differential_runs["version"].startswith("OpenSSL 3.5.")
    assert set(differential_runs["results"]) == set(SCENARIOS)


def iter_names() -> Iterator[str]:  # for tooling: python -m pytest --collect-only
    yield from SCENARIOS
