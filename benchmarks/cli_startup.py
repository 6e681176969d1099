"""How fast the command line answers: `tiltkit --help` and `tiltkit train tilt --help` (the parser alone, no
torch), against `python -c "import torch"` and a command that loads the package (`tiltkit plot` of a
folder that is not a run), each a fresh process, median of --repeats, all measured in the same run.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 7]      # ~1 min on 2 cores

Target: `tiltkit --help` under 1 s. Writes benchmarks/results/cli_startup.json and the BENCHMARKS.md block.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT, cpu_model, git_commit, write_block

TARGET_S = 1.0


def wall(argv: list[str], repeats: int) -> float:
    """Median wall seconds of `argv` run to its end in a fresh process (one warm-up run first)."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    tiltkit = [sys.executable, "-m", "tiltkit"]
    with tempfile.TemporaryDirectory() as empty:
        cases = {"tiltkit --help": [*tiltkit, "--help"],
                 "tiltkit train tilt --help": [*tiltkit, "train", "tilt", "--help"],
                 "python -c 'import torch'": [sys.executable, "-c", "import torch"],
                 "tiltkit plot NOT_A_RUN (loads torch and the package)": [*tiltkit, "plot", empty]}
        seconds = {name: round(wall(argv, args.repeats), 3) for name, argv in cases.items()}
    help_s = seconds["tiltkit --help"]
    result = {"machine": cpu_model(), "commit": git_commit(), "repeats": args.repeats, "seconds": seconds,
              "target_s": TARGET_S, "met": help_s < TARGET_S}
    path = ROOT / "benchmarks" / "results" / "cli_startup.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    rows = "\n".join(f"| {name} | {s:.3f} |" for name, s in seconds.items())
    write_block("cli-startup", f"Machine: {result['machine']}, commit {result['commit']}; median of {args.repeats} "
                f"fresh processes.\n\n| command | wall s |\n|---|---|\n{rows}\n\n`tiltkit --help` in {help_s:.3f} s: "
                f"target under {TARGET_S:g} s {'met' if result['met'] else 'NOT met'}.",
                "Command-line startup (`benchmarks/cli_startup.py`)")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
