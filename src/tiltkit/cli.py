"""The `tiltkit` command line: train | sample | eval | ood | demo.

    tiltkit train base --data NAME_OR_PATH [--data-dir D] --model vae|conv-vae --out DIR [--steps N] [--seed S]
    tiltkit train tilt --base DIR --out DIR2 [--steps N] [--seed S] [--resume]
    tiltkit train tilt --base none --data NAME --out DIR2     (a pixel EBM: flat prior on the pixel box)
    tiltkit train tilt --base-module MODULE:FACTORY --data NAME_OR_PATH --out DIR2   (your own generator)
    tiltkit train debm --data NAME --out DIR [--config configs/fashion_debm.yaml]   (a Denoising-EBM)
    tiltkit sample DIR --n N --out FILE.npy|.npz|.png [--trajectory] [--compare-base]
    tiltkit eval DIR [--data NAME_OR_PATH] [--metrics fid,kid,prdc,classes,inception-fid] [--n N] [--exact]
    tiltkit ood DIR --ood uniform,noisy,mnist,... --out DIR2 [--in NAME] [--scores elbo,complexity,combined,...] [--n N]
    tiltkit fid A B [--metrics fid,inception-fid] [--domain NAME] [--exact]   (folders, arrays, data-set names, FID stats)
    tiltkit plot DIR [--out curves.png]
    tiltkit demo --out DIR [--quick]

Options flow into the run's config class (config.py): defaults, then `--config FILE.yaml`,
then `--set key=value`, then the named flags (commands.py). Bad input: one line on stderr, exit code 2.
This module is the parser alone and loads no torch, so `--help` answers at once; `main` hands the parsed
command to commands.py, which does the work.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

from . import __version__
from .choices import MAX_SEED, LogBackend, Precision, Score
from .errors import DivergenceError, Interrupted, UserError


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


class TrainCommand(NamedTuple):
    help: str
    options: dict[str, str]  # its own options (config keys) and their help


# `tiltkit train` subcommands. The methods each one trains are in the registry (methods.py: a Method's
# `command`, and `selected_by`, the option that picks a method over the command's plain one); this table
# of their help is here so that the parser needs no torch. tests/test_layers.py checks that the two agree.
TRAIN_COMMANDS = {
    "base": TrainCommand("fit a base generator to data", {
        "data": "toy set name or .npy/.csv file of points (N, D); or image set (mnist, fashion-mnist, cifar10, "
                "svhn), image folder or .npy/.npz of images",
        "data_dir": "where to look for an image set first",
        "image_size": "image folders: centre-crop and resize to this",
        "model": "base model (vae for points, conv-vae for images)"}),
    "tilt": TrainCommand("fit an energy on a frozen base", {
        "base": "the base run directory, or 'none' for a pixel EBM on --data",
        "base_module": "MODULE:FACTORY: tilt your own generator, returned by FACTORY() from a module on "
                       "PYTHONPATH (docs/api.md)",
        "data": "--base none: the image set the pixel EBM fits; --base-module: the data (a set or file)",
        "data_dir": "where to look for an image set first",
        "image_size": "image folders: centre-crop and resize"}),
    "debm": TrainCommand("fit a Denoising-EBM (DAE energies, Algorithm 1)", {
        "data": "image set (mnist, fashion-mnist, cifar10, svhn), image folder or array file",
        "data_dir": "where to look for an image set first",
        "image_size": "image folders: centre-crop and resize to this"}),
}


def build_parser() -> Parser:
    p = Parser(prog="tiltkit", description="Energy-based tilting of deep generative models.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"tiltkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = sub.add_parser("train", help="train a base model or an energy").add_subparsers(
        dest="what", required=True, parser_class=Parser)
    for command, (text, options) in TRAIN_COMMANDS.items():
        t = train.add_parser(command, help=text)
        for name, text in options.items():
            t.add_argument("--" + name.replace("_", "-"), type=positive_int if name == "image_size" else None, help=text)
        t.add_argument("--out", required=True, type=Path, help="run directory to create (or resume)")
        t.add_argument("--steps", type=positive_int)
        t.add_argument("--seed", type=seed)
        t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun: auto and cuda mean "
                       "each process's own GPU)")
        t.add_argument("--precision", choices=[p.value for p in Precision],
                       help="32 (default), bf16 (autocast, CPU or GPU) or fp16 (GPU, gradient scaler)")
        t.add_argument("--log", choices=[b.value for b in LogBackend],
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
    e.add_argument("--exact", action="store_true", help="inception-fid: run Inception by its reference runtime "
                   "(PyTorch, float32, eager; as papers do) instead of ONNX Runtime (float32, faster on a CPU)")
    e.add_argument("--quiet", action="store_true")

    o = sub.add_parser("ood", help="out-of-distribution detection: AUROC, AUPRC, FPR95 of a run's scores (JSON)")
    o.add_argument("run", type=Path)
    o.add_argument("--in", dest="in_data", help="in-distribution image set (default: the run's own data)")
    o.add_argument("--ood", required=True,
                   help="comma-separated OOD sets: uniform, gaussian, constant, noisy, interp, vflip (made from the "
                        "test images), or image set names, folders, .npy/.npz files (resized to the run's shape)")
    o.add_argument("--out", type=Path, required=True, help="folder for ood.json and hist_<score>.png")
    o.add_argument("--scores", help=f"comma-separated {', '.join(s.value for s in Score)}, those the run offers "
                   "(default: all of them)")
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
    f.add_argument("--exact", action="store_true", help="inception-fid: run Inception by its reference runtime "
                   "(PyTorch, float32, eager; as papers do) instead of ONNX Runtime (float32, faster on a CPU)")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        from . import commands  # torch, the trainers and the plots load here, once a command is to run
        commands.COMMANDS[args.command](args)
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

