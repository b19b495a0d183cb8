"""Imports point one way (DESIGN.md): gateway/ -> firmware_sim/ -> drivers/, alerting/.

Read from the source, not from a running interpreter, so an import inside a function
counts as much as one at the top. Imports under ``if TYPE_CHECKING:`` are for the reader
only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "firmware_sim", "drivers", "alerting")
# what each package may import from the others
ALLOWED = {
    "gateway": {"firmware_sim", "drivers", "alerting"},
    "firmware_sim": {"drivers", "alerting"},
    "drivers": {"alerting"},
    "alerting": {"drivers"},
}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, line) of every import that runs, in any scope."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((f"{node.module}.{a.name}", node.lineno) for a in node.names)
            out.append((node.module, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for name, _line in _imports(ast.parse(path.read_text(), str(path))):
            if name in mods and name != mod:
                graph[mod].add(name)
    return graph


def test_packages_import_only_downward() -> None:
    wrong = []
    for mod, path in _modules().items():
        pkg = mod.split(".")[0]
        for name, line in _imports(ast.parse(path.read_text(), str(path))):
            other = name.split(".")[0]
            if other in PACKAGES and other != pkg and other not in ALLOWED[pkg]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles: list[list[str]] = []

    def walk(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            walk(mod, [mod])
    return cycles


def test_no_import_cycles_between_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_cycles_and_skips_type_checking_imports() -> None:
    """The two tests above must be able to fail: a cycle is found, a runtime import is
    seen inside a function, and one under TYPE_CHECKING is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from gateway.engine import Incident\n"
                     "def f():\n    import drivers.native\n")
    names = {n for n, _ in _imports(tree)}
    assert "drivers.native" in names
    assert "gateway.engine" not in names and "gateway.engine.Incident" not in names
    graph = _graph()
    assert "gateway.locate" in graph["gateway.engine"]
    assert "gateway.engine" not in graph["gateway.page_text"]  # only for the type
