"""Out-of-distribution detection by each run's scores, side by side: AUROC per OOD set and run/score.

Every score a run offers (tiltkit.metrics.ood: elbo, iwae, regret, complexity, combined for a VAE; + energy,
tilted for a tilted VAE; energy, combined for a pixel EBM; texture, multiscale, combined for a Denoising-EBM)
is computed on n in-distribution test images and n images of each OOD set; the fitted scores are fitted on
training images first. All runs see the same images: the sets are drawn from --seed alone. Writes
benchmarks/results/ood_<in>.json and the `ood` section of BENCHMARKS.md (rows: run and score; columns: OOD
sets; AUROC).

    .venv/bin/python benchmarks/ood.py --run vae=runs/bench-fashion-mnist/vae \\
        --run latent-ebm=runs/bench-fashion-mnist/tilt --in fashion-mnist --n 2000
    .venv/bin/python benchmarks/ood.py --run ... --n 200 --no-write        # a smoke run: prints, writes nothing
    .venv/bin/python benchmarks/ood.py --rewrite                           # the section again from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

import tiltkit
from common import ROOT, cpu_model, git_commit, write_block
from tiltkit.data.source import DataSource
from tiltkit.errors import UserError
from tiltkit.metrics.ood import IW_SAMPLES, NOISE_SIGMA, parse_ood_sets, run_ood

DEFAULT_OOD = "mnist,uniform,gaussian,constant,noisy,interp,vflip"


def parse_runs(pairs: list[str]) -> dict[str, Path]:
    runs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--run {pair!r}: expected NAME=DIR, e.g. vae=runs/bench-fashion-mnist/vae")
        if name in runs:
            raise UserError(f"--run {name} given twice")
        runs[name] = Path(path)
    if not runs:
        raise UserError("give at least one --run NAME=DIR")
    return runs


def evaluate(runs: dict[str, Path], args) -> dict:
    sets = parse_ood_sets(args.ood)
    out: dict = {"in": args.in_data, "n": args.n, "seed": args.seed, "iw_samples": args.iw_samples,
                 "noise_sigma": NOISE_SIGMA, "ood": sets, "runs": {}}
    for name, run_dir in runs.items():
        t0 = time.perf_counter()
        run = tiltkit.load(run_dir, device="cpu")
        base_cfg = run.method.data_config(run.dir, run.cfg)
        own = args.in_data == base_cfg.data
        source = DataSource(args.in_data, base_cfg.data_dir if own else None, base_cfg.image_size if own else None)
        scorer = run.scorer
        report = run_ood(scorer, source, sets, scorer.offered, args.n, args.seed,
                         args.data_dir, args.iw_samples, quiet=args.quiet)
        seconds = round(time.perf_counter() - t0, 1)
        out["runs"][name] = {"dir": str(run_dir), "kind": run.method.kind, "model": type(run.model).__name__,
                             "base": type(run.base).__name__,
                             "seconds": seconds, **report.summary}
        out["n"] = report.summary["n"]
        out["fit_n"] = report.summary.get("fit", {}).get("n", out.get("fit_n"))
        print(f"[{name}] {seconds:.0f} s: " + json.dumps({k: {s: m["auroc"] for s, m in v.items()}
                                                           for k, v in report.summary["results"].items()}), flush=True)
    return out


def table(r: dict) -> str:
    """Rows: run and score; columns: OOD sets and the worst of them; the best AUROC of each column in bold."""
    cols = [(run, s) for run, v in r["runs"].items() for s in v["scores"]]
    first = r["runs"][cols[0][0]]["sets"]
    heads = [name if first[name]["n"] == r["n"] else f"{name} (n={first[name]['n']})" for name in r["ood"]]
    cells = {(q, t): [r["runs"][q]["results"][name][t]["auroc"] for name in r["ood"]] for q, t in cols}
    cells = {k: v + [min(v)] for k, v in cells.items()}  # the worst set
    best = [max(v[j] for v in cells.values()) for j in range(len(heads) + 1)]
    rows = ["| run | score | " + " | ".join(heads) + " | worst set |", "|---|---|" + "---:|" * (len(heads) + 1)]
    for (run, s), v in cells.items():
        rows.append(f"| {run} | {s} | " + " | ".join(f"**{a:.3f}**" if a == b else f"{a:.3f}"
                                                   for a, b in zip(v, best)) + " |")
    return "\n".join(rows)


def section(r: dict) -> str:
    # a run whose model is not its base generator itself is a tilt of that base ("tilted ConvVAE")
    runs = "; ".join(f"{k} = `{v['dir']}` ({'' if v['model'] == v['base'] else 'tilted '}{v['base']}, "
                     f"{v['seconds']:.0f} s)" for k, v in r["runs"].items())
    resized = {name: s["resized"] for run in r["runs"].values() for name, s in run["sets"].items() if s["resized"]}
    notes = "".join(f" {k}: {note}." for k, note in resized.items())
    source = next(iter(r["runs"].values()))["source"]
    return (f"{r['date']}, commit {r['commit']}, {r['cpu']}, {r['threads']} thread{'s' if r['threads'] != 1 else ''}, torch {r['torch']}. "
            f"In-distribution: {r['in']} test split ({source}), n = {r['n']} images per set, seed {r['seed']}; "
            f"runs: {runs}. AUROC with in-distribution as the positive class and every score oriented "
            f"higher = more in-distribution (elbo, iwae with K = {r['iw_samples']}, regret = −a VAE's likelihood "
            f"regret, energy = −E(x), "
            f"tilted = ELBO − E(x), texture = a Denoising-EBM's −U_c(x, σ = 0.05), complexity = log p(x) + PNG bits·ln 2, "
            f"multiscale and combined = Gaussian-mixture log-densities of denoising errors at 10 σ and of all the run's "
            f"statistics (a VAE's: reconstruction, KL, regret, PNG bits, and its energy when tilted), fitted on {r.get('fit_n', 5000)} in-distribution training images); 0.5 is chance, below 0.5 "
            f"the score prefers the OOD set. "
            f"Synthetic sets are made from the same n test images (noisy: σ = {r['noise_sigma']:g} on 0..255)."
            f"{notes} AUPRC and FPR95 in `benchmarks/results/ood_{r['slug']}.json`.\n\n{table(r)}\n\n"
            f"Reproduce: `.venv/bin/python benchmarks/ood.py {r['argv']}`.\n")


def reproduce(argv: list[str]) -> str:
    """The command line without the options that only say where to write (or not)."""
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--markdown", "--results"):
            skip = True
        elif a != "--no-write" and not a.startswith(("--markdown=", "--results=")):
            keep.append(a if " " not in a else repr(a))
    return " ".join(keep)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="a run to score (repeatable)")
    p.add_argument("--in", dest="in_data", default="fashion-mnist", help="in-distribution image set")
    p.add_argument("--ood", default=DEFAULT_OOD, help="comma-separated OOD sets (tiltkit ood --ood)")
    p.add_argument("--n", type=int, help="images per set (default: the whole test split)")
    p.add_argument("--iw-samples", type=int, default=IW_SAMPLES)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md", help="where the section goes")
    p.add_argument("--results", type=Path, help="results JSON (default benchmarks/results/ood_<in>[_<tag>].json)")
    p.add_argument("--tag", help="a name for this table, beside others of the same in-distribution set (its results "
                   "file and BENCHMARKS.md section)")
    p.add_argument("--no-write", action="store_true", help="print the results and the section; write nothing")
    p.add_argument("--rewrite", action="store_true", help="score nothing: write the section from the results JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    slug = args.in_data.replace("-", "_").replace("/", "_").strip("_.") + (f"_{args.tag}" if args.tag else "")
    path = args.results or ROOT / "benchmarks" / "results" / f"ood_{slug}.json"
    heading = (f"Out-of-distribution detection, in-distribution {args.in_data}{f' ({args.tag})' if args.tag else ''} "
               f"(`benchmarks/ood.py`)")
    if args.rewrite:
        if not path.exists():
            sys.exit(f"benchmarks/ood.py: error: --rewrite: no results at {path}")
        write_block(f"ood-{slug}", section(json.loads(path.read_text())), heading, args.markdown)
        print(f"wrote the ood section of {args.markdown} from {path}")
        return
    torch.set_num_threads(args.threads)
    try:
        results = evaluate(parse_runs(args.run), args)
    except UserError as exc:
        sys.exit(f"benchmarks/ood.py: error: {exc}")
    results.update({"date": datetime.date.today().isoformat(), "commit": git_commit(), "cpu": cpu_model(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "slug": slug,
                    "argv": reproduce(sys.argv[1:])})
    text = section(results)
    print(text)
    if args.no_write:
        return
    path.write_text(json.dumps(results, indent=1) + "\n")
    write_block(f"ood-{slug}", text, heading, args.markdown)
    print(f"wrote {path} and the ood section of {args.markdown}")


if __name__ == "__main__":
    main()
