"""The `tiltkit` command line: train | sample | eval | ood | demo.

    tiltkit train base --data NAME_OR_PATH [--data-dir D] --model vae|conv-vae --out DIR [--steps N] [--seed S]
    tiltkit train tilt --base DIR --out DIR2 [--steps N] [--seed S] [--resume]
    tiltkit train tilt --base none --data NAME --out DIR2     (a pixel EBM: flat prior on the pixel box)
    tiltkit train debm --data NAME --out DIR [--config configs/fashion_debm.yaml]   (a Denoising-EBM)
    tiltkit sample DIR --n N --out FILE.npy|.npz|.png [--trajectory] [--compare-base]
    tiltkit eval DIR [--data NAME_OR_PATH] [--metrics fid,kid,prdc,classes,inception-fid] [--n N]
    tiltkit ood DIR --ood uniform,noisy,mnist,... --out DIR2 [--in NAME] [--scores elbo,iwae,energy,tilted,texture] [--n N]
    tiltkit demo --out DIR [--quick]

Options flow into the run's config class (config.py): defaults, then `--config FILE.yaml`,
then `--set key=value`, then the named flags. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from .config import BaseRunConfig, DebmRunConfig, TiltRunConfig, from_dict, save_yaml
from .errors import DivergenceError, Interrupted, UserError
from .precision import Precision


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
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a base model or an energy").add_subparsers(
        dest="what", required=True, parser_class=Parser)
    for name, help_text in (("base", "fit a base generator to data"), ("tilt", "fit an energy on a frozen base"),
                            ("debm", "fit a Denoising-EBM (DAE energies, Algorithm 1)")):
        t = train.add_parser(name, help=help_text)
        if name == "debm":
            t.add_argument("--data", help="image set (mnist, fashion-mnist, cifar10, svhn), image folder or array file")
            t.add_argument("--data-dir", help="where to look for an image set first")
            t.add_argument("--image-size", type=positive_int, help="image folders: centre-crop and resize to this")
        elif name == "base":
            t.add_argument("--data", help="toy set name or .npy/.csv file of points (N, D); or image set "
                           "(mnist, fashion-mnist, cifar10, svhn), image folder or .npy/.npz of images")
            t.add_argument("--data-dir", help="where to look for an image set first")
            t.add_argument("--image-size", type=positive_int, help="image folders: centre-crop and resize to this")
            t.add_argument("--model", help="base model (vae for points, conv-vae for images)")
        else:
            t.add_argument("--base", help="the base run directory, or 'none' for a pixel EBM on --data")
            t.add_argument("--data", help="--base none: the image set the pixel EBM fits")
            t.add_argument("--data-dir", help="--base none: where to look for the image set first")
            t.add_argument("--image-size", type=positive_int, help="--base none, image folders: centre-crop and resize")
        t.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
        t.add_argument("--steps", type=positive_int)
        t.add_argument("--seed", type=int)
        t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: auto and cuda mean "
                       "each process's own GPU)")
        t.add_argument("--precision", choices=[p.value for p in Precision],
                       help="32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, gradient scaler)")
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
                   help="tilted image runs: a .png strip of each Langevin chain every --every steps (debm runs: "
                        "the semantic stage, then the texture stage)")
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
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")

    e = sub.add_parser("eval", help="sample-quality metrics of a run against held-out data (JSON)")
    e.add_argument("run", type=Path)
    e.add_argument("--data", help="data set name or file (default: the run's own data)")
    e.add_argument("--data-dir", help="where to look for an image set first (default: the run's)")
    e.add_argument("--metrics", default="fid,kid,prdc,classes",
                   help="images: comma-separated fid,kid,prdc,classes (domain features), inception-fid")
    e.add_argument("--n", type=positive_int, help="samples (default 2000 points, 10000 images)")
    e.add_argument("--seed", type=int, default=0)
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
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--device", default="auto")
    o.add_argument("--quiet", action="store_true")

    d = sub.add_parser("demo", help="VAE (or RealNVP, GLF) → latent EBM on 25-Gaussians and Swiss roll, with a figure")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--quick", action="store_true", help="a few steps only (a smoke test, not the results)")
    d.add_argument("--base", choices=("vae", "realnvp", "glf-mlp"), default="vae", help="the base model the EBM tilts")
    d.add_argument("--quiet", action="store_true")
    return p


def resolve_options(args, cls):
    """Defaults <- --config file (or its `base:`/`tilt:` section) <- --set pairs <- named flags, checked by from_dict."""
    values: dict = {}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
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
        if not sep:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE")
        values[key] = yaml.safe_load(raw)
    for key in ("data", "data_dir", "image_size", "model", "base", "steps", "seed", "device", "precision"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return from_dict(cls, values, "options")


def cmd_train(args) -> None:
    """Train one run; under torchrun, one process of a data-parallel job (training/distributed.py)."""
    from .training import train_base, train_debm, train_tilt
    from .training.distributed import launch
    from .training.run import read_run

    cls = {"base": BaseRunConfig, "tilt": TiltRunConfig, "debm": DebmRunConfig}[args.what]
    if args.resume:
        kind, cfg = read_run(args.out)
        if kind != args.what:
            raise UserError(f"--resume: {args.out} is a {kind} run, not a {args.what} run")
    else:
        cfg = resolve_options(args, cls)
        if args.what == "base" and args.data is None and args.config is None:
            raise UserError("train base: --data is required (a toy or image set name, a file or an image folder)")
        if args.what == "tilt" and not cfg.base:
            raise UserError("train tilt: --base DIR is required")
    train = {"base": train_base, "tilt": train_tilt, "debm": train_debm}[args.what]
    with launch(cfg.device) as dist:
        if args.resume and args.steps is not None and args.steps != cfg.steps:  # extend (or shorten) a run
            cfg.steps = args.steps
            if dist.main:
                save_yaml(cfg, args.out / "config.yaml", args.what)
        train(cfg, args.out, resume=args.resume, quiet=args.quiet, dist=dist)
        if dist.main:
            print(f"trained {args.what} run: {args.out}")


def cmd_sample(args) -> None:
    from .training.run import load_run, resolve_device, sample_run

    suffix = args.out.suffix
    if suffix not in (".npy", ".npz", ".png"):
        raise UserError(f"--out {args.out}: expected a .npy, .npz or .png file")
    if (args.trajectory or args.compare_base) and suffix != ".png":
        raise UserError("--trajectory and --compare-base write pictures: give --out a .png file")
    device = resolve_device(args.device)
    kind, cfg, model = load_run(args.run, device)
    cfg, model = sampling_options(kind, cfg, model, args)
    gen = torch.Generator(device).manual_seed(args.seed)
    what = {"tilt": "tilted", "base": "base", "debm": "Denoising-EBM"}[kind]
    if suffix == ".npy":
        x = sample_run(kind, cfg, model, args.n, gen)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, x.cpu().numpy())
        print(f"wrote {args.n} samples of the {what} model to {args.out}")
        return
    from . import viz
    from .metrics.image_eval import sample_images

    if args.trajectory or args.compare_base:
        if kind == "base":
            raise UserError(f"--trajectory and --compare-base need a tilted run or a debm run; {args.run} is a base run")
        if kind == "debm":
            pictures = debm_trajectory if args.trajectory else debm_compare
        else:
            pictures = viz_trajectory if args.trajectory else viz_compare
        pictures(model, cfg, args, gen)
        print(f"wrote {args.out}")
        return
    x = sample_images(model, kind, cfg, args.n, gen, quiet=False)
    if suffix == ".npz":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, x=x.numpy())
    else:
        viz.save_image(viz.image_grid(x, args.nrow), args.out, scale=2)
    print(f"wrote {args.n} images of the {what} model to {args.out}")


def sampling_options(kind: str, cfg, model, args):
    """--steps / --step-size on the recipe's sample sampler; --space data: chains in x on a flow base."""
    import dataclasses

    from .generators import FlowInDataSpace
    from .tilt import TiltedModel

    overrides = {k: v for k, v in (("steps", args.steps), ("step_size", args.step_size)) if v is not None}
    if kind == "debm" and (overrides or args.space != "noise"):
        raise UserError("--space, --steps and --step-size set a tilted run's sampler; a debm run samples with its "
                        "config's sample_latent_sampler and sample_pixel_sampler")
    if kind != "tilt":
        if overrides or args.space != "noise":
            raise UserError(f"--space, --steps and --step-size set the tilted sampler; {args.run} is a base run")
        return cfg, model
    if overrides:
        cfg = dataclasses.replace(cfg, sample_sampler=dataclasses.replace(cfg.sample_sampler, **overrides))
    if args.space == "data":
        try:
            model = TiltedModel(FlowInDataSpace(model.base), model.energy)
        except ValueError as exc:
            raise UserError(f"--space data: {exc}") from None
    return cfg, model


