"""What every trainer shares: the step loop (progress bar, metrics log, checkpoints, signals), the run
state it saves and restores, and the divergence policy.

A trainer builds its modules, optimizer and generators, puts them in a `RunState`, and hands
`run_steps` a `step_fn(step) -> metrics`. Around each step the loop
- stops after the step on SIGINT/SIGTERM, with a checkpoint of that step (a second signal stops at once);
- on a DivergenceError (non-finite or exploding values, `RunState.check`) applies the run's policy:
  stop, or roll back to the last good checkpoint (`RunState.recover`);
- logs the metrics and saves every `checkpoint_every` steps (rank 0 writes, all ranks take part).
A SIGKILL at any moment leaves the newest complete checkpoint to resume from: a new run saves step 0
before its first step, and checkpoints are renamed into place whole (checkpoint.py).

metrics.jsonl lines: one per step ({"step", metrics…, "time_s"}), and events, told apart by "event":
    {"step": s, "event": "diverged", "reason": …}                  the run stopped at step s
    {"step": c, "event": "rollback", "diverged_at": s, "reason": …, "rollbacks": k, "lr_scale": …,
     "step_size_scale": …}                                          reloaded checkpoint c, goes on from c + 1
    {"step": s, "event": "interrupted", "signal": "SIGTERM"}        stopped by a signal, checkpoint s saved
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import DivergenceAction, save_yaml
from ..errors import DivergenceError, Interrupted, UserError
from ..precision import MixedPrecision
from .board import Board, open_board
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .distributed import Distributed
from .lock import release, releasing
from .rundir import MetricsLog

SHOWN = ("loss", "e_pos", "e_neg", "gap", "accept", "semantic_gap", "texture_gap")  # live figures on the progress bar
ROLLBACK_SEED_STRIDE = 7919  # rollback k reseeds the generators with seed + k·stride


@dataclass
class RunState:
    """Everything a trainer saves and restores.

    `shared_extra()` / `local_extra()`: the trainer's own state, the same on every rank (early stopping) or
    this rank's (replay buffer); `restore(shared, local)` puts them back. `samplers`: names of the config's
    training-chain SamplerConfigs; the trainer runs `chains[name]`, which is the config's with its step size
    times `step_scale` (rollbacks shrink it; the config itself is left as given). The scheduler, if any, is
    a LambdaLR. `preview()`: an image run's samples as uint8 images for the TensorBoard log (board.image_preview).
    """

    out: Path
    cfg: object
    kind: str
    modules: dict[str, nn.Module]
    opt: torch.optim.Optimizer
    data_gen: torch.Generator  # the same stream on every rank: batches
    gen: torch.Generator  # this rank's: chains, buffers, a VAE's draws
    amp: MixedPrecision
    dist: Distributed
    data_shape: tuple[int, ...]
    sched: torch.optim.lr_scheduler.LambdaLR | None = None
    shared_extra: Callable[[], dict] = dict
    local_extra: Callable[[], dict] = dict
    restore: Callable[[dict, dict], None] = lambda shared, local: None
    samplers: tuple[str, ...] = ()
    rollbacks: int = 0
    lr_scale: float = 1.0
    step_scale: float = 1.0
    preview: Callable[[], torch.Tensor] | None = None
    log: MetricsLog = field(init=False)
    board: Board | None = field(init=False)
    chains: dict = field(init=False)

    def __post_init__(self):
        self.set_step_scale(self.step_scale)

    def begin(self, resume: bool) -> int:
        """The first step to run: after the latest checkpoint (resume), or 1 for a new run, which saves its
        config and a step-0 checkpoint (a run killed before its first checkpoint resumes from there).
        The TensorBoard log, if the config asks for one, opens here (its events from the first step on are purged).
        On an error (a checkpoint it cannot load) it lets go of the run directory's lock (prepare_run_dir took it)."""
        self.log = MetricsLog(self.out, enabled=self.dist.main)
        try:
            resumed = resume and bool(list_checkpoints(self.out))
            step = self.load(latest_checkpoint(self.out))["step"] if resumed else 0
            if self.dist.main:  # a resumed run's too: extended steps or another device, under the run's lock
                save_yaml(self.cfg, self.out / "config.yaml", self.kind)
            self.log.trim(step)
            if not resumed:
                self.save(0)
            self.board = open_board(self.cfg, self.out, step + 1, self.dist.main)
            return step + 1
        except BaseException:
            release(self.out)
            raise

    def state(self) -> dict:
        """The checkpoint state; "ranks" holds each rank's generator, extra state and a sum of its weights
        (DDP keeps the weights identical on every rank: `save` checks it)."""
        weights = sum(float(p.detach().double().sum()) for m in self.modules.values() for p in m.parameters())
        local = {"rng": self.gen.get_state(), "weights_sum": weights, **self.local_extra()}
        return {"data_shape": list(self.data_shape), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched else {}, "scaler": self.amp.state_dict(),
                "rng": self.data_gen.get_state(), "ranks": self.dist.gather(local),
                "divergence": {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale,
                               "step_scale": self.step_scale}, **self.shared_extra()}

    def save(self, step: int, name: str | None = None) -> None:
        """Checkpoint `step` (every rank calls it: each sends its own part to rank 0, which writes)."""
        state = self.state()
        if self.dist.main:
            sums = [r["weights_sum"] for r in state["ranks"]]
            if len(set(sums)) > 1:
                raise RuntimeError(f"step {step}: the ranks' weights differ (sums {sums}); they should be identical "
                                   f"under DDP: a bug, please report it")
            save_checkpoint(self.out, step, self.modules, state, name=name)
        self.dist.barrier()

    def load(self, path: Path) -> dict:
        """Load checkpoint `path` into every part of the run; returns its state."""
        state = load_checkpoint(path, self.modules, map_location=self.gen.device)
        if "ranks" not in state:
            state = from_format_1(state)
        if len(state["ranks"]) != self.dist.world:
            raise UserError(f"checkpoint {path} was written by {len(state['ranks'])} processes, this run has "
                            f"{self.dist.world}: resume it with torchrun --nproc-per-node {len(state['ranks'])} "
                            f"(times the nodes)")
        local = state["ranks"][self.dist.rank]
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(state["scheduler"])
        self.amp.load_state_dict(state["scaler"])
        self.data_gen.set_state(state["rng"])
        self.gen.set_state(local["rng"])
        div = state["divergence"]
        self.rollbacks, self.lr_scale = div["rollbacks"], div["lr_scale"]
        self.set_step_scale(div["step_scale"])
        self.restore(state, local)
        return state

    def check(self, step: int, limit: float | None = None, **values: float) -> None:
        """Raise DivergenceError on every rank when a value on some rank is not finite, or (`limit`) exceeds
        it in absolute value. Under fp16 a non-finite gradient norm is the scaler's business (the step was
        skipped), so values named *gradient are not checked there."""
        if self.amp.scaled:
            values = {k: v for k, v in values.items() if not k.endswith("gradient")}
        reason = next((f"non-finite {k}" for k, v in values.items() if not math.isfinite(v)), None)
        if reason is None and limit is not None:
            reason = next((f"|{k}| = {abs(v):.3g} above max_energy {limit:g}" for k, v in values.items()
                           if abs(v) > limit), None)
        if self.dist.any(reason is not None, self.gen.device):
            raise DivergenceError(step, reason or "values on another rank")

    def set_step_scale(self, scale: float) -> None:
        self.step_scale = scale
        self.chains = {name: dataclasses.replace(s, step_size=s.step_size * scale)
                       for name, s in ((name, getattr(self.cfg, name)) for name in self.samplers)}

    def recover(self, exc: DivergenceError) -> int:
        """Apply the run's divergence policy; returns the step to go on from, or raises `exc` (stop)."""
        cfg = self.cfg
        if cfg.on_divergence is DivergenceAction.STOP or self.rollbacks >= cfg.max_rollbacks:
            self.log.write({"step": exc.step, "event": "diverged", "reason": exc.what, "rollbacks": self.rollbacks})
            raise exc
        rollbacks, lr_scale = self.rollbacks + 1, self.lr_scale * cfg.rollback_factor
        step_scale = self.step_scale * cfg.rollback_factor
        state = self.load(latest_checkpoint(self.out))
        factor = lr_scale / self.lr_scale  # the checkpoint's lr already carries its own scale
        for group in self.opt.param_groups:
            group["lr"] *= factor
        if self.sched is not None:
            self.sched.base_lrs = [lr * factor for lr in self.sched.base_lrs]
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self.set_step_scale(step_scale)
        for g, fresh in zip((self.data_gen, self.gen),
                            self.dist.generators(cfg.seed + rollbacks * ROLLBACK_SEED_STRIDE, self.gen.device)):
            g.set_state(fresh.get_state())  # in place: the replay buffer holds the same generator
        self.log.trim(state["step"])
        if self.board is not None:
            self.board.rewind(state["step"] + 1)
        self.log.write({"step": state["step"], "event": "rollback", "diverged_at": exc.step, "reason": exc.what,
                        "rollbacks": rollbacks, "lr_scale": lr_scale, "step_size_scale": step_scale})
        return state["step"] + 1


