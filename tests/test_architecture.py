"""The package's shape, checked: layers, exports, and no reaching into privates.

docs/architecture.md describes the layers; these tests keep the code true to
it so that a later change cannot quietly break the shape.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import quicconn

PACKAGE = Path(quicconn.__file__).parent
ROOT = PACKAGE.parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Names with a leading underscore that are public API of their own kind.
_PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields", "_make", "_exit"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Underscore names a module defines: methods, class attributes, slots,
    and attributes assigned on ``self`` anywhere in its classes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _private_reaches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    own = _defined_private_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        if name in own or name in _PUBLIC_UNDERSCORE:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue  # an object's own members, some inherited from a base
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == (
            "super"
        ):
            continue
        found.append(f"{_module_name(path)}:{node.lineno}: .{name}")
    return found


#: The aioquic backend subclasses aioquic's QuicConnection and reads some of
#: its private state (listed in its module docstring; the aioquic version is
#: pinned for it).  That coupling is allowed there and nowhere else.
_AIOQUIC_BACKEND = PACKAGE / "_core" / "aioquic"


def test_no_module_reaches_into_another_modules_privates() -> None:
    # A module uses another module's objects through their public names, or
    # through functions that module offers (its internal API), never by
    # touching attributes with a leading underscore that it does not define.
    reaches = [
        r
        for path in MODULES
        if _AIOQUIC_BACKEND not in path.parents
        for r in _private_reaches(path)
    ]
    assert reaches == []


def test_no_star_imports() -> None:
    stars = [
        f"{_module_name(path)}:{node.lineno}"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)
    ]
    assert stars == []


def test_every_module_declares_its_exports() -> None:
    missing = [
        _module_name(path)
        for path in MODULES
        if path.name not in ("__init__.py", "__main__.py")
        and "__all__" not in path.read_text()
    ]
    assert missing == []


def test_the_top_level_all_lists_every_public_name_once() -> None:
    exported = quicconn.__all__
    assert len(exported) == len(set(exported))
    public = {n for n in vars(quicconn) if not n.startswith("_")}
    modules = {n for n, v in vars(quicconn).items() if type(v) is type(quicconn)}
    assert set(exported) == public - modules - {"annotations"}
    assert all(getattr(quicconn, name) is not None for name in exported)


def test_the_connection_module_stays_thin() -> None:
    lines = (PACKAGE / "_objects" / "connection.py").read_text().count("\n")
    assert lines <= 600


def test_import_contracts_hold() -> None:
    # The layer contracts live in pyproject.toml ([tool.importlinter]).
    lint_imports = shutil.which("lint-imports")
    assert lint_imports is not None, "pip install -e '.[test]' installs import-linter"
    result = subprocess.run(
        [lint_imports, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
