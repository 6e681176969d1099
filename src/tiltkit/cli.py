"""The `tiltkit` command line: train | sample | eval | demo.

    tiltkit train base --data NAME_OR_FILE --model vae --out DIR [--steps N] [--seed S] [--device D]
    tiltkit train tilt --base DIR --out DIR2 [--steps N] [--seed S] [--resume]
    tiltkit sample DIR --n N --out FILE.npy
    tiltkit eval DIR [--data NAME_OR_FILE]
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

from .config import BaseRunConfig, TiltRunConfig, from_dict, save_yaml
from .errors import DivergenceError, UserError


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


def build_parser() -> Parser:
    p = Parser(prog="tiltkit", description="Energy-based tilting of deep generative models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a base model or an energy").add_subparsers(
        dest="what", required=True, parser_class=Parser)
    for name, help_text in (("base", "fit a base generator to data"), ("tilt", "fit an energy on a frozen base")):
        t = train.add_parser(name, help=help_text)
        if name == "base":
            t.add_argument("--data", help="toy set name or a .npy/.csv file of shape (N, D)")
            t.add_argument("--model", help="base model (vae)")
        else:
            t.add_argument("--base", help="the base run directory")
        t.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
        t.add_argument("--steps", type=positive_int)
        t.add_argument("--seed", type=int)
        t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
        t.add_argument("--config", type=Path, help="YAML recipe of options")
        t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one option, YAML value (repeatable), e.g. --set alpha=0.1")
        t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
        t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a run")
    s.add_argument("run", type=Path)
    s.add_argument("--n", type=positive_int, required=True)
    s.add_argument("--out", type=Path, required=True, help="output .npy file")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")

    e = sub.add_parser("eval", help="toy metrics of a run's samples against held-out data (JSON)")
    e.add_argument("run", type=Path)
    e.add_argument("--data", help="toy set name or file (default: the run's own data)")
    e.add_argument("--n", type=positive_int, default=2000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")

    d = sub.add_parser("demo", help="VAE → latent EBM on 25-Gaussians and Swiss roll, with a figure")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--quick", action="store_true", help="a few steps only (a smoke test, not the results)")
    d.add_argument("--quiet", action="store_true")
    return p


def resolve_options(args, cls):
    """Defaults <- --config file <- --set pairs <- named flags, checked by from_dict."""
    values: dict = {}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--config {args.config}: cannot read ({exc.__class__.__name__})") from None
        values.update(loaded or {})
        values.pop("kind", None)
    for pair in args.set:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE")
        values[key] = yaml.safe_load(raw)
    for key in ("data", "model", "base", "steps", "seed", "device"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    return from_dict(cls, values, "options")


def cmd_train(args) -> None:
    from .training import train_base, train_tilt
    from .training.run import read_run

    cls = BaseRunConfig if args.what == "base" else TiltRunConfig
    if args.resume:
        kind, cfg = read_run(args.out)
        if kind != args.what:
            raise UserError(f"--resume: {args.out} is a {kind} run, not a {args.what} run")
        if args.steps is not None and args.steps != cfg.steps:  # extend (or shorten) a run
            cfg.steps = args.steps
            save_yaml(cfg, args.out / "config.yaml", kind)
    else:
        cfg = resolve_options(args, cls)
        if args.what == "base" and args.data is None and args.config is None:
            raise UserError("train base: --data is required (a toy set name or a .npy/.csv file)")
        if args.what == "tilt" and not cfg.base:
            raise UserError("train tilt: --base DIR is required")
    train = train_base if args.what == "base" else train_tilt
    train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    print(f"trained {args.what} run: {args.out}")


def cmd_sample(args) -> None:
    from .training.run import load_run, resolve_device, sample_run

    if args.out.suffix != ".npy":
        raise UserError(f"--out {args.out}: expected a .npy file")
    device = resolve_device(args.device)
    kind, cfg, model = load_run(args.run, device)
    x = sample_run(kind, cfg, model, args.n, torch.Generator(device).manual_seed(args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, x.cpu().numpy())
    print(f"wrote {args.n} samples of the {'tilted' if kind == 'tilt' else 'base'} model to {args.out}")


def cmd_eval(args) -> None:
    from .data.toy import toy_split
    from .metrics import toy_metrics
    from .training.run import MetricsLog, load_run, resolve_device, sample_run

    device = resolve_device(args.device)
    kind, cfg, model = load_run(args.run, device)
    data = args.data or (cfg.data if kind == "base" else _base_data(args.run))
    _, held_out = toy_split(data)
    x = sample_run(kind, cfg, model, args.n, torch.Generator(device).manual_seed(args.seed)).cpu().numpy()
    if x.shape[1] != held_out.shape[1]:
        raise UserError(f"--data {data} has dimension {held_out.shape[1]}, the run's samples {x.shape[1]}")
    result = {"data": data, "n": args.n, **toy_metrics(x, held_out, data)}
    MetricsLog(args.run).write({"eval": result})
    print(json.dumps(result))


def _base_data(run: Path) -> str:
    from .config import load_yaml

    return load_yaml(run / "base_config.yaml")[1].data


def cmd_demo(args) -> None:
    from .demo import run_demo

    metrics = run_demo(args.out, quick=args.quick, quiet=args.quiet)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out / 'demo.png'} and {args.out / 'metrics.json'}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "demo": cmd_demo}


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
    except KeyboardInterrupt:
        print("tiltkit: interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0

