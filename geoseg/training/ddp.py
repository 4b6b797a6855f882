"""DistributedDataParallel wiring for runs started by torchrun (gloo on CPU, NCCL on CUDA).

``torchrun --nproc_per_node N -m geoseg.cli.main train PIPELINE.yaml`` starts N processes; each draws
its own windows (the sampler is keyed by rank), gradients are averaged by DDP, validation tiles
are shared out and the confusion matrices summed; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from geoseg.inference.engine import resolve_device as checked_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and rank on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True for rank 0, the process that writes."""
        return self.rank == 0


def local_rank() -> int:
    """This process's rank on its machine (torchrun sets LOCAL_RANK; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The training device: ``auto`` is CUDA when available, else the CPU; the name is then
    checked as for prediction (:func:`geoseg.inference.engine.resolve_device`); a bare
    ``cuda`` under DDP is the process's local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = checked_device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def setup(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank())


def sum_array(values: np.ndarray, d: Dist, device: torch.device) -> np.ndarray:
    """Element-wise sum over processes (confusion matrices, loss sums)."""
    if not d.enabled:
        return values
    t = torch.as_tensor(values, dtype=torch.float64)
    if device.type == "cuda":
        t = t.to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy().astype(values.dtype)


def broadcast_flag(flag: bool, d: Dist, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop on the time limit) for every process."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    """Wait for every process (no-op in a single process)."""
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    """Leave the process group, if this process joined one."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
