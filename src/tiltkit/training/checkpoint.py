"""Checkpoints: weights in safetensors, the rest (optimizer, RNG, buffer, step) in a
`torch.load(weights_only=True)`-loadable file, and a manifest with the format version and the
SHA-256 of both. Each checkpoint is a directory written whole under a temporary name and renamed
into place, so a crash (SIGKILL included) at any moment never leaves a half-written checkpoint that
looks complete, and a replaced one is moved aside before its successor takes its name.

    RUN/checkpoints/step_0000500/weights.safetensors
    RUN/checkpoints/step_0000500/state.pt
    RUN/checkpoints/step_0000500/manifest.json   {"format": 2, "sha256": {file: hex digest}}
    RUN/checkpoints/best/...           the best step by validation, where a trainer keeps one
    RUN/checkpoints/FORMAT             {"format": 2, "without_manifest": [names]}: this run writes manifests;
                                       the names are format-1 checkpoints it already held (a resumed old run)

Loading never unpickles an object: safetensors holds tensors only, and state.pt goes through
`torch.load(weights_only=True)`, which refuses any global outside tensors and plain containers.
A checkpoint whose files do not match their checksums, or of a newer format, is refused with one
line. Format 1 (written before manifests) loads without the checksum check; a checkpoint without a
manifest in a run that writes them is refused, so that deleting the manifest never turns the check off.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_write_bytes, atomic_write_text  # noqa: F401  (re-exported)
from ..errors import UserError

PREFIX = "step_"
BEST = "best"
FORMAT = 2  # 1: no manifest; 2: manifest with checksums, state with per-rank parts (training.loop)
FILES = ("weights.safetensors", "state.pt")
RUN_FORMAT = "FORMAT"  # RUN/checkpoints/FORMAT, written before a run's first checkpoint with a manifest


def save_checkpoint(run_dir: Path, step: int, modules: dict[str, nn.Module], state: dict, keep: int = 2,
                    name: str | None = None) -> Path:
    """Write modules' weights and `state` as checkpoint `step`; keep the newest `keep` checkpoints.

    `name`: write it under this name instead (e.g. BEST), outside the rotation.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = root / (name or f"{PREFIX}{step:07d}")
    _mark_run(root, final.name)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        tensors = {f"{key}.{k}": v.detach().cpu().contiguous().clone()
                   for key, module in modules.items() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / "weights.safetensors"))
        buf = io.BytesIO()
        torch.save({"step": step, **state}, buf)
        (tmp / "state.pt").write_bytes(buf.getvalue())
        manifest = {"format": FORMAT, "step": step, "sha256": {f: _sha256(tmp / f) for f in FILES}}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        if final.exists():  # moved aside first: a kill between the two renames loses only this name
            _move_aside(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        _move_aside(old)
    for stale in root.glob(".old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _mark_run(root: Path, name: str) -> None:
    """Record in RUN/checkpoints/FORMAT that the run writes manifests, before checkpoint `name` is written with
    one. The format-1 checkpoints already there (an old run resumed) are listed: they alone may lack a manifest."""
    old = _without_manifest(root)
    if old is None:
        old = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name != name and not (p / "manifest.json").is_file())
    elif name in old:
        old.remove(name)
    else:
        return
    atomic_write_text(root / RUN_FORMAT, json.dumps({"format": FORMAT, "without_manifest": old}))


def _without_manifest(root: Path) -> list[str] | None:
    """The checkpoints of the run in `root` that may lack a manifest (format 1): None when the run has no
    FORMAT marker (it was written before the marker existed); an unreadable marker allows none."""
    try:
        record = json.loads((root / RUN_FORMAT).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return []
    names = record.get("without_manifest") if isinstance(record, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _move_aside(checkpoint: Path) -> None:
    """Rename a checkpoint out of the listing (one atomic step) before its files are deleted."""
    os.replace(checkpoint, Path(tempfile.mkdtemp(dir=checkpoint.parent, prefix=".old-")) / checkpoint.name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, files: tuple[str, ...] = FILES) -> int:
    """The format of checkpoint `path`, after checking `files` against its manifest's checksums."""
    path = Path(path)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        if _written_with_manifest(path):
            raise UserError(f"checkpoint {path} is corrupted: its manifest.json is missing (delete the folder to "
                            f"resume from an earlier checkpoint)")
        return 1
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        manifest = None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if type(fmt) is int and fmt > FORMAT:
        raise UserError(f"checkpoint {path} has format {fmt}, written by a newer tiltkit; this one reads formats "
                        f"1 to {FORMAT}: upgrade tiltkit")
    sums = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not (type(fmt) is int and fmt >= 2 and isinstance(sums, dict)
            and all(isinstance(v, str) for v in sums.values())):
        raise UserError(f"checkpoint {path} is corrupted: its manifest.json is unreadable")
    for name in files:
        if not (Path(path) / name).is_file():
            raise UserError(f"checkpoint {path} is unreadable or incomplete: {name} is missing")
        if _sha256(Path(path) / name) != sums.get(name):
            raise UserError(f"checkpoint {path} is corrupted: {name} does not match its SHA-256 in manifest.json "
                            f"(delete the folder to resume from an earlier checkpoint)")
    return fmt


def _written_with_manifest(path: Path) -> bool:
    """Whether checkpoint `path`, found without a manifest, was written with one: its run's FORMAT marker does
    not list it as format 1, or (a run from before the marker) its state has the per-rank layout that came in
    with manifests (training.loop.from_format_1)."""
    old = _without_manifest(path.parent)
    if old is not None:
        return path.name not in old
    return (path / "state.pt").is_file() and "ranks" in _load_state(path, "cpu")


def read_state(path: Path, map_location="cpu") -> dict:
    """The state.pt of checkpoint `path`, checksum checked, loaded without unpickling any object."""
    verify(path, ("state.pt",))
    return _load_state(Path(path), map_location)


def _load_state(path: Path, map_location) -> dict:
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "a forbidden object"
        raise UserError(f"checkpoint {path}: state.pt holds objects a weights-only load refuses ({first[:200]}); "
                        f"tiltkit never unpickles arbitrary objects") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise UserError(f"checkpoint {path} is unreadable or incomplete ({exc.__class__.__name__})") from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} is unreadable or incomplete (state.pt holds a {type(state).__name__}, "
                        f"not a mapping)")
    return state


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories of a crashed write are skipped)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_checkpoint(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir}: no checkpoint found (is it a finished or started tiltkit run?)")
    return found[-1]


def read_weights(path: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The tensors of checkpoint `path` ("module.name": tensor), checksum checked."""
    verify(path, ("weights.safetensors",))
    return _load_weights(Path(path), map_location)


def _load_weights(path: Path, map_location) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / "weights.safetensors"), device=str(map_location))
    except (OSError, SafetensorError, RuntimeError, EOFError, ValueError) as exc:
        raise UserError(f"checkpoint {path} is unreadable or incomplete ({exc.__class__.__name__})") from None


def load_checkpoint(path: Path, modules: dict[str, nn.Module], map_location="cpu") -> dict:
    """Load weights into `modules` (strict) and return the state dict saved beside them."""
    path = Path(path)
    verify(path)
    tensors = _load_weights(path, map_location)
    state = _load_state(path, map_location)
    for name, module in modules.items():
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UserError(f"checkpoint {path} does not match the model '{name}': {first}") from None
    return state
