"""What each `tiltkit` command does, once cli.py has parsed it: `train` resolves the run's options (defaults
<- --config <- --set <- flags) and trains; `sample`, `eval`, `ood` are thin layers over a loaded `Run`
(api.py); `fid`, `plot` and `demo` call their module. Each writes its result and returns; bad input
raises UserError, which cli.main prints as one line (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from . import viz
from .api import load
from .atomic import atomic_write_text
from .config import from_dict, to_dict
from .demo import run_demo
from .errors import UserError
from .methods import method_for, read_run
from .metrics.image_eval import fid_between, parse_metrics
from .metrics.ood import IW_SAMPLES, SCORE_LABELS, parse_ood_sets, parse_scores
from .training.distributed import launch
from .training.rundir import MetricsLog, make_dir, trained_steps

TRAIN_FLAGS = ("data", "data_dir", "image_size", "model", "base", "base_module", "steps", "seed", "device", "precision",
               "log")


# where and how long a resumed run goes on, and what it logs to; every other option is the run's
RESUME_MAY_CHANGE = ("steps", "device", "log", "log_images_every")


def resolve_options(args, cls, start=None):
    """The run's options: `start` (a saved config, for --resume) or the defaults <- --config file (or its
    `base:`/`tilt:` section) <- --set pairs <- named flags, checked by from_dict.

    `--set BLOCK.FIELD=V` sets one field of a block of options (a sampler, a model's kwargs), and a mapping
    `--set 'BLOCK={FIELD: V}'` merges into the block as it stands: the fields it does not name keep their values.
    """
    values: dict = to_dict(start) if start is not None else {}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"--config {args.config}: cannot read ({exc.__class__.__name__})") from None
        loaded = loaded or {}
        if not isinstance(loaded, dict):
            raise UserError(f"--config {args.config}: expected a mapping of options")
        if isinstance(loaded.get(args.what), dict):
            loaded = loaded[args.what]  # a recipe with a `base:` and a `tilt:` section
        values.update(loaded)
        values.pop("kind", None)
    for pair in args.set:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {pair!r}: the value is not valid YAML ({exc.__class__.__name__})") from None
        set_option(values, block_default(cls, start, values, args), key, value)
    for key in TRAIN_FLAGS:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return from_dict(cls, values, "options")


CHOICES = ("model", "energy")  # options whose value decides the defaults of another (model_kwargs, energy_kwargs)


def block_default(cls, start, values: dict, args) -> dict:
    """The options as they would stand without this --set: the run's (`start`), or the defaults of `cls` for the
    model and energy chosen so far (a `--model conv-vae` has its own model_kwargs, not the MLP VAE's)."""
    if start is not None:
        return to_dict(start)
    chosen = {k: values[k] for k in CHOICES if isinstance(values.get(k), str)}
    chosen.update({k: getattr(args, k) for k in CHOICES if isinstance(getattr(args, k, None), str)})
    return to_dict(cls(**{k: v for k, v in chosen.items() if k in {f.name for f in dataclasses.fields(cls)}}))


def set_option(values: dict, defaults: dict, key: str, value) -> None:
    """values[key] = value, where a dotted key sets one field of a block and a mapping merges into the block
    (its value in `values`, else in `defaults`)."""
    name, dot, field = key.partition(".")
    current = values.get(name, defaults.get(name))
    if dot:
        if current is not None and not isinstance(current, dict):
            raise UserError(f"--set {key}: {name} is a single value, not a block of options")
        for part in reversed(field.split(".")):
            value = {part: value}
    values[name] = merged(current or {}, value) if isinstance(value, dict) and isinstance(current or {}, dict) \
        else value


def merged(base: dict, over: dict) -> dict:
    """`base` with the fields of `over` set, mappings merged field by field."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cmd_train(args) -> None:
    """Train one run; under torchrun, one process of a data-parallel job (training/distributed.py)."""
    if args.resume:
        method, saved = read_run(args.out)
        if method.command != args.what:
            raise UserError(f"--resume: {args.out} is a {method.kind} run, not a {args.what} run")
        cfg = resolve_options(args, method.config_class, start=saved)
        before, now = to_dict(saved), to_dict(cfg)
        differ = [f"{k} ({before[k]!r} → {now[k]!r})" for k in now if k not in RESUME_MAY_CHANGE and now[k] != before[k]]
        if differ:
            raise UserError(f"--resume: {args.out} was trained with other options: {'; '.join(differ)}; resume it "
                            f"without them, or start a new run")
        done = trained_steps(args.out)
        if cfg.steps < done:
            raise UserError(f"--resume --steps {cfg.steps}: {args.out} has trained {done} steps already; --steps may "
                            f"only move its end past them")
    else:
        method = method_for(args.what, {k for k in TRAIN_FLAGS if getattr(args, k, None) is not None})
        cfg = resolve_options(args, method.config_class)
        method.check_command_line(cfg, given_data=args.data is not None or args.config is not None)
    start = time.perf_counter()
    with launch(cfg.device) as dist:
        method.train(cfg, args.out, resume=args.resume, quiet=args.quiet, dist=dist)
        if dist.main:
            print(f"trained {method.kind} run: {args.out} ({summary(args.out, time.perf_counter() - start)})")


def summary(run_dir: Path, seconds: float) -> str:
    """How a training ended, from its metrics log: the last step, this process's wall time, and the best
    validation FID where the run validated."""
    records = MetricsLog(run_dir).steps()
    text = f"step {records[-1]['step'] if records else 0}, {seconds:.1f} s"
    scored = [r for r in records if isinstance(r.get("val_fid"), (int, float))]
    if scored:
        best = min(scored, key=lambda r: r["val_fid"])
        text += f"; best validation domain FID {best['val_fid']:.3f} at step {best['step']}"
    return text


def output_file(path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse an --out that is not a file of one of `suffixes` or cannot be written; make its folder."""
    if path.suffix not in suffixes:
        raise UserError(f"--out {path}: expected a {', '.join(suffixes[:-1])}{' or ' if suffixes[:-1] else ''}"
                        f"{suffixes[-1]} file")
    if path.is_dir():
        raise UserError(f"--out {path} is a folder: expected a file name")
    make_dir(path.parent, "folder")


def cmd_sample(args) -> None:
    suffix = args.out.suffix
    output_file(args.out, (".npy", ".npz", ".png"))
    if (args.trajectory or args.compare_base) and suffix != ".png":
        raise UserError("--trajectory and --compare-base write pictures: give --out a .png file")
    run = load(args.run, device=args.device).with_sampling(args.steps, args.step_size, args.space == "data")
    gen = run.generator(args.seed)
    what = run.method.label
    if suffix == ".npy":
        x = run.sample(args.n, generator=gen)
        np.save(args.out, x.cpu().numpy())
        print(f"wrote {args.n} samples of the {what} model to {args.out}")
        return
    points = run.base.pixel_range is None
    if args.trajectory:
        frames = run.trajectory(args.n, args.every, args.seed)
        if points:
            viz.chain_paths([f.numpy() for f in frames], args.out)
        else:
            viz.save_image(viz.trajectory_strip(frames), args.out, scale=2)
        print(f"wrote {args.out}")
        return
    if args.compare_base:
        panels = run.compare(args.n, args.seed)
        if points:
            viz.points_figure([(label, x.numpy()) for label, x in panels], args.out)
        else:
            viz.compare_figure(panels, args.out, args.nrow)
        print(f"wrote {args.out}")
        return
    if points and suffix == ".png":  # a scatter plot of 2-D samples
        viz.points_figure([(f"{args.n} samples of the {what} model", run.sample(args.n, generator=gen).cpu().numpy())],
                          args.out)
        print(f"wrote a scatter plot of {args.n} samples of the {what} model to {args.out}")
        return
    x = run.images(args.n, generator=gen, quiet=False)
    if suffix == ".npz":
        np.savez_compressed(args.out, x=x.numpy())
    else:
        viz.save_image(viz.image_grid(x, args.nrow), args.out, scale=2)
    print(f"wrote {args.n} images of the {what} model to {args.out}")


def cmd_eval(args) -> None:
    run = load(args.run, device=args.device)
    result = run.evaluate(args.data, args.data_dir, args.metrics, args.n, args.seed, quiet=args.quiet,
                          exact=args.exact)
    MetricsLog(args.run).write({"eval": result})
    print(json.dumps(result))


def cmd_ood(args) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: expected a folder for ood.json and the histograms")
    blocker = next(p for p in args.out.parents if p.exists())  # checked now, made once the scores are in
    if not blocker.is_dir():
        raise UserError(f"cannot create folder {args.out}: {blocker} is a file")
    sets = parse_ood_sets(args.ood)
    run = load(args.run, device=args.device)
    scores = parse_scores(args.scores, run.scorer)
    k = args.iw_samples or IW_SAMPLES
    with warnings.catch_warnings():  # a resized OOD set is one line on stderr
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: print(f"tiltkit: warning: {message}", file=sys.stderr)
        source, report = run.ood(sets, scores, args.in_data, args.n, args.seed, args.data_dir, k, quiet=args.quiet)
    result = {"run": str(args.run), "kind": run.method.kind, **report.summary}
    make_dir(args.out, "folder")
    atomic_write_text(args.out / "ood.json", json.dumps(result, indent=1) + "\n")
    for s in scores:
        groups = [(f"in: {source.name}", report.scores_in[s])] + [(name, v[s]) for name, v in report.scores_out.items()]
        label = SCORE_LABELS[s].replace("K samples", f"K = {k}")
        viz.score_histograms(groups, args.out / f"hist_{s.value}.png", label, f"{args.run.name}: {s.value}")
    MetricsLog(args.run).write({"ood": result})
    print(json.dumps(result))


def cmd_fid(args) -> None:
    print(json.dumps(fid_between(args.a, args.b, parse_metrics(args.metrics), args.domain, args.data_dir,
                                 args.image_size, quiet=args.quiet, exact=args.exact)))


def cmd_plot(args) -> None:
    read_run(args.run)
    records = MetricsLog(args.run).steps()
    if not records:
        raise UserError(f"{args.run}: no training step logged yet in metrics.jsonl")
    out = args.out or args.run / "curves.png"
    output_file(out, (".png",))
    drawn = viz.curves_figure(records, out, str(args.run))
    print(f"wrote {out}: {', '.join(drawn)} over {len(records)} steps")


def cmd_demo(args) -> None:
    metrics = run_demo(args.out, quick=args.quick, quiet=args.quiet, base=args.base)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out / 'demo.png'} and {args.out / 'metrics.json'}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "ood": cmd_ood, "fid": cmd_fid, "plot": cmd_plot,
            "demo": cmd_demo}
