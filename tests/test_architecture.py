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


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of modules (Tarjan), each sorted."""
    known = set(edges)

    def module(name: str) -> str:
        while name and name not in known:  # `from ml.models import X` names ml.models.X
            name = name.rpartition(".")[0]
        return name

    graph = {m: {module(n) for n in ns} - {"", m} for m, ns in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    # Known and left: the history factory's lazy import of its PostgreSQL backend (issue 20).
    allowed = [["bot.history", "bot.history_pg"]]
    assert [group for group in cycles(imports()) if group not in allowed] == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b.thing"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
