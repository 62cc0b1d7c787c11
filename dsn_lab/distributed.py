"""DistributedDataParallel helpers of the training loop: process group, gathers, means over ranks.

Under ``torchrun --nproc-per-node N`` the config's batch sizes are the *global* batch: each rank takes a
contiguous slice of it (:func:`slice_batch`), the memory bank is updated with features gathered from all
ranks (so every rank holds the same bank), SupCon is computed on the gathered codes of the whole batch
(:func:`step_hooks`), and logged values are averaged over ranks (:func:`mean_over_ranks`). On one process
(``WORLD_SIZE`` unset or 1) every helper is the identity, so the loop reads the same either way.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dsn_lab.config import DSNConfig
from dsn_lab.step import StepHooks


@dataclass
class Dist:
    """This process's place in the group; ``owns_group``: :func:`init_distributed` created the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def check_config(cfg: DSNConfig, d: Dist) -> None:
    """Raise on what DDP cannot do with ``cfg``: the SupCon projection head, a global batch that the
    processes cannot share evenly."""
    if not d.enabled:
        return
    if cfg.contrastive_dim is not None:
        raise ValueError(
            "contrastive_dim (the SupCon projection head) is not supported under DDP yet: the head runs "
            "outside the wrapped forward. Fix: contrastive_dim=None (released), or train on one process."
        )
    if cfg.sketches_per_batch % d.world or cfg.photos_per_batch % d.world:
        raise ValueError(
            f"DDP with {d.world} processes: sketches_per_batch ({cfg.sketches_per_batch}) and "
            f"photos_per_batch ({cfg.photos_per_batch}) are the global batch and must divide evenly. "
            "Fix: --set sketches_per_batch=... photos_per_batch=... or another process count."
        )


def init_distributed(device: str | torch.device | None) -> Dist:
    """Join (or create: NCCL on CUDA, else gloo) the process group that torchrun describes in the env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def close_distributed(d: Dist) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if d.owns_group:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def gather(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenate equal-sized tensors from all ranks in rank order (no gradient)."""
    if not d.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_keep_local(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """All ranks' rows in rank order, this rank's rows still attached to the graph."""
    if not d.enabled:
        return x
    parts = list(gather(x.detach(), d).chunk(d.world))
    parts[d.rank] = x
    return torch.cat(parts)


def mean_over_ranks(values: dict[str, float], d: Dist, device: torch.device) -> dict[str, float]:
    """Each value averaged over the ranks (for logging)."""
    if not d.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist())}


def any_over_ranks(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on one (a NaN, the time budget): all ranks stop together."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_float(value: float, d: Dist, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (the validation score, computed on rank 0 only)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def barrier(d: Dist) -> None:
    """Wait for every rank (identity on one process)."""
    if d.enabled:
        dist.barrier()


def slice_batch(batch: dict[str, Any], d: Dist) -> dict[str, Any]:
    """This rank's contiguous share of a global paired batch."""
    if not d.enabled:
        return batch

    def part(t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0] // d.world
        return t[d.rank * n : (d.rank + 1) * n]

    return {k: [part(v) for v in val] if isinstance(val, list) else part(val) for k, val in batch.items()}


def step_hooks(d: Dist, memory: nn.Module | None) -> StepHooks:
    """How DDP joins :func:`dsn_lab.step.dsn_step` (the identity hooks on one process)."""
    if not d.enabled:
        return StepHooks()

    def memory_weight(loss: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
        # a mean over this rank's photos whose class is in the bank; reweight so that the average over ranks
        # is the mean over all such photos of the global batch
        local = (memory.fill.index_select(0, lp) > 0).sum().to(loss.dtype)
        everywhere = local.detach().clone()
        dist.all_reduce(everywhere)
        return loss * local * d.world / everywhere.clamp(min=1.0)

    return StepHooks(
        gather=lambda t: gather(t, d),
        gather_keep_local=lambda t: gather_keep_local(t, d),
        memory_weight=memory_weight,
    )


def wrap_ddp(model: nn.Module, d: Dist, device: torch.device, find_unused: bool) -> nn.Module:
    """``model`` in DistributedDataParallel under DDP, else ``model`` itself."""
    if not d.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )
