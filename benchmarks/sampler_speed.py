"""Speed of tiltkit's Langevin sampler against a bare gradient loop and ebmkit's LangevinDynamics.

All four contenders run on the same noise-space energy U(ε) = ½‖ε‖² + E(G(ε)) (a TiltedModel), batch,
number of steps S and thread count, with every parameter frozen, so only ∇_ε U is ever computed:

  bare      S × {x.requires_grad_(True); e = U(x); g, = torch.autograd.grad(e.sum(), x)}: the floor;
  eager     tiltkit.langevin(tilted, start, S, η, generator)  (ULA);
  fused     tiltkit.langevin(tilted.energy_fn(True, CompileMode.FUSED), ...): (U, ∇U) from one
            compiled torch.func.grad_and_value graph;
  autograd  the same with CompileMode.AUTOGRAD: U compiled, ∇U from AOTAutograd's backward graph;
            compile + warm-up of both excluded from the step times, reported as "compile s" (cold:
            fresh Inductor cache);
  peer      ebm LangevinDynamics(step_size=η/2, noise_scale=√η, steps=S).sample(tilted, start): the
            same update ε ← ε − (η/2)∇U + √η·ω (checked per case: same seed → same chain).

Cases: "mlp", MLPVAE (2-D) + Fourier-feature MLPEnergy (toy sets); "conv", DCGAN-style decoder
(latent 100 → 1×28×28) + small conv energy (latent EBM on MNIST-sized images).
Protocol: after warm-up, R rounds; in each round every contender runs S steps once, in an order
rotating from round to round; per-step time = run time / S. Reported: median per-step times and
the median over rounds of the per-round ratios. Targets: eager/bare ≤ 1.10, compiled/peer ≤ 0.75,
where "compiled" is the compile mode a run of that case uses (RECIPE_MODE: fused for MLPs, autograd
for conv nets); both modes are reported.

    .venv/bin/python benchmarks/sampler_speed.py            # full run: results JSON + BENCHMARKS.md
    .venv/bin/python benchmarks/sampler_speed.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# "compile s" is a cold compile: a fresh Inductor cache (removed at exit), unless the caller chose one.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="tiltkit-bench-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
import torch  # noqa: E402
from ebm.samplers.langevin import LangevinDynamics  # noqa: E402
from torch import nn  # noqa: E402

from common import ROOT, cpu_model, write_block  # noqa: E402
from tiltkit import TiltedModel, langevin  # noqa: E402
from tiltkit.energies import MLPEnergy  # noqa: E402
from tiltkit.generators import MLPVAE  # noqa: E402
from tiltkit.samplers import CompileMode  # noqa: E402
from tiltkit.samplers import noise as nz  # noqa: E402

STEP_SIZE = 0.01  # η; speed does not depend on it
CASES = [("mlp", 256, 100), ("mlp", 1024, 40), ("conv", 64, 15)]  # (case, batch, rounds): ~4 min in all
RECIPE_MODE = {"mlp": CompileMode.FUSED, "conv": CompileMode.AUTOGRAD}  # the compile_mode a run of each uses


# Stand-ins until the image issue lands the package's conv nets: same shapes as a latent EBM on MNIST.
class ConvDecoder(nn.Module):
    """DCGAN-style G: ε (B, 100) → x (B, 1, 28, 28) in (0, 1); implements the base protocol TiltedModel uses."""

    def __init__(self, latent_dim: int = 100):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),  # 64×14×14
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid(),  # 1×28×28
        )

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return nz.randn((n, self.latent_dim), generator, self.net[0].weight)

    def decode(self, noise: torch.Tensor) -> torch.Tensor:
        return self.net(noise)

    def noise_energy(self, noise: torch.Tensor) -> torch.Tensor:
        return 0.5 * nz.sq_norm(noise)


class ConvEnergy(nn.Module):
    """E(x): three stride-2 3×3 convs (32-64-128) with SiLU, global sum pool, linear → (B,)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.SiLU())
        self.head = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).sum((2, 3))).squeeze(1)


