"""The shape of the code: imports go one way (no cycles, `TYPE_CHECKING` ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(GATEWAY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The gateway modules `path` imports, and the packages that importing them runs."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            while target:  # importing a.b.c runs a.b and a first
                if target != name and target in modules:
                    found.add(target)
                target = target.rpartition(".")[0]
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(GATEWAY.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    # A package's own __init__ is run by importing any module in it: not an edge of its own.
    return {
        module_name(p): {
            m for m in imports_of(p, modules) if not module_name(p).startswith(m + ".")
        }
        for p in paths
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_gateway_imports_have_no_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_error_family_and_the_policy_stand_below_the_rest() -> None:
    graph = import_graph()
    assert graph["gateway.errors"] == set()
    below_policy = {m for m in graph if m.startswith("gateway.policy")}
    for module in below_policy:
        assert not {m for m in graph[module] if m.startswith(("gateway.routes", "gateway.app"))}
