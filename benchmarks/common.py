"""Helpers every benchmark script shares: the machine's CPU, the commit, recipes, BENCHMARKS.md blocks, and
resumable timed stages whose results live in one JSON file."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import tiltkit
from tiltkit.config import BaseRunConfig, TiltRunConfig, from_dict
from tiltkit.data.source import DataSource
from tiltkit.metrics.image_eval import DomainFID, Metric, classifier_for, evaluate_images

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown CPU"


def git_commit() -> str:
    """The checkout's short commit, or "" where there is none (a copy of the tree without .git or git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def recipe(path: Path) -> tuple[BaseRunConfig, dict]:
    """A configs/ recipe: its `base:` section as a checked BaseRunConfig, its `tilt:` options as they stand
    (their `base` run is filled in by the caller)."""
    sections = yaml.safe_load(Path(path).read_text())
    return from_dict(BaseRunConfig, sections["base"], str(path)), sections.get("tilt", {})


def write_block(key: str, text: str, heading: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the text between `<!-- key:begin -->` and `<!-- key:end -->` in BENCHMARKS.md, or append
    it under `## heading`; text outside the markers (notes written by hand) is left alone."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + f"\n\n## {heading}\n\n{block}\n"
    path.write_text(doc)


def stage_cli(doc: str, stages: tuple[str, ...], out: Path, results_name: str):
    """The staged benchmarks' command line: --out (default `out`), --n, --threads, --stages, --fresh.

    Sets torch's thread count, refuses unknown stage names and makes the work folder. Returns (args, the
    stages asked for, results): the earlier benchmarks/results/`results_name` unless --fresh, with its
    "path" and a "stages" dict, ready for `run_stage`.
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, default=out, help="work folder")
    p.add_argument("--n", type=int, default=10_000, help="samples per model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", default=",".join(stages))
    p.add_argument("--fresh", action="store_true", help="forget earlier results of this benchmark")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    asked = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(asked) - set(stages))
    if unknown:
        p.error(f"unknown stage {unknown[0]!r}; stages: {', '.join(stages)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = ROOT / "benchmarks" / "results" / results_name
    results = json.loads(path.read_text()) if path.exists() and not args.fresh else {}
    results.setdefault("stages", {})
    results["path"] = str(path)
    return args, asked, results


def run_stage(name: str, results: dict, fn) -> None:
    """Run fn() unless stage `name` already finished; record its wall time and what it returns, then save.

    `results` holds "path" (the JSON file) and "stages"; an interrupted benchmark resumes at its first
    unfinished stage.
    """
    if name in results["stages"]:
        print(f"[{name}] done earlier ({results['stages'][name]['seconds']:.0f} s), skipped")
        return
    print(f"[{name}] ...", flush=True)
    t0 = time.perf_counter()
    extra = fn() or {}
    seconds = time.perf_counter() - t0
    results["stages"][name] = {"seconds": round(seconds, 1), **extra}
    print(f"[{name}] {seconds / 60:.1f} min {json.dumps(extra)[:300]}", flush=True)
    save_results(results)


def publish(results: dict, key: str, section, heading: str, stamp: bool = True) -> None:
    """Stamp results with today's date and the commit (`stamp`: False when nothing was run, only re-rendered),
    save them, and write section(results) as the `key` block of BENCHMARKS.md (under `heading` when new)."""
    if stamp:
        results.update({"date": datetime.date.today().isoformat(), "commit": git_commit()})
    save_results(results)
    write_block(key, section(results), heading)
    print(section(results))


def save_results(results: dict) -> None:
    path = Path(results["path"])
    path.write_text(json.dumps({k: v for k, v in results.items() if k != "path"}, indent=1) + "\n")


def last_metrics(run: Path) -> dict:
    """A run's last metrics line: its step and its own training clock `time_s`, whichever process trained it."""
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def mean_step_seconds(run: Path) -> float:
    """A run's mean step time after its first fifth of steps, from its own clock (a step's time is logged
    before any checkpoint of that step is written)."""
    times = [r["time_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "step" in r and "event" not in r]
    k = len(times) // 5
    return (times[-1] - times[k]) / (len(times) - 1 - k)


def validation_curve(tilt_dir: Path) -> list[dict]:
    """(step, seconds, validation domain FID) at every evaluation of an energy run."""
    lines = [json.loads(x) for x in (tilt_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{"step": r["step"], "seconds": r["time_s"], "val_fid": r["val_fid"]} for r in lines if "val_fid" in r]


def evaluate_samples(metrics: list[Metric]):
    """A `domain-MODEL` / `inception-MODEL` stage: `metrics` of OUT/samples_MODEL.npz against the test set; the
    first domain stage of a benchmark also measures the train-vs-test floor."""
    def fn(key: str, out: Path, n: int, source: DataSource, results: dict) -> dict:
        x = torch.from_numpy(np.load(out / f"samples_{key}.npz")["x"])
        floor = Metric.FID in metrics and not any(s.startswith("domain-") for s in results["stages"])
        report = evaluate_images(x, source, metrics, quiet=False, floor=floor)
        return {k: v for k, v in report.items() if k in ("model", "floor", "classifier_test_accuracy")}
    return fn


def figure(results: dict, key: str, metric: str) -> float | None:
    """A model's `fid` (domain stage) or `inception_fid` from the results, None before its stage ran."""
    stage = results["stages"].get(f"{'inception' if metric == 'inception_fid' else 'domain'}-{key}")
    return stage["model"][metric] if stage else None


def base_val_fid(tilt_cfg: TiltRunConfig, source: DataSource) -> float:
    """The base's own validation domain FID, on the energy run's validation images and sample count (step 0)."""
    _, val = source.train_val(tilt_cfg.val_size, tilt_cfg.seed)
    base = tiltkit.load(tilt_cfg.base, device="cpu").model
    return DomainFID(val, classifier_for(source), base.pixel_range, tilt_cfg.eval_n, tilt_cfg.seed)(base)
