"""The package's modules import each other in one direction: no circles, the hook at the bottom
of what calls the API (it knows nothing of staging, fan-out, operators or costs)."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow_provider_ctxcache

PACKAGE = Path(airflow_provider_ctxcache.__file__).parent
NAME = "airflow_provider_ctxcache"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module of the package this file imports, TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(NAME))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(NAME):
            found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a package counts as its __init__)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()
    }


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        trail.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_of_the_package_imports_itself_in_a_circle() -> None:
    assert circle(graph()) is None


def test_the_hook_module_imports_nothing_that_builds_on_it() -> None:
    above = ("staging", "fanout", "operators", "sensors", "triggers", "costs", "plugins", "cli")
    imported = graph()[f"{NAME}.hooks.context_cache"]
    assert [m for m in imported if m.split(".")[1] in above] == []
