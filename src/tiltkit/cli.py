"""The `tiltkit` command line: train | sample | eval | ood | demo.

    tiltkit train base --data NAME_OR_PATH [--data-dir D] --model vae|conv-vae --out DIR [--steps N] [--seed S]
    tiltkit train tilt --base DIR --out DIR2 [--steps N] [--seed S] [--resume]
    tiltkit train tilt --base none --data NAME --out DIR2     (a pixel EBM: flat prior on the pixel box)
    tiltkit train tilt --base-module MODULE:FACTORY --data NAME_OR_PATH --out DIR2   (your own generator)
    tiltkit train debm --data NAME --out DIR [--config configs/fashion_debm.yaml]   (a Denoising-EBM)
    tiltkit sample DIR --n N --out FILE.npy|.npz|.png [--trajectory] [--compare-base]
    tiltkit eval DIR [--data NAME_OR_PATH] [--metrics fid,kid,prdc,classes,inception-fid] [--n N]
    tiltkit ood DIR --ood uniform,noisy,mnist,... --out DIR2 [--in NAME] [--scores elbo,iwae,energy,tilted,texture] [--n N]
    tiltkit fid A B [--metrics fid,inception-fid] [--domain NAME]     (folders, arrays, data-set names, FID stats)
    tiltkit plot DIR [--out curves.png]
    tiltkit demo --out DIR [--quick]

Options flow into the run's config class (config.py): defaults, then `--config FILE.yaml`,
then `--set key=value`, then the named flags. Bad input: one line on stderr, exit code 2.
Each `train` subcommand and what a run can do come from its Method in the registry (methods.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import yaml

from . import __version__, viz
from .api import load
from .atomic import atomic_write_text
from .config import MAX_SEED, from_dict, to_dict
from .demo import run_demo
from .errors import DivergenceError, Interrupted, UserError
from .methods import method_for, read_run, train_commands
from .metrics.image_eval import fid_between, parse_metrics
from .metrics.ood import IW_SAMPLES, SCORE_LABELS, parse_ood_sets, parse_scores
from .precision import Precision
from .training.distributed import launch
from .training.rundir import MetricsLog, trained_steps


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63 - 1], got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_parser() -> Parser:
    p = Parser(prog="tiltkit", description="Energy-based tilting of deep generative models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"tiltkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a base model or an energy").add_subparsers(
        dest="what", required=True, parser_class=Parser)
    for command, methods in train_commands().items():
        t = train.add_parser(command, help=methods[0].help)
        for name, text in {k: v for m in methods for k, v in m.cli_options.items()}.items():
            t.add_argument("--" + name.replace("_", "-"), type=positive_int if name == "image_size" else None, help=text)
        t.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
        t.add_argument("--steps", type=positive_int)
        t.add_argument("--seed", type=seed)
        t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: auto and cuda mean "
                       "each process's own GPU)")
        t.add_argument("--precision", choices=[p.value for p in Precision],
                       help="32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, gradient scaler)")
        t.add_argument("--log", choices=("jsonl", "tensorboard"),
                       help="tensorboard: also TensorBoard event files in OUT/tensorboard (scalars; image runs: sample "
                            "grids every log_images_every steps, default each checkpoint); needs tiltkit[tensorboard]")
        t.add_argument("--config", type=Path, help="YAML recipe of options")
        t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one option, YAML value (repeatable), e.g. --set alpha=0.1")
        t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a run")
    s.add_argument("run", type=Path)
    s.add_argument("--n", type=positive_int, required=True)
    s.add_argument("--out", type=Path, required=True,
                   help=".npy (samples as floats), .npz (images as uint8, key x) or .png (image grid)")
    s.add_argument("--trajectory", action="store_true",
                   help="tilted runs: a .png strip of each Langevin chain every --every steps (debm runs: "
                        "the semantic stage, then the texture stage; 2-D runs: the chains' paths)")
    s.add_argument("--every", type=positive_int, default=10, help="--trajectory: steps between frames")
    s.add_argument("--compare-base", action="store_true",
                   help="tilted image runs: a .png of base and tilted samples side by side, same starting noise "
                        "(debm runs: semantic images h(z_K) beside the two-stage samples)")
    s.add_argument("--nrow", type=positive_int, help="images per row of a grid")
    s.add_argument("--space", choices=("noise", "data"), default="noise",
                   help="tilted runs on a flow: chains in the flow's noise (default) or in x itself, "
                        "U(x) = −log p_flow(x) + E(x) (tilting paper §3.1)")
    s.add_argument("--steps", type=positive_int, help="tilted runs: sampler steps instead of the recipe's")
    s.add_argument("--step-size", type=positive_float, help="tilted runs: sampler step size instead of the recipe's")
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--device", default="auto")

    e = sub.add_parser("eval", help="sample-quality metrics of a run against held-out data (JSON)")
    e.add_argument("run", type=Path)
    e.add_argument("--data", help="data set name or file (default: the run's own data)")
    e.add_argument("--data-dir", help="where to look for an image set first (default: the run's)")
    e.add_argument("--metrics", help="image runs: comma-separated fid,kid,prdc,classes (domain features), "
                   "inception-fid (default: the four domain metrics); point runs always report mmd, emd (modes)")
    e.add_argument("--n", type=positive_int, help="samples (default 2000 points, 10000 images)")
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true")

    o = sub.add_parser("ood", help="out-of-distribution detection: AUROC, AUPRC, FPR95 of a run's scores (JSON)")
    o.add_argument("run", type=Path)
    o.add_argument("--in", dest="in_data", help="in-distribution image set (default: the run's own data)")
    o.add_argument("--ood", required=True,
                   help="comma-separated OOD sets: uniform, gaussian, constant, noisy, interp, vflip (made from the "
                        "test images), or image set names, folders, .npy/.npz files (resized to the run's shape)")
    o.add_argument("--out", type=Path, required=True, help="folder for ood.json and hist_<score>.png")
    o.add_argument("--scores", help="comma-separated elbo, iwae, energy, tilted, texture (a debm run) "
                   "(default: every score the run offers)")
    o.add_argument("--n", type=positive_int, help="images per set (default: the whole in-distribution test split)")
    o.add_argument("--iw-samples", type=positive_int, help="importance samples K of the iwae score (default 32)")
    o.add_argument("--data-dir", help="where to look for image sets first")
    o.add_argument("--seed", type=seed, default=0)
    o.add_argument("--device", default="auto")
    o.add_argument("--quiet", action="store_true")

    f = sub.add_parser("fid", help="FID between two image sets (JSON): folders, .npy/.npz arrays, data-set names "
                       "(NAME:train for the training split), or .npz FID statistics (mu, sigma) of pytorch-fid/clean-fid")
    f.add_argument("a")
    f.add_argument("b")
    f.add_argument("--metrics", default="fid", help="fid (domain features), inception-fid, or both (comma-separated)")
    f.add_argument("--domain", help="the labelled data set whose classifier gives the domain features "
                   "(default: a or b where it is a data-set name)")
    f.add_argument("--data-dir", help="where to look for image sets first")
    f.add_argument("--image-size", type=positive_int, help="image folders: centre-crop and resize to this")
    f.add_argument("--quiet", action="store_true")

    c = sub.add_parser("plot", help="a run's training curves (loss, E(x⁺)/E(x⁻), gap, acceptance, validation FID) "
                       "as one PNG")
    c.add_argument("run", type=Path)
    c.add_argument("--out", type=Path, help="the PNG to write (default RUN/curves.png)")

    d = sub.add_parser("demo", help="VAE (or RealNVP, GLF) → latent EBM on 25-Gaussians and Swiss roll, with a figure")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--quick", action="store_true", help="a few steps only (a smoke test, not the results)")
    d.add_argument("--base", choices=("vae", "realnvp", "glf-mlp"), default="vae", help="the base model the EBM tilts")
    d.add_argument("--quiet", action="store_true")
    return p


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


def cmd_sample(args) -> None:
    suffix = args.out.suffix
    if suffix not in (".npy", ".npz", ".png"):
        raise UserError(f"--out {args.out}: expected a .npy, .npz or .png file")
    if (args.trajectory or args.compare_base) and suffix != ".png":
        raise UserError("--trajectory and --compare-base write pictures: give --out a .png file")
    run = load(args.run, device=args.device).with_sampling(args.steps, args.step_size, args.space == "data")
    gen = run.generator(args.seed)
    what = run.method.label
    if suffix == ".npy":
        x = run.sample(args.n, generator=gen)
        args.out.parent.mkdir(parents=True, exist_ok=True)
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, x=x.numpy())
    else:
        viz.save_image(viz.image_grid(x, args.nrow), args.out, scale=2)
    print(f"wrote {args.n} images of the {what} model to {args.out}")


def cmd_eval(args) -> None:
    run = load(args.run, device=args.device)
    result = run.evaluate(args.data, args.data_dir, args.metrics, args.n, args.seed, quiet=args.quiet)
    MetricsLog(args.run).write({"eval": result})
    print(json.dumps(result))


def cmd_ood(args) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: expected a folder for ood.json and the histograms")
    sets = parse_ood_sets(args.ood)
    run = load(args.run, device=args.device)
    scores = parse_scores(args.scores, run.scorer)
    k = args.iw_samples or IW_SAMPLES
    with warnings.catch_warnings():  # a resized OOD set is one line on stderr
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: print(f"tiltkit: warning: {message}", file=sys.stderr)
        source, report = run.ood(sets, scores, args.in_data, args.n, args.seed, args.data_dir, k, quiet=args.quiet)
    result = {"run": str(args.run), "kind": run.method.kind, **report.summary}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ood.json", json.dumps(result, indent=1) + "\n")
    for s in scores:
        groups = [(f"in: {source.name}", report.scores_in[s])] + [(name, v[s]) for name, v in report.scores_out.items()]
        label = SCORE_LABELS[s].replace("K samples", f"K = {k}")
        viz.score_histograms(groups, args.out / f"hist_{s.value}.png", label, f"{args.run.name}: {s.value}")
    MetricsLog(args.run).write({"ood": result})
    print(json.dumps(result))


def cmd_fid(args) -> None:
    print(json.dumps(fid_between(args.a, args.b, parse_metrics(args.metrics), args.domain, args.data_dir,
                                 args.image_size, quiet=args.quiet)))


def cmd_plot(args) -> None:
    read_run(args.run)
    records = MetricsLog(args.run).steps()
    if not records:
        raise UserError(f"{args.run}: no training step logged yet in metrics.jsonl")
    out = args.out or args.run / "curves.png"
    if out.suffix != ".png":
        raise UserError(f"--out {out}: expected a .png file")
    drawn = viz.curves_figure(records, out, str(args.run))
    print(f"wrote {out}: {', '.join(drawn)} over {len(records)} steps")


def cmd_demo(args) -> None:
    metrics = run_demo(args.out, quick=args.quick, quiet=args.quiet, base=args.base)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out / 'demo.png'} and {args.out / 'metrics.json'}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "ood": cmd_ood, "fid": cmd_fid, "plot": cmd_plot,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except UserError as exc:
        if debug:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        print(f"tiltkit: error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        if debug:
            traceback.print_exc()
        print(f"tiltkit: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"tiltkit: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tiltkit: interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0

