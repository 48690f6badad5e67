"""Install and locate the independent QUIC peers (``python -m interop.peers``).

Every feature of quicconn that crosses the wire is also tested against QUIC
stacks that are not aioquic.  This module installs them, idempotently, from
the package registries a CI machine reaches, into a project-local directory
(``.peers/`` at the repository root, gitignored):

``system``
    The Debian packages the tests and the other installers need from the
    system itself: ``tshark`` (the interop tests read the simulator's packet
    captures with it), ``openssl`` (the DTLS tests' independent peer) and
    ``debian-archive-keyring`` (it verifies the trixie archive for
    ``openssl35``).  Installed with apt, as root or through sudo.
``ngtcp2``
    ``gtlsserver`` / ``gtlsclient`` (ngtcp2 with GnuTLS, HTTP/3) from the
    system's Debian packages ``ngtcp2-server`` / ``ngtcp2-client``.
``openssl35``
    OpenSSL 3.5's ``openssl`` program (``s_client -quic``) from Debian trixie,
    unpacked privately with ``dpkg -x`` into ``.peers/openssl35/`` (never into
    ``/``) and run through ``.peers/bin/openssl35``, a wrapper that starts it
    with trixie's dynamic loader and libraries.  The system's OpenSSL is left
    alone.
``quinn``
    ``quinn-peer``: a DATAGRAM (RFC 9221) echo server on quinn 0.9 (Rust),
    built from ``interop/quinn_peer/`` with Debian's cargo, offline, from
    Debian's packaged crate sources, into ``.peers/quinn/``.
``aioquic-examples``
    ``http3_server.py`` / ``http3_client.py`` (and ``demo.py``, templates)
    from the sdist of the installed aioquic version, unpacked into
    ``.peers/aioquic-examples/``; their extra requirements are pip-installed.

Commands::

    python -m interop.peers install [--only COMPONENT,...] [--force]  # all by default
    python -m interop.peers check      # verify each peer runs; exit 1 if any fails
    python -m interop.peers paths      # JSON: where each peer is (null if missing)

Tests locate peers with :func:`locate` (in-process) or ``paths`` (JSON).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The repository root (this file is ``<root>/interop/peers.py``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where peers are installed unless ``--dir`` or ``$QUICCONN_PEERS_DIR`` says otherwise.
DEFAULT_PEERS_DIR = REPO_ROOT / ".peers"

COMPONENTS = ("system", "ngtcp2", "openssl35", "aioquic-examples", "quinn")
#: Debian's packaged Rust crates and toolchain that build interop/quinn_peer
#: offline (no crates.io): quinn 0.9, rustls 0.20, tokio 1.
QUINN_PACKAGES = (
    "librust-quinn-dev",
    "librust-rustls-pemfile-dev",
    "librust-tokio-dev",
    "cargo",
    "rustc",
)
QUINN_SOURCE = Path(__file__).resolve().parent / "quinn_peer"

#: Debian packages of the ``system`` component, each with how to tell it is
#: there: a program on PATH, or a file.
SYSTEM_PACKAGES = {
    "tshark": "tshark",
    "openssl": "openssl",
    "debian-archive-keyring": "/usr/share/keyrings/debian-archive-keyring.gpg",
}

NGTCP2_PACKAGES = ("ngtcp2-client", "ngtcp2-server")
#: Trixie packages that make up a self-contained OpenSSL 3.5 ``openssl``.
OPENSSL35_PACKAGES = ("openssl", "libssl3t64", "libc6", "libzstd1", "zlib1g")
OPENSSL35_SUITE = "trixie"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FALLBACK_MIRROR = "http://deb.debian.org/debian"

#: The example programs the tests and the runner use, inside the sdist's examples/.
AIOQUIC_PROGRAMS = ("http3_server.py", "http3_client.py")
#: Where the sdist's ``requirements/examples.txt`` is kept beside the examples.
EXAMPLES_REQUIREMENTS = "requirements-examples.txt"
#: Import name -> distribution name, where they differ.
_DISTRIBUTION_FOR_MODULE = {"yaml": "PyYAML", "OpenSSL": "pyOpenSSL"}

#: Debian multiarch triplet and dynamic loader for each dpkg architecture.
_ARCHES = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}


class PeerInstallError(RuntimeError):
    """An installation step failed; the message says which and why."""


# ----------------------------------------------------------------------
# locating
# ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeerPaths:
    """Where each installed peer is; ``None`` for one that is missing."""

    peers_dir: str
    tshark: str | None
    openssl: str | None
    gtlsserver: str | None
    gtlsclient: str | None
    openssl35: str | None
    aioquic_examples: str | None
    http3_server: str | None
    http3_client: str | None
    quinn_peer: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    def missing(self) -> list[str]:
        """Names of the peers that are not installed."""
        return [name for name, value in self.as_dict().items() if value is None]


def peers_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The install directory: ``override``, ``$QUICCONN_PEERS_DIR`` or ``.peers/``."""
    if override is not None:
        return Path(override).resolve()
    env = os.environ.get("QUICCONN_PEERS_DIR")
    return Path(env).resolve() if env else DEFAULT_PEERS_DIR


