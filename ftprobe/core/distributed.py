"""torch.distributed support: a run launched by ``torchrun`` streams a disjoint shard per rank and merges every
metric's state through its declared reduction; rank 0 writes the results. No home-made cluster code.

Merging: a state whose reduction is ``"sum"`` on plain tensors is all-reduced; any other state (top-k buffers,
moment dictionaries merged with Chan's update, kept features) is all-gathered as an object and folded in rank order
with the declared reduction, which re-takes top-k sets on global indices. The result equals the single-process one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .checkpoint import RunPosition
from .metric import Metric, iter_state_tensors, resolve_reduce, state_to

__all__ = ["DistInfo", "init_from_env", "merge_metrics", "reduce_stats"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Start torch.distributed when launched with ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA).

    Returns the rank information and the device this rank should use (``cuda:LOCAL_RANK`` on GPUs).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def _plain_sum(metric: Metric, name: str) -> bool:
    return metric.reduction(name) == "sum" and isinstance(getattr(metric, name), torch.Tensor)


def merge_metrics(metrics: Sequence[Metric], info: DistInfo) -> None:
    """Merge every metric's state across ranks in place; afterwards every rank holds the merged state."""
    import torch.distributed as dist

    if not info.active:
        return
    for m in metrics:
        for name in m.state_names:
            if _plain_sum(m, name):
                t = getattr(m, name)
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
    objects: list[Any] = [None] * info.world
    payload = [{n: state_to(getattr(m, n), "cpu") for n in m.state_names if not _plain_sum(m, n)} for m in metrics]
    dist.all_gather_object(objects, payload)
    for i, m in enumerate(metrics):
        names = [n for n in m.state_names if not _plain_sum(m, n)]
        if not names:
            continue
        device = _device_of(m)
        merged = {n: state_to(objects[0][i][n], device) for n in names}
        for r in range(1, info.world):
            for n in names:
                merged[n] = resolve_reduce(m.reduction(n))(merged[n], state_to(objects[r][i][n], device))
        for n in names:
            setattr(m, n, merged[n])


def reduce_stats(stats: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """Sum the sample and batch counts of all ranks; any rank interrupted marks the run interrupted."""
    import torch.distributed as dist

    if not info.active:
        return stats
    gathered: list[Any] = [None] * info.world
    dist.all_gather_object(gathered, stats)
    out = dict(stats)
    merged = RunPosition.merged([RunPosition.from_dict(g) for g in gathered])
    out["samples"], out["batches"] = merged.samples, merged.batches
    out["interrupted"] = any(g["interrupted"] for g in gathered)
    out["duration_s"] = max(g.get("duration_s", 0.0) for g in gathered)
    out["world_size"] = info.world
    return out


def gather_list(items: list[Any], info: DistInfo) -> list[Any]:
    """Concatenate a per-rank list (skipped files, warnings) in rank order."""
    import torch.distributed as dist

    if not info.active:
        return items
    gathered: list[Any] = [None] * info.world
    dist.all_gather_object(gathered, items)
    out: list[Any] = []
    for g in gathered:
        out.extend(x for x in g if x not in out)
    return out


def _device_of(m: Metric) -> torch.device:
    for t in iter_state_tensors(m.state_dict()):
        return t.device
    return torch.device("cpu")