def build(case: str) -> TiltedModel:
    torch.manual_seed(0)
    if case == "mlp":
        return TiltedModel(MLPVAE(data_dim=2, latent_dim=2, hidden=128, depth=3),
                           MLPEnergy(2, hidden=128, depth=3, fourier_features=64, fourier_scale=1.0))
    return TiltedModel(ConvDecoder(100), ConvEnergy())


def peer_sampler(steps: int) -> LangevinDynamics:
    """ebmkit's x ← x − ε∇E + σξ with ε = η/2, σ = √η: our ULA update."""
    return LangevinDynamics(step_size=STEP_SIZE / 2, noise_scale=math.sqrt(STEP_SIZE), steps=steps)


def contenders(tilted: TiltedModel, start: torch.Tensor, steps: int, gen: torch.Generator):
    """name → zero-argument callable running `steps` steps (called with the parameters frozen)."""
    fused, autograd = (tilted.energy_fn(True, mode) for mode in (CompileMode.FUSED, CompileMode.AUTOGRAD))
    peer = peer_sampler(steps)

    def bare():
        x = start.detach().clone()
        for _ in range(steps):
            x.requires_grad_(True)
            e = tilted(x)
            (g,) = torch.autograd.grad(e.sum(), x)
        return g

    return {
        "bare": bare,
        "eager": lambda: langevin(tilted, start, steps, STEP_SIZE, gen),
        "fused": lambda: langevin(fused, start, steps, STEP_SIZE, gen),
        "autograd": lambda: langevin(autograd, start, steps, STEP_SIZE, gen),
        "peer": lambda: peer.sample(tilted, start),
    }


def same_chain(tilted: TiltedModel, start: torch.Tensor, steps: int) -> float:
    """Max |ours − peer| after `steps` steps from the same global-RNG seed (ours with generator=None)."""
    torch.manual_seed(1)
    ours = langevin(tilted, start, steps, STEP_SIZE, None).noise
    torch.manual_seed(1)
    theirs = peer_sampler(steps).sample(tilted, start)
    return float((ours - theirs).abs().max())


