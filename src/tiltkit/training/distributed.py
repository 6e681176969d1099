"""Data-parallel training across processes: PyTorch DistributedDataParallel, launched by torchrun.

    torchrun --standalone --nproc-per-node 2 -m tiltkit train tilt --base RUN --out RUN2

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; `launch` joins the process
group (NCCL on CUDA, gloo on CPU), and `devices.resolve_device` maps `auto`/`cuda` to the process's own
GPU, cuda:LOCAL_RANK. Without torchrun every call here is the single-process identity, so one code
path serves both.

The conventions every trainer follows:
- `batch_size` is per process; a step sees batch_size × world examples. All ranks share one data
  generator (same seed, same draws): `draw_batch` draws the global batch and keeps this rank's slice,
  so N processes see exactly the examples (and flips) one process sees on the N-fold batch.
- Sampler noise (chains, replay buffer, VAE draws) comes from a per-rank generator seeded
  `rank_seed(seed)`; each rank keeps its own replay buffer. Rank 0's seed is the single-process seed.
- Gradients are averaged by DDP (`wrap`), so the weights stay identical on every rank.
- Only rank 0 writes files and shows a progress bar. Logged metrics are averaged over the ranks (`mean`);
  per-rank state (generator, buffer) reaches rank 0's checkpoint by `gather`.
- Decisions that end or redirect the loop (divergence, a signal) are agreed by `any`, so no rank
  waits on a collective the others skipped.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..devices import resolve_device

RANK_SEED_STRIDE = 1_000_003  # rank r's sampler seed is seed + r·stride: streams far apart, rank 0 unchanged


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: rank r of `world` processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def rank_seed(self, seed: int) -> int:
        return seed + self.rank * RANK_SEED_STRIDE

    def generators(self, seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """(data generator, seeded `seed` on every rank; this rank's sampler generator on `device`, seeded
        rank_seed(seed + 1)): the two random streams of a run."""
        return (torch.Generator().manual_seed(seed),
                torch.Generator(device).manual_seed(self.rank_seed(seed + 1)))

    def wrap(self, model: nn.Module, method: str, device: torch.device) -> Callable:
        """`model.<method>`, through DDP when distributed: gradients of what it computes are averaged
        over the ranks during backward. Call it once per optimizer step."""
        if not self.enabled:
            return getattr(model, method)
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(Objective(model, method), device_ids=ids)

    def draw_batch(self, x: Tensor, batch_size: int, generator: torch.Generator, hflip: bool = False) -> Tensor:
        """This rank's batch_size rows of a global batch drawn from x with replacement (and flipped along
        the width with probability ½ each, `hflip`) by the shared generator."""
        n = batch_size * self.world
        idx = torch.randint(len(x), (n,), generator=generator, device=generator.device)
        flip = torch.rand(n, generator=generator, device=generator.device) < 0.5 if hflip else None
        mine = slice(self.rank * batch_size, (self.rank + 1) * batch_size)
        out = x[idx[mine].to(x.device)]
        if flip is not None:
            f = flip[mine].to(x.device).view(-1, *([1] * (x.dim() - 1)))
            out = torch.where(f, out.flip(-1), out)
        return out

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on some rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks that report it: with equal shards, a batch mean becomes the
        mean over the global batch, the figure one process logs on the N-fold batch."""
        if not self.enabled:
            return metrics
        every: list = [None] * self.world
        dist.all_gather_object(every, metrics)
        keys = dict.fromkeys(k for m in every for k in m)
        return {k: sum(m[k] for m in every if k in m) / sum(k in m for m in every) for k in keys}

    def gather(self, obj) -> list | None:
        """Rank 0 gets [obj of rank 0, …, obj of rank world−1]; other ranks get None. Tensors travel on the CPU."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(_to_cpu(obj), out, dst=0)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class Objective(nn.Module):
    """`model.<method>` as a module's forward: DDP averages the gradients only of what runs through its
    forward, and a trainer's loss is a method (loss, contrastive_losses), not the model's forward."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args, **kwargs):
        return getattr(self.model, self.method)(*args, **kwargs)


def _to_cpu(obj):
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


@contextlib.contextmanager
def launch(device_name: str):
    """This process's Distributed; joins the torchrun job if there is one (NCCL when `device_name` resolves
    to a GPU, gloo otherwise) and leaves it on exit."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        yield Distributed()
        return
    device = resolve_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size())
        dist.barrier()  # no rank tears its connections down while another still talks
    finally:
        gc.collect()  # DDP wrappers sit in reference cycles: freed now, not by a dying interpreter (SIGABRT)
        dist.destroy_process_group()
