"""The registry: every kind of run tiltkit makes, each a Method (training/method.py) that owns its config
class, trainer, builder, checkpointed modules, sampling, pictures and OOD scores. A run's config.yaml
names its kind; everything that reads a run looks the kind up here.
"""

from __future__ import annotations

from pathlib import Path

from .config import from_dict, read_yaml
from .errors import UserError
from .training.base import BASE
from .training.contrastive import TILT
from .training.denoising import DEBM
from .training.method import Method
from .training.module_tilt import MODULE_TILT
from .training.rundir import config_path

METHODS: dict[str, Method] = {m.kind: m for m in (BASE, TILT, DEBM, MODULE_TILT)}


def read_run(run_dir: Path) -> tuple[Method, object]:
    """(method, config) of a run directory, with a clear error for anything that is not one."""
    path = config_path(run_dir)
    kind, values = read_yaml(path)
    if kind not in METHODS:
        raise UserError(f"{path}: not a tiltkit run config (expected a kind among {', '.join(METHODS)})")
    method = METHODS[kind]
    return method, from_dict(method.config_class, values, str(path))


def train_commands() -> dict[str, list[Method]]:
    """`tiltkit train` subcommands and the methods each trains, the plain one first."""
    commands: dict[str, list[Method]] = {}
    for method in sorted(METHODS.values(), key=lambda m: m.selected_by is not None):
        commands.setdefault(method.command, []).append(method)
    return commands


def method_for(command: str, given: set[str]) -> Method:
    """The method `tiltkit train COMMAND` trains, given the names of the options set: the one an option
    selects (`train tilt --base-module`), else the command's plain one."""
    fits = train_commands()[command]
    return next((m for m in fits if m.selected_by in given), fits[0])