def _find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    # gtlsserver lives in /usr/sbin, which is not on every user's PATH.
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


def locate(directory: str | os.PathLike[str] | None = None) -> PeerPaths:
    """Find the installed peers by looking at the file system (no subprocess)."""
    root = peers_dir(directory)
    wrapper = root / "bin" / "openssl35"
    examples = root / "aioquic-examples"
    server = examples / "http3_server.py"
    client = examples / "http3_client.py"
    return PeerPaths(
        peers_dir=str(root),
        tshark=_find_program("tshark"),
        openssl=_find_program("openssl"),
        gtlsserver=_find_program("gtlsserver"),
        gtlsclient=_find_program("gtlsclient"),
        openssl35=str(wrapper) if os.access(wrapper, os.X_OK) else None,
        aioquic_examples=_existing(examples) if server.exists() else None,
        http3_server=_existing(server),
        http3_client=_existing(client),
        quinn_peer=_existing(root / "quinn" / "quinn-peer"),
    )


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def _run(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command; raise :class:`PeerInstallError` with its output on failure."""
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise PeerInstallError(f"{args[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise PeerInstallError(f"{' '.join(args)} took over {timeout:.0f} s") from exc
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        raise PeerInstallError(
            f"{' '.join(args)} failed (exit code {proc.returncode}):\n{output[-3000:]}"
        )
    return proc


def _sudo_prefix() -> list[str]:
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        raise PeerInstallError(
            "installing Debian packages needs root: run as root or install sudo"
        )
    return [sudo]


_apt_lists_fresh = False


def _apt_install(component: str, packages: Sequence[str]) -> None:
    """``apt-get install -y PACKAGES`` (after one ``apt-get update`` per run)."""
    global _apt_lists_fresh
    if shutil.which("apt-get") is None:
        raise PeerInstallError(f"{component}: apt-get not found; this needs Debian")
    sudo = _sudo_prefix()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_lists_fresh:
        _log(f"{component}: apt-get update")
        _run([*sudo, "apt-get", "update", "-qq"], env=env)
        _apt_lists_fresh = True
    _log(f"{component}: apt-get install -y {' '.join(packages)}")
    _run([*sudo, "apt-get", "install", "-y", "-qq", *packages], env=env)


def _dpkg_architecture() -> str:
    return _run(["dpkg", "--print-architecture"]).stdout.strip()


# ----------------------------------------------------------------------
# the system's own tools (tshark, openssl, the archive keyring)
# ----------------------------------------------------------------------


def _system_package_present(check: str) -> bool:
    if check.startswith("/"):
        return Path(check).is_file()
    return _find_program(check) is not None


def missing_system_packages() -> list[str]:
    """The packages of :data:`SYSTEM_PACKAGES` that are not installed."""
    return [
        name
        for name, check in SYSTEM_PACKAGES.items()
        if not _system_package_present(check)
    ]


def install_system(*, force: bool = False) -> None:
    """``apt-get install -y tshark openssl debian-archive-keyring`` if missing."""
    missing = list(SYSTEM_PACKAGES) if force else missing_system_packages()
    if not missing:
        _log(f"system: present ({', '.join(SYSTEM_PACKAGES)})")
        return
    _apt_install("system", missing)
    still = missing_system_packages()
    if still:
        raise PeerInstallError(f"system: installed, but still missing {still}")


def check_system() -> str:
    missing = missing_system_packages()
    if missing:
        raise PeerInstallError(f"system: not installed: {', '.join(missing)}")
    tshark = _run(["tshark", "--version"], timeout=60).stdout.splitlines()[0]
    openssl = _run(["openssl", "version"], timeout=30).stdout.strip()
    return f"{tshark}; {openssl}"


# ----------------------------------------------------------------------
# ngtcp2 (system packages)
# ----------------------------------------------------------------------


def install_ngtcp2(*, force: bool = False) -> None:
    """``apt-get install -y ngtcp2-client ngtcp2-server`` unless already there."""
    found = locate()
    if not force and found.gtlsserver and found.gtlsclient:
        _log(f"ngtcp2: present ({found.gtlsserver}, {found.gtlsclient})")
        return
    _apt_install("ngtcp2", NGTCP2_PACKAGES)
    found = locate()
    if not (found.gtlsserver and found.gtlsclient):
        raise PeerInstallError(
            "ngtcp2: packages installed but gtlsserver/gtlsclient not found"
        )


def check_ngtcp2() -> str:
    found = locate()
    if not (found.gtlsserver and found.gtlsclient):
        raise PeerInstallError("ngtcp2: gtlsserver/gtlsclient not installed")
    for program in (found.gtlsserver, found.gtlsclient):
        _run([program, "--help"], timeout=30)
    return f"{found.gtlsserver}, {found.gtlsclient}"


# ----------------------------------------------------------------------
# OpenSSL 3.5 from Debian trixie, unpacked privately
# ----------------------------------------------------------------------


def _apt_sources() -> Iterable[tuple[str, list[str]]]:
    """Yield ``(uri, suites)`` for every Debian source the system's apt knows."""
    etc = Path("/etc/apt")
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()


def debian_mirror() -> str:
    """The system's Debian archive URI (not security, not a third-party repo)."""
    override = os.environ.get("QUICCONN_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    for uri, suites in _apt_sources():
        if not uri.rstrip("/").endswith("/debian"):
            continue
        if any(not re.search(r"-(security|updates|backports)$", s) for s in suites):
            return uri.rstrip("/")
    return FALLBACK_MIRROR


class _PrivateApt:
    """``apt-get`` with its own sources list, lists and cache under ``scratch``."""

    def __init__(self, scratch: Path, mirror: str, suite: str) -> None:
        if not DEBIAN_KEYRING.is_file():
            raise PeerInstallError(
                f"openssl35: {DEBIAN_KEYRING} is missing "
                "(package debian-archive-keyring)"
            )
        self.scratch = scratch
        for sub in ("lists/partial", "cache/archives/partial", "debs"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        sources = scratch / "sources.list"
        sources.write_text(f"deb [signed-by={DEBIAN_KEYRING}] {mirror} {suite} main\n")
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        self.options = [
            "-o", f"Dir::Etc::SourceList={sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={scratch / 'lists'}",
            "-o", f"Dir::Cache={scratch / 'cache'}",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip
        if user:
            self.options += ["-o", f"APT::Sandbox::User={user}"]

    def update(self) -> None:
        _run(["apt-get", *self.options, "update", "-qq"])

    def download(self, packages: Iterable[str]) -> None:
        _run(
            ["apt-get", *self.options, "download", *packages], cwd=self.scratch / "debs"
        )

    def try_download(self, package: str) -> bool:
        try:
            self.download([package])
        except PeerInstallError:
            return False
        return True


def _unpack_debs(debs: Path, root: Path) -> None:
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)])


def _loader(root: Path, arch: str) -> Path:
    triplet, name = _ARCHES[arch]
    for candidate in (
        root / "usr/lib64" / name,
        root / "lib64" / name,
        root / "usr/lib" / triplet / name,
        root / "usr/lib" / name,
        root / "lib" / name,
    ):
        if candidate.exists():
            return candidate
    raise PeerInstallError(f"openssl35: no dynamic loader {name} under {root}")


def _library_path(root: Path, arch: str) -> str:
    triplet, _ = _ARCHES[arch]
    return f"{root / 'usr/lib' / triplet}:{root / 'lib' / triplet}"


def openssl35_command(
    program: list[str], directory: str | os.PathLike[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Run ``program`` (e.g. ``[sys.executable, script]``) against OpenSSL 3.5.

    The command line puts trixie's loader and the tree's library path in
    front of ``program``, so that ``ctypes.CDLL("libssl.so.3")`` in it
    loads OpenSSL 3.5 (the differential tests drive libssl that way); the
    environment additions name the tree's provider modules and config.
    PeerInstallError if OpenSSL 3.5 is not installed.
    """
    root = peers_dir(directory) / "openssl35"
    if not (root / "usr/bin/openssl").exists():
        raise PeerInstallError(
            "openssl35: not installed (python -m interop.peers install)"
        )
    arch = _dpkg_architecture()
    env = {
        "OPENSSL_MODULES": str(root / "usr/lib" / _ARCHES[arch][0] / "ossl-modules"),
        "OPENSSL_CONF": str(root / "etc/ssl/openssl.cnf"),
    }
    command = [
        str(_loader(root, arch)),
        "--library-path",
        _library_path(root, arch),
        *program,
    ]
    return command, env


def _missing_libraries(root: Path, arch: str) -> list[str]:
    """Libraries the unpacked ``openssl`` needs that the unpacked tree lacks."""
    listing = _run(
        [
            str(_loader(root, arch)),
            "--library-path",
            _library_path(root, arch),
            "--list",
            str(root / "usr/bin/openssl"),
        ]
    ).stdout
    missing = []
    for line in listing.splitlines():
        if "not found" in line:
            missing.append(line.split("=>")[0].strip())
            continue
        # Anything resolved outside the private tree would be the system's
        # (older) copy: treat it as missing too.
        match = re.search(r"=>\s*(\S+)", line)
        if match and not match.group(1).startswith(str(root)):
            missing.append(line.split("=>")[0].strip())
    return missing


def _package_candidates(soname: str) -> list[str]:
    """Debian package names that usually ship ``soname`` (``libfoo.so.1``)."""
    match = re.fullmatch(r"lib(.+)\.so\.(\d+)", soname)
    if not match:
        return []
    stem, major = match.groups()
    sep = "-" if stem[-1].isdigit() else ""
    base = f"lib{stem}{sep}{major}"
    return [base, f"{base}t64"]


def _write_openssl_wrapper(root: Path, wrapper: Path, arch: str) -> None:
    conf = root / "etc/ssl/openssl.cnf"
    modules = root / "usr/lib" / _ARCHES[arch][0] / "ossl-modules"
    lines = [
        "#!/bin/sh",
        "# Written by `python -m interop.peers install`: run Debian trixie's",
        "# OpenSSL 3.5 with its own loader and libraries, beside the system's.",
        f'ROOT="{root}"',
    ]
    if conf.is_file():
        lines.append(f'export OPENSSL_CONF="${{OPENSSL_CONF:-{conf}}}"')
    lines.append(f'export OPENSSL_MODULES="{modules}"')
    lines.append(
        f'exec "{_loader(root, arch)}" --library-path "{_library_path(root, arch)}" '
        '"$ROOT/usr/bin/openssl" "$@"'
    )
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text("\n".join(lines) + "\n")
    wrapper.chmod(0o755)


def openssl35_version(wrapper: str | os.PathLike[str]) -> str:
    """What ``openssl35 version`` prints; raises unless it is OpenSSL 3.5.x."""
    out = _run([str(wrapper), "version"], timeout=30).stdout.strip()
    if not re.match(r"OpenSSL 3\.5\.\d+", out):
        raise PeerInstallError(f"openssl35: expected OpenSSL 3.5.x, got {out!r}")
    return out


def install_openssl35(directory: Path, *, force: bool = False) -> None:
    """Unpack trixie's OpenSSL 3.5 into ``directory/openssl35``; write the wrapper."""
    wrapper = directory / "bin" / "openssl35"
    if not force and os.access(wrapper, os.X_OK):
        try:
            _log(f"openssl35: present ({openssl35_version(wrapper)})")
            return
        except PeerInstallError as exc:
            _log(f"openssl35: reinstalling ({exc})")
    for tool in ("apt-get", "dpkg-deb", "dpkg"):
        if shutil.which(tool) is None:
            raise PeerInstallError(f"openssl35: {tool} not found; this needs Debian")
    arch = _dpkg_architecture()
    if arch not in _ARCHES:
        raise PeerInstallError(f"openssl35: unsupported architecture {arch!r}")
    root = directory / "openssl35"
    mirror = debian_mirror()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-trixie-", dir=directory) as tmp:
        apt = _PrivateApt(Path(tmp), mirror, OPENSSL35_SUITE)
        _log(f"openssl35: apt-get update ({mirror} {OPENSSL35_SUITE} main, own lists)")
        apt.update()
        _log(f"openssl35: apt-get download {' '.join(OPENSSL35_PACKAGES)}")
        apt.download(OPENSSL35_PACKAGES)
        staging = Path(tmp) / "root"
        _unpack_debs(Path(tmp) / "debs", staging)
        # Pull in whatever else the loader says is missing (a few rounds).
        for _ in range(3):
            missing = _missing_libraries(staging, arch)
            if not missing:
                break
            _log(f"openssl35: also needs {', '.join(missing)}")
            for soname in missing:
                if not any(apt.try_download(p) for p in _package_candidates(soname)):
                    raise PeerInstallError(
                        f"openssl35: cannot find a trixie package for {soname}"
                    )
            _unpack_debs(Path(tmp) / "debs", staging)
        else:
            raise PeerInstallError(f"openssl35: still missing {missing}")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    _write_openssl_wrapper(root, wrapper, arch)
    _log(f"openssl35: installed ({openssl35_version(wrapper)}) -> {wrapper}")


def check_openssl35() -> str:
    found = locate()
    if found.openssl35 is None:
        raise PeerInstallError("openssl35: not installed (.peers/bin/openssl35)")
    return f"{found.openssl35}: {openssl35_version(found.openssl35)}"


# ----------------------------------------------------------------------
# aioquic's example programs, from the sdist
# ----------------------------------------------------------------------


def _imports(source: str) -> set[str]:
    """Top-level modules ``source`` imports unconditionally.

    Imports inside a ``try`` whose handlers catch ``ImportError`` are optional
    (the examples treat ``uvloop`` that way) and are left out.
    """
    tree = ast.parse(source)
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            catches = {
                n.id
                for h in node.handlers
                if h.type is not None
                for n in ast.walk(h.type)
                if isinstance(n, ast.Name)
            }
            if catches & {"ImportError", "ModuleNotFoundError"}:
                for inner in node.body:
                    optional.update(id(n) for n in ast.walk(inner))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def example_requirements(examples: Path) -> list[str]:
    """Distributions the example programs import that are neither stdlib nor local."""
    local = {p.stem for p in examples.glob("*.py")}
    programs = [examples / name for name in AIOQUIC_PROGRAMS]
    # http3_server.py serves ``demo:app`` by default: demo.py is needed too.
    programs.append(examples / "demo.py")
    modules: set[str] = set()
    for program in programs:
        if program.is_file():
            modules |= _imports(program.read_text())
    third_party = modules - set(sys.stdlib_module_names) - local - {"aioquic"}
    names = {_DISTRIBUTION_FOR_MODULE.get(m, m) for m in third_party}
    # The sdist's own list for the examples (kept beside them on extraction).
    listed = examples / EXAMPLES_REQUIREMENTS
    if listed.is_file():
        for line in listed.read_text().splitlines():
            name = re.split(r"[\s<>=!~;\[#]", line.strip(), maxsplit=1)[0]
            if name:
                names.add(name)
    return sorted(names, key=str.lower)


def _missing_modules(modules: Iterable[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _extract_examples(sdist: Path, version: str, target: Path) -> None:
    prefix = f"aioquic-{version}/examples/"
    listed = f"aioquic-{version}/requirements/examples.txt"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise PeerInstallError(f"aioquic-examples: no examples/ in {sdist.name}")
        staging = target.with_name(target.name + ".new")
        if staging.exists():
            shutil.rmtree(staging)
        for member in members:
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices from an archive
            relative = member.name[len(prefix) :]
            if not relative:
                continue
            member.name = relative
            # The "data" filter refuses absolute paths and ``..``.
            archive.extract(member, staging, filter="data")
        try:
            requirements = archive.getmember(listed)
        except KeyError:
            pass
        else:
            requirements.name = EXAMPLES_REQUIREMENTS
            archive.extract(requirements, staging, filter="data")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    (target / ".aioquic-version").write_text(version + "\n")


def install_aioquic_examples(directory: Path, *, force: bool = False) -> None:
    """Unpack the installed aioquic version's examples; pip-install their needs."""
    version = importlib.metadata.version("aioquic")
    target = directory / "aioquic-examples"
    marker = target / ".aioquic-version"
    have = marker.read_text().strip() if marker.is_file() else None
    if force or have != version or not (target / "http3_server.py").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sdist-", dir=directory) as tmp:
            _log(f"aioquic-examples: pip download aioquic=={version} (sdist)")
            _run(
                [
                    sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                    "--no-deps", "-d", tmp, f"aioquic=={version}",
                ]
            )  # fmt: skip
            sdists = list(Path(tmp).glob("aioquic-*.tar.gz"))
            if not sdists:
                raise PeerInstallError("aioquic-examples: pip downloaded no sdist")
            _extract_examples(sdists[0], version, target)
        _log(f"aioquic-examples: unpacked into {target}")
    else:
        _log(f"aioquic-examples: present (aioquic {version}) in {target}")
    requirements = example_requirements(target)
    import_names = {v: k for k, v in _DISTRIBUTION_FOR_MODULE.items()}
    missing = _missing_modules(import_names.get(r, r) for r in requirements)
    if missing:
        needed = [_DISTRIBUTION_FOR_MODULE.get(m, m) for m in missing]
        _log(f"aioquic-examples: pip install {' '.join(needed)}")
        _run([sys.executable, "-m", "pip", "install", "-q", *needed])
        importlib.invalidate_caches()
        still = _missing_modules(import_names.get(r, r) for r in requirements)
        if still:
            raise PeerInstallError(f"aioquic-examples: still cannot import {still}")


def check_aioquic_examples() -> str:
    found = locate()
    if found.aioquic_examples is None:
        raise PeerInstallError(
            "aioquic-examples: not installed (.peers/aioquic-examples)"
        )
    examples = Path(found.aioquic_examples)
    for program in AIOQUIC_PROGRAMS:
        # --help imports every module the program needs at start-up.
        _run([sys.executable, program, "--help"], cwd=examples, timeout=60)
    # The server loads demo.py (starlette, jinja2) only when it starts serving.
    _run([sys.executable, "-c", "import demo"], cwd=examples, timeout=60)
    return str(examples)


# ----------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------


def install_quinn(directory: Path, *, force: bool = False) -> None:
    """Build interop/quinn_peer with Debian's cargo and crates (offline)."""
    target = directory / "quinn" / "quinn-peer"
    if target.exists() and not force:
        _log(f"quinn: present ({target})")
        return
    if shutil.which("apt-get") is None:
        raise PeerInstallError("quinn: apt-get not found; this needs Debian")
    sudo = _sudo_prefix()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log(f"quinn: apt-get install -y {' '.join(QUINN_PACKAGES)}")
    _run([*sudo, "apt-get", "update", "-qq"], env=env)
    _run(
        [
            *sudo,
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            *QUINN_PACKAGES,
        ],
        env=env,
    )
    cargo = "/usr/bin/cargo" if Path("/usr/bin/cargo").exists() else "cargo"
    build = directory / "quinn" / "build"
    _log("quinn: cargo build --release (offline, Debian's crates)")
    _run(
        [cargo, "build", "--release", "--offline"],
        cwd=QUINN_SOURCE,
        env={**os.environ, "CARGO_TARGET_DIR": str(build)},
        timeout=1800,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(build / "release" / "quicconn-quinn-peer", target)
    _log(f"quinn: installed -> {target}")


def check_quinn() -> str:
    found = locate()
    if found.quinn_peer is None:
        raise PeerInstallError("quinn: not installed (.peers/quinn/quinn-peer)")
    return found.quinn_peer


def install(
    components: Iterable[str] = COMPONENTS,
    *,
    directory: Path | None = None,
    force: bool = False,
) -> PeerPaths:
    """Install ``components`` (all by default) and return where everything is."""
    root = peers_dir(directory)
    for component in components:
        if component == "system":
            install_system(force=force)
        elif component == "ngtcp2":
            install_ngtcp2(force=force)
        elif component == "openssl35":
            install_openssl35(root, force=force)
        elif component == "aioquic-examples":
            install_aioquic_examples(root, force=force)
        elif component == "quinn":
            install_quinn(root, force=force)
        else:
            raise ValueError(f"unknown peer {component!r}; choose from {COMPONENTS}")
    return locate(root)


_CHECKS = {
    "system": check_system,
    "ngtcp2": check_ngtcp2,
    "openssl35": check_openssl35,
    "aioquic-examples": check_aioquic_examples,
    "quinn": check_quinn,
}


def check(components: Iterable[str] = COMPONENTS) -> dict[str, str | None]:
    """Run each peer briefly; map component -> None if fine, else the problem."""
    problems: dict[str, str | None] = {}
    for component in components:
        try:
            detail = _CHECKS[component]()
        except PeerInstallError as exc:
            problems[component] = str(exc)
            _log(f"{component}: FAILED: {exc}")
        else:
            problems[component] = None
            _log(f"{component}: ok ({detail})")
    return problems


def _components(spec: str | None) -> list[str]:
    if not spec:
        return list(COMPONENTS)
    chosen = [c.strip() for c in spec.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in COMPONENTS]
    if unknown:
        raise SystemExit(
            f"unknown peer(s) {unknown}; choose from {', '.join(COMPONENTS)}"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interop.peers",
        description="Install and locate the independent QUIC peers in .peers/.",
    )
    parser.add_argument("--dir", help="installation directory (default: .peers/)")
    commands = parser.add_subparsers(dest="command", required=True)
    p_install = commands.add_parser("install", help="install the peers (idempotent)")
    p_install.add_argument("--only", help=f"comma-separated subset of {COMPONENTS}")
    p_install.add_argument("--force", action="store_true", help="reinstall")
    p_check = commands.add_parser("check", help="verify each peer runs")
    p_check.add_argument("--only", help=f"comma-separated subset of {COMPONENTS}")
    commands.add_parser("paths", help="print JSON of where each peer is")
    args = parser.parse_args(argv)
    if args.dir:
        os.environ["QUICCONN_PEERS_DIR"] = str(Path(args.dir).resolve())
    if args.command == "paths":
        print(json.dumps(locate().as_dict(), indent=2))
        return 0
    if args.command == "install":
        try:
            install(_components(args.only), force=args.force)
        except PeerInstallError as exc:
            _log(f"install failed: {exc}")
            return 1
        problems = check(_components(args.only))
        return 1 if any(problems.values()) else 0
    problems = check(_components(args.only))
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