def busy_jiffies() -> tuple[int, float]:
    """(machine-wide busy CPU jiffies, this process's CPU seconds): how busy others kept the CPU."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    t = os.times()
    return sum(fields) - fields[3] - fields[4], t.user + t.system  # minus idle and iowait


def run_case(case: str, batch: int, rounds: int, steps: int) -> dict:
    tilted = build(case)
    gen = torch.Generator().manual_seed(0)
    start = tilted.sample_noise(batch, gen)
    with tilted.frozen():
        runs = contenders(tilted, start, steps, gen)
        compile_s = {}
        for mode in CompileMode:
            t0 = time.perf_counter()
            langevin(tilted.energy_fn(True, mode), start, 2, STEP_SIZE, gen)  # compile + first call
            compile_s[mode.value] = time.perf_counter() - t0
        max_diff = same_chain(tilted, start, steps)
        for fn in runs.values():  # warm-up: caches, allocator, thread pool
            fn()
        names = list(runs)
        times = {n: [] for n in names}
        gc.disable()
        wall, (busy0, own0) = time.perf_counter(), busy_jiffies()
        for r in range(rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                t = time.perf_counter()
                runs[n]()
                times[n].append((time.perf_counter() - t) / steps)
        gc.enable()
        busy1, own1 = busy_jiffies()
        wall = time.perf_counter() - wall
    # CPU share used by *other* processes while timing (0 = quiet machine; 1 = every core busy elsewhere)
    others = max(0.0, ((busy1 - busy0) / os.sysconf("SC_CLK_TCK") - (own1 - own0)) / (wall * (os.cpu_count() or 1)))

    def ratio(a, b, iqr=False):
        per_round = [x / y for x, y in zip(times[a], times[b])]
        return statistics.quantiles(per_round, n=4)[::2] if iqr else statistics.median(per_round)

    mode = RECIPE_MODE[case].value
    times["compiled"] = times[mode]  # the recipe's mode is the one the target is checked on
    return {
        "case": case, "batch": batch, "steps": steps, "rounds": rounds, "compile_mode": mode,
        "ms_per_step": {n: 1e3 * statistics.median(v) for n, v in times.items()},
        "ratios": {"eager/bare": ratio("eager", "bare"), "compiled/peer": ratio("compiled", "peer"),
                   "fused/peer": ratio("fused", "peer"), "autograd/peer": ratio("autograd", "peer"),
                   "eager/peer": ratio("eager", "peer"), "compiled/bare": ratio("compiled", "bare"),
                   "peer/bare": ratio("peer", "bare")},
        "ratios_iqr": {k: ratio(*k.split("/"), True) for k in ("eager/bare", "fused/peer", "autograd/peer")},
        "compile_s": compile_s, "max_abs_diff_ours_vs_peer": max_diff, "other_processes_cpu_share": others,
    }


def table(results: list[dict]) -> str:
    rows = ["| case | batch | bare ms/step | ours eager | ours fused | ours autograd | peer ebmkit | eager/bare "
            "| fused/peer | autograd/peer | compile s (fused, autograd) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ms, q, c = r["ms_per_step"], r["ratios"], r["compile_s"]
        cell = {k: f"{q[k]:.2f} ({lo:.2f}–{hi:.2f})" for k, (lo, hi) in r["ratios_iqr"].items()}
        cell[r["compile_mode"] + "/peer"] = f"**{cell[r['compile_mode'] + '/peer']}**"
        rows.append(f"| {r['case']} | {r['batch']} | {ms['bare']:.3f} | {ms['eager']:.3f} | {ms['fused']:.3f} | "
                    f"{ms['autograd']:.3f} | {ms['peer']:.3f} | {cell['eager/bare']} | {cell['fused/peer']} | "
                    f"{cell['autograd/peer']} | {c['fused']:.1f}, {c['autograd']:.1f} |")
    return "\n".join(rows)


def verdict(results: list[dict], key: str, target: float) -> str:
    vals = ", ".join(f"{r['case']}/{r['batch']} {r['ratios'][key]:.2f}" for r in results)
    met = all(r["ratios"][key] <= target for r in results)
    return f"{key} ≤ {target:.2f}: {'met' if met else 'NOT met'} ({vals})"


CONV_NOTE = (
    "Conv case, tried on 2026-11-22 without reaching 0.75 (ratios to the peer): the fused mode (0.90–1.03; "
    "its profile shows the first transposed convolution on NCHW input, 10 ms against 6 ms in the autograd "
    "mode's graph, and layout conversions inside the fused ReLU kernels), Inductor freezing (fused 1.04, "
    "autograd 0.84), layout optimization off (fused 1.04, autograd 1.18), channels-last weights (fused 0.86), "
    "max-autotune and the C++ wrapper (no gain). In the autograd mode's profile the convolutions alone take "
    "about two thirds of the step, which bounds what fusing the rest can save.")

def suffix(threads: int) -> str:
    """File and section suffix of a thread count: none for the default 2 threads, `_1thread` for one, ..."""
    return "" if threads == 2 else f"_{threads}thread" + "s" * (threads > 1)


def write_markdown(results: list[dict], meta: dict) -> None:
    runs = ", ".join(f"{r['case']}/{r['batch']} {r['rounds']}" for r in results)
    busy = ", ".join(f"{r['case']}/{r['batch']} {r['other_processes_cpu_share']:.0%}" for r in results)
    section = (
        f"CPU: {meta['cpu']}, {meta['threads']} thread{'s' * (meta['threads'] > 1)} (`torch.set_num_threads`), "
        f"torch {meta['torch']}, "
        f"{meta['date']}. Time per Langevin step on the same U(ε) = ½‖ε‖² + E(G(ε)), same batch and "
        f"{results[0]['steps']} steps per run, parameters frozen in all of them; interleaved rounds ({runs}) in a "
        "rotating order; times are medians, ratios are medians of the per-round ratios (interquartile range of "
        "the per-round ratios in brackets). *bare* = forward + backward "
        "w.r.t. the input only; *ours eager* = `tiltkit.langevin(tilted, ...)` (ULA); *ours fused* / *ours "
        "autograd* = `tilted.energy_fn(True, CompileMode.FUSED / AUTOGRAD)`: U and ∇U from one compiled "
        "`torch.func.grad_and_value` graph / U compiled with AOTAutograd's backward graph; in bold the mode a run "
        "of that network uses (`compile_mode`: fused for MLPs, autograd for conv nets), which the target is "
        "checked on (compile + warm-up in the last column, not in the step time; fresh "
        "Inductor cache, so the first case also pays Inductor's one-time start-up and later cases reuse its "
        "kernels); "
        "*peer* = ebmkit 0.16.0 `LangevinDynamics(step_size=η/2, noise_scale=√η)`, the same update. mlp = MLPVAE "
        "(2-D) + MLPEnergy (128×3, 64 Fourier features); conv = DCGAN-style decoder (100 → 1×28×28) + 3-layer conv "
        f"energy (stand-ins in the script). CPU share taken by other processes while timing: {busy}.\n\n"
        f"{table(results)}\n\n"
        f"- {verdict(results, 'eager/bare', 1.10)}\n- {verdict(results, 'compiled/peer', 0.75)}\n\n"
        f"{CONV_NOTE}\n\n"
        f"Reproduce: `.venv/bin/python benchmarks/sampler_speed.py --threads {meta['threads']}` (writes "
        f"`benchmarks/results/sampler_speed{suffix(meta['threads'])}.json` and this section; `--quick` for a smoke "
        "run that writes nothing).\n")
    key = "sampler-speed" + suffix(meta["threads"]).replace("_", "-")
    write_block(key, section, f"Sampler speed, {meta['threads']} thread" + "s" * (meta["threads"] > 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, no files written (smoke run)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(c, b, 3) for c, b, _ in CASES if b != 1024] if args.quick else CASES
    if args.rounds:
        cases = [(c, b, args.rounds) for c, b, _ in cases]
    meta = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat(), "step_size": STEP_SIZE}
    print(f"CPU {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}", flush=True)
    results = []
    for case, batch, rounds in cases:
        t0 = time.perf_counter()
        r = run_case(case, batch, rounds, args.steps)
        results.append(r)
        ms, q = r["ms_per_step"], r["ratios"]
        print(f"[{case} B={batch}] bare {ms['bare']:.3f} eager {ms['eager']:.3f} fused {ms['fused']:.3f} "
              f"autograd {ms['autograd']:.3f} peer {ms['peer']:.3f} ms/step | eager/bare {q['eager/bare']:.3f} "
              f"fused/peer {q['fused/peer']:.3f} autograd/peer {q['autograd/peer']:.3f} | max|ours-peer| "
              f"{r['max_abs_diff_ours_vs_peer']:.1e} | others' CPU {r['other_processes_cpu_share']:.0%} | "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    print(table(results))
    print(verdict(results, "eager/bare", 1.10))
    print(verdict(results, "compiled/peer", 0.75))
    if args.quick:
        print("--quick: nothing written")
        return
    out = ROOT / "benchmarks" / "results" / f"sampler_speed{suffix(args.threads)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**meta, "cases": results}, indent=2) + "\n")
    tmp.replace(out)
    write_markdown(results, meta)
    print(f"wrote {out.relative_to(ROOT)} and the 'Sampler speed' section of BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
