"""The documentation builds, with warnings as errors, and its API reference
covers every public name (the reference is generated from the docstrings)."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import quicconn
import quicconn.asyncio
import quicconn.http
import quicconn.testing
import quicconn.trio

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(site_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def documented_names(site: Path) -> set[str]:
    """The Python objects the reference documents (its objects.inv)."""
    data = (site / "objects.inv").read_bytes()
    _, _, compressed = data.partition(b"zlib.\n")
    lines = zlib.decompress(compressed).decode().splitlines()
    return {line.split()[0] for line in lines if " py:" in line}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "module",
    [quicconn, quicconn.http, quicconn.testing, quicconn.asyncio, quicconn.trio],
)
def test_the_reference_covers_every_public_name(site: Path, module) -> None:
    names = documented_names(site)
    missing = [
        name for name in module.__all__ if f"{module.__name__}.{name}" not in names
    ]
    assert missing == []


@pytest.mark.timeout(300)
def test_the_names_once_missing_from_the_docs_have_pages(site: Path) -> None:
    page = (site / "reference" / "quicconn" / "index.html").read_text()
    for name in ("ConnState", "DTLSState", "ListenerStats", "DTLSListenerStats",
                 "Role", "PollItem"):  # fmt: skip
        assert f'id="quicconn.{name}"' in page, name
    http = (site / "reference" / "http" / "index.html").read_text()
    for name in ("HTTP3Transport", "Response", "HttpClient", "TrailersReceived"):
        assert name in http, name
    assert 'id="quicconn.http.transport.AsyncHTTP3Transport"' in http