def viz_trajectory(model, cfg, args, gen) -> None:
    """A strip per chain: the decoded state every `--every` Langevin steps, start first (paper Fig. 5.3)."""
    from . import viz
    from .data.images import to_uint8

    result = model.sample(cfg.sample_sampler, args.n, gen, return_trajectory=True, trajectory_every=args.every)
    with torch.no_grad():
        frames = [to_uint8(model.output(state), model.base.pixel_range).cpu() for state in result.trajectory]
    viz.save_image(viz.trajectory_strip(frames), args.out, scale=2)


def viz_compare(model, cfg, args, gen) -> None:
    """Base and tilted samples from the same starting noise, side by side."""
    from . import viz
    from .metrics.image_eval import sample_images

    noise = model.sample_noise(args.n, gen)
    base_noise = model.base.latent(noise) if model.use_mu else noise  # VAEBM: the base's decoder means, too
    base = sample_images(model.base, "base", None, args.n, gen, noise=base_noise)
    tilted = sample_images(model, "tilt", cfg, args.n, gen, noise=noise)
    viz.compare_figure([("base model", base), ("tilted", tilted)], args.out, args.nrow)


def debm_trajectory(model, cfg, args, gen) -> None:
    """A strip per chain: h(z_t) through the semantic stage, then x_t through the texture stage (paper Fig. 5)."""
    from . import viz
    from .data.images import to_uint8

    result = model.sample(args.n, cfg.sample_latent_sampler, cfg.sample_pixel_sampler, gen, cfg.sample_sigma,
                          return_trajectory=True, every=args.every)
    viz.save_image(viz.trajectory_strip([to_uint8(f, model.pixel_range).cpu() for f in result.trajectory]),
                   args.out, scale=2)


