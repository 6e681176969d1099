"""The package's structure: modules import each other without a circle, none imports a package module
inside a function (to dodge one) but the command line, which loads its commands once parsed so that
`tiltkit --help` needs no torch; and no code outside the registry compares run-kind strings."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

from tiltkit.cli import TRAIN_COMMANDS
from tiltkit.methods import train_commands

SRC = Path(__file__).parents[1] / "src" / "tiltkit"
KINDS = ("base", "tilt", "debm", "tilt-module")
LAZY = {"tiltkit.cli": ["tiltkit.commands"]}  # the one import inside a function, and what it imports


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
        typing_only = {id(n) for block in tree.body if isinstance(block, ast.If)  # `if TYPE_CHECKING:` imports
                       and ast.unparse(block.test) == "TYPE_CHECKING" for n in block.body}
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                found = [t for t in targets(name, path, node, known) if t != name]
                graph[name].update(found)
                if id(node) not in top and found and found != LAZY.get(name):
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


def test_the_command_line_parses_without_torch():
    """`tiltkit --help` and every subcommand's help come from cli.py and choices.py alone (cli.main loads
    commands.py, and with it torch, only once a command is to run)."""
    code = ("import sys, contextlib, io\n"
            "from tiltkit.cli import build_parser\n"
            "import tiltkit\n"
            "for argv in ([], ['train'], ['train', 'base'], ['train', 'tilt'], ['train', 'debm'], ['sample'],\n"
            "             ['eval'], ['ood'], ['fid'], ['plot'], ['demo']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        build_parser().parse_args([*argv, '--help'])\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'sklearn', 'scipy', 'yaml') if m in sys.modules)\n"
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_train_commands_agree_with_the_registry():
    """cli.TRAIN_COMMANDS (help for the parser) and the registry's methods (methods.py) name the same
    commands; each option is a key of every config the command can make, and each option that selects a
    method is one of its command's."""
    assert set(TRAIN_COMMANDS) == set(train_commands())
    for command, methods in train_commands().items():
        options = TRAIN_COMMANDS[command].options
        for method in methods:
            fields = {f.name for f in dataclasses.fields(method.config_class)}
            assert method.selected_by is None or method.selected_by in options
            assert set(options) - {m.selected_by for m in methods} <= fields, (command, method.kind)