def from_format_1(state: dict) -> dict:
    """A format-1 state (one process; "rng": [data, chains], "buffer" at the top) in today's layout."""
    data_rng, chain_rng = state["rng"]
    local = {"rng": chain_rng, **({"buffer": state.pop("buffer")} if "buffer" in state else {})}
    return {**state, "rng": data_rng, "ranks": [local], "scaler": {}, "scheduler": state.get("scheduler", {}),
            "divergence": {"rollbacks": 0, "lr_scale": 1.0, "step_scale": 1.0}}


@contextlib.contextmanager
def stop_on_signals():
    """Yields a dict whose "signal" becomes the name of a SIGINT/SIGTERM once one arrives (a second one
    raises KeyboardInterrupt at once). Outside the main thread, signals are left alone."""
    caught: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught["signal"] is not None:
            raise KeyboardInterrupt
        caught["signal"] = signal.Signals(signum).name
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_steps(run: RunState, first: int, last: int, step_fn: Callable[[int], dict], checkpoint_every: int,
              quiet: bool = False, desc: str = "train", should_stop: Callable[[], bool] = lambda: False) -> None:
    """Call step_fn(step) for step = first..last, logging its metrics and checkpointing every `checkpoint_every`.

    A DivergenceError from step_fn goes to `run.recover` (the policy) before anything of that step is saved.
    `should_stop()` true after a step (early stopping) ends the loop there, with a checkpoint of that step;
    a signal does the same and raises Interrupted. Each log line gets `time_s`, the wall seconds since
    this call started. A TensorBoard log (`run.board`) gets the metrics, and an image run's sample grid
    (`run.preview`) every `log_images_every` steps (0: with each checkpoint) and at the last step.
    However it ends, the run directory's lock is released (rundir.prepare_run_dir took it) and the
    TensorBoard log closed.
    """
    bar = tqdm(total=last, desc=desc, disable=quiet or not run.dist.main, initial=first - 1, leave=False)
    start, step, device = time.perf_counter(), first, run.gen.device
    images_every = run.cfg.log_images_every or checkpoint_every
    board = contextlib.closing(run.board) if run.board is not None else contextlib.nullcontext()
    with releasing(run.out), board, stop_on_signals() as caught:
        while step <= last:
            try:
                metrics = run.dist.mean(step_fn(step))
            except DivergenceError as exc:
                step = run.recover(exc)
                bar.n = step - 1
                bar.write(f"{desc}: diverged at step {exc.step} ({exc.what}); rolled back to step {step - 1}")
                continue
            run.log.write({"step": step, **metrics, "time_s": round(time.perf_counter() - start, 3)})
            if run.board is not None:
                run.board.scalars(step, metrics)
                if run.preview is not None and (step % images_every == 0 or step == last):
                    run.board.images(step, run.preview())
            bar.update()
            bar.set_postfix({k: f"{metrics[k]:.3g}" for k in SHOWN if k in metrics}, refresh=False)
            signalled = run.dist.any(caught["signal"] is not None, device)
            stop = should_stop() or signalled
            if step % checkpoint_every == 0 or step == last or stop:
                run.save(step)
            if signalled:
                bar.close()
                run.log.write({"step": step, "event": "interrupted", "signal": caught["signal"] or "on another rank"})
                raise Interrupted(step, run.out)
            if stop:
                bar.write(f"{desc}: stopped early at step {step}")
                break
            step += 1
    bar.close()


class EarlyStopping:
    """Tracks a validation score (lower is better); stops after `patience` evaluations without a new best
    (patience 0: never stops). `update` returns True when the score is a new best."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_step, self.bad = patience, math.inf, 0, 0

    def update(self, step: int, score: float) -> bool:
        if score < self.best:
            self.best, self.best_step, self.bad = score, step, 0
            return True
        self.bad += 1
        return False

    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.bad = state["best"], state["best_step"], state["bad"]