def debm_compare(model, cfg, args, gen) -> None:
    """Semantic images x⁰ = h(z_K) and the two-stage samples x_T of the same chains, side by side."""
    from . import viz
    from .data.images import to_uint8

    result = model.sample(args.n, cfg.sample_latent_sampler, cfg.sample_pixel_sampler, gen, cfg.sample_sigma)
    viz.compare_figure([("semantic image h(z_K)", to_uint8(result.semantic, model.pixel_range).cpu()),
                        ("two-stage sample x_T", to_uint8(result.x, model.pixel_range).cpu())], args.out, args.nrow)


def cmd_eval(args) -> None:
    from .data.source import DataSource
    from .training.run import MetricsLog, base_config, load_run, resolve_device

    device = resolve_device(args.device)
    kind, cfg, model = load_run(args.run, device)
    base_cfg = base_config(args.run, kind, cfg)
    source = DataSource(args.data or base_cfg.data, args.data_dir or base_cfg.data_dir, base_cfg.image_size)
    if source.is_image:
        result = eval_images(args, kind, cfg, model, source, device)
    else:
        result = eval_points(args, kind, cfg, model, source, device)
    MetricsLog(args.run).write({"eval": result})
    print(json.dumps(result))


def eval_points(args, kind, cfg, model, source, device) -> dict:
    from .metrics import toy_metrics
    from .training.run import sample_run

    n = args.n or 2000
    held_out = source.points("test").numpy()
    x = sample_run(kind, cfg, model, n, torch.Generator(device).manual_seed(args.seed)).cpu().numpy()
    if x.ndim != 2 or x.shape[1] != held_out.shape[1]:
        raise UserError(f"--data {source.name} has dimension {held_out.shape[1]}, the run's samples "
                        f"have shape {x.shape[1:]}")
    return {"data": source.name, "n": n, **toy_metrics(x, held_out, source.name)}


