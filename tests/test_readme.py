"""The README works as written: its usage snippets against ``quicconn serve``,
and its two commands from a fresh virtual environment."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_udp_port
from tests.support.peers import wait_udp_bound

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of the README section ``## section``."""
    text = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], int]]:
    """A directory to run the snippets in, with ``quicconn`` on PATH (this
    checkout's), and a free port to use instead of the README's 4433 (other
    test runs on this machine may hold 4433: the only change made)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "quicconn"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m quicconn "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    work = tmp_path / "work"
    work.mkdir()
    yield work, env, free_udp_port()


def test_the_usage_snippets_run_as_written_against_quicconn_serve(workdir) -> None:
    work, env, port = workdir

    def as_run(text: str) -> str:
        return text.replace("4433", str(port))

    (start_server,) = blocks("Use it", "sh")
    server = subprocess.Popen(
        ["bash", "-c", as_run(start_server) + "wait\n"],
        cwd=work,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_udp_bound(port, timeout=30)
        deadline = time.monotonic() + 10
        while not (work / "pki" / "ca.pem").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        outputs = []
        for snippet in blocks("Use it", "python"):
            result = subprocess.run(
                [sys.executable, "-c", as_run(snippet)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, snippet + result.stderr
            outputs.append(result.stdout)
        (get,) = blocks("HTTP/3 from the command line", "sh")
        fetched = subprocess.run(
            ["bash", "-c", as_run(get)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        _, serve_log = server.communicate(timeout=15)
    assert outputs == [
        "b'hello over QUIC\\n'\n",
        "b'hello over QUIC\\n'\n",
        "HTTP/3 200 hello over QUIC\n\n",
        "3 HTTP/3 hello over QUIC\n\n",  # AsyncHTTP3Transport
        "b'hello over QUIC\\n'\n",  # quicconn.asyncio
    ]
    assert fetched.returncode == 0, fetched.stderr
    assert (work / "downloads" / "hello.txt").read_text() == "hello over QUIC\n"
    assert "served" in serve_log and "SIGTERM" in serve_log


def checkout_copy(target: Path) -> Path:
    """The repository's tracked files (and this worktree's changes to them),
    as a fresh clone would have them."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = ROOT / name.decode()
        if not source.is_file():
            continue  # deleted in the working tree
        destination = target / name.decode()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


@pytest.mark.peer
@pytest.mark.timeout(900)
def test_the_readme_commands_work_from_a_fresh_virtual_environment(
    tmp_path: Path,
) -> None:
    """``pip install '.[fast]' && quicconn demo``, then the Python parts of the test
    command: ``pip install -e '.[test,fast]'``, ``python -m interop.peers
    install`` (the system packages and the peers are already on this machine;
    the venv gets what aioquic's examples import), and pytest collecting the
    whole suite and running a few files that need the extras.

    The venv sees no site-packages but its own; pip's download cache makes
    it quick without making it less fresh.
    """
    checkout = checkout_copy(tmp_path / "quicconn")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{venv / 'bin'}:{env['PATH']}",
        VIRTUAL_ENV=str(venv),
        # The peers this machine has, instead of downloading them again.
        QUICCONN_PEERS_DIR=str(ROOT / ".peers"),
        NO_MKDOCS_2_WARNING="1",
    )

    def run(command: str, timeout: float) -> str:
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, (
            command,
            result.stdout[-3000:],
            result.stderr[-3000:],
        )
        return result.stdout

    isolated = run("python -c 'import sys; print(sys.prefix, sys.path)'", 60)
    assert str(venv) in isolated and "site-packages" in isolated
    assert "/usr/lib/python3/dist-packages" not in isolated

    (try_it,) = blocks("Try it", "sh")
    demo = run(try_it.strip(), 600)
    assert "matches the file" in demo

    (test_command,) = blocks("Run the tests", "sh")
    install, peers, pytest_part = (p.strip() for p in test_command.split("&&"))
    assert pytest_part == "python -m pytest -q"
    run(install, 600)
    run(peers, 600)
    collected = run("python -m pytest -q --collect-only", 300)
    assert re.search(r"\d+ tests collected", collected), collected[-2000:]
    assert "error" not in collected.splitlines()[-1].lower()
    run(
        "python -m pytest -q -p no:cacheprovider tests/test_docs.py "
        "tests/test_validation.py tests/test_architecture.py",
        600,
    )
