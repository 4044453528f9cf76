"""The layering rules, read from the source: which package may import which."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "ml", "training")


def imports() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its body (functions too)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
            found[module.removesuffix(".__init__")] = {
                name for name in names if name.split(".")[0] in PACKAGES
            }
    return found


def test_the_bot_never_imports_training_and_ml_imports_neither() -> None:
    edges = imports()
    assert {(m, n) for m, ns in edges.items() if m.startswith("bot") for n in ns
            if n.startswith("training")} == set()  # fmt: skip
    assert {(m, n) for m, ns in edges.items() if m.startswith("ml") for n in ns
            if n.startswith(("bot", "training"))} == set()  # fmt: skip
