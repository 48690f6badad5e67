"""docs/cores.md's capability table is the backends' own flags."""

from __future__ import annotations

from pathlib import Path

from quicconn._core import registry
from quicconn._core.interface import Capability

DOC = Path(__file__).resolve().parent.parent / "docs" / "cores.md"
BEGIN = "<!-- capability table: generated, do not edit by hand -->\n"
END = "<!-- end of capability table -->"


def test_the_capability_table_matches_the_backends_flags() -> None:
    text = DOC.read_text()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert "(not installed)" not in registry.capability_table(), (
        "both cores must be installed to check the table: pip install -e '.[fast]'"
    )
    assert table == registry.capability_table(), (
        "docs/cores.md is stale: paste in the output of "
        "`python -c 'from quicconn._core.registry import capability_table; "
        'print(capability_table(), end="")\'`'
    )


def test_every_capability_is_explained_where_a_core_lacks_it() -> None:
    text = DOC.read_text()
    after = text[text.index(END) :]
    for name in registry.available():
        for capability in Capability:
            if capability not in registry.get(name).capabilities:
                assert f"`{capability.name}`" in after, capability
