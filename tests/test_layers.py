"""The package's structure: modules import each other without a circle, none imports a package module
inside a function (to dodge one), and no code outside the registry compares run-kind strings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "tiltkit"
KINDS = ("base", "tilt", "debm", "tilt-module")


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def targets(name: str, path: Path, node: ast.AST, known: dict) -> list[str]:
    """The package modules an import statement in module `name` imports."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
    mod = ".".join(base + ([node.module] if node.module else []))
    return [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names
            if f"{mod}.{a.name}" in known or mod in known]


def test_no_import_circle_and_no_import_inside_a_function():
    known = modules()
    graph, inner = {}, []
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found = [t for t in targets(name, path, node, known) if t != name]
                if id(node) in top:
                    graph[name].update(found)
                elif found:
                    inner.append(f"{name}:{node.lineno}")
    assert inner == []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import circle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2
    for name in graph:
        if name not in state:
            visit(name, [])


def test_run_kinds_are_compared_only_in_the_registry():
    pattern = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](%s)["']""" % "|".join(map(re.escape, KINDS)))
    places = [f"{p.relative_to(SRC.parent)}:{i}" for p in sorted(SRC.rglob("*.py")) if p.name != "methods.py"
              for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert places == []