def eval_images(args, kind, cfg, model, source, device) -> dict:
    from .metrics.image_eval import check_shape, evaluate_images, parse_metrics, sample_images

    metrics = parse_metrics(args.metrics)
    n = args.n or 10_000
    with torch.no_grad():  # one decoded sample: a shape mismatch is reported before any long work
        check_shape(model.decode(model.sample_noise(1)), source.images("test"), source.name)
    x = sample_images(model, kind, cfg, n, torch.Generator(device).manual_seed(args.seed), quiet=args.quiet)
    report = evaluate_images(x, source, metrics, quiet=args.quiet)
    return {"data": source.name, "source": source.images("test").source, "n": n,
            "metrics": [m.value for m in metrics], **report}


def cmd_ood(args) -> None:
    import warnings

    from . import viz
    from .atomic import atomic_write_text
    from .data.source import DataSource
    from .metrics.ood import IW_SAMPLES, SCORE_LABELS, parse_ood_sets, parse_scores, run_ood
    from .training.run import MetricsLog, base_config, load_run, resolve_device

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file: expected a folder for ood.json and the histograms")
    sets = parse_ood_sets(args.ood)
    device = resolve_device(args.device)
    kind, cfg, model = load_run(args.run, device)
    scores = parse_scores(args.scores, kind, model)
    base_cfg = base_config(args.run, kind, cfg)
    own = args.in_data in (None, base_cfg.data)
    source = (DataSource(base_cfg.data, args.data_dir or base_cfg.data_dir, base_cfg.image_size) if own
              else DataSource(args.in_data, args.data_dir))
    if not source.is_image:
        raise UserError(f"--in {source.name}: OOD scoring needs an image set")
    k = args.iw_samples or IW_SAMPLES
    with warnings.catch_warnings():  # a resized OOD set is one line on stderr
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *_, **__: print(f"tiltkit: warning: {message}", file=sys.stderr)
        report = run_ood(model, kind, source, sets, scores, args.n, args.seed, args.data_dir, k, quiet=args.quiet)
    result = {"run": str(args.run), "kind": kind, **report.summary}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ood.json", json.dumps(result, indent=1) + "\n")
    for s in scores:
        groups = [(f"in: {source.name}", report.scores_in[s])] + [(name, v[s]) for name, v in report.scores_out.items()]
        label = SCORE_LABELS[s].replace("K samples", f"K = {k}")
        viz.score_histograms(groups, args.out / f"hist_{s.value}.png", label, f"{args.run.name}: {s.value}")
    MetricsLog(args.run).write({"ood": result})
    print(json.dumps(result))


def cmd_demo(args) -> None:
    from .demo import run_demo

    metrics = run_demo(args.out, quick=args.quick, quiet=args.quiet, base=args.base)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out / 'demo.png'} and {args.out / 'metrics.json'}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "ood": cmd_ood, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except UserError as exc:
        if debug:
            raise
        print(f"tiltkit: error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        if debug:
            raise
        print(f"tiltkit: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"tiltkit: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("tiltkit: interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0

