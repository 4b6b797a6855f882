"""Where a chunk's weighted sums add up: host memory, or the GPU that runs its tiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoseg.inference.engine import Engine

#: the blend window of a tile at (row, col) (``ChunkJob.window``)
Window = Callable[[int, int], np.ndarray]


def open_sums(window: Window, engine: Engine, shape: tuple[int, int]) -> HostSums | DeviceSums:
    """The sums of a chunk whose region has ``shape``: on the GPU when the engine runs there
    and has room for them (a quarter of its free memory at most: batches need the rest)."""
    k = engine.num_classes
    gpu = getattr(engine, "gpu", None)
    if gpu is not None and (k + 1) * shape[0] * shape[1] * 4 * 4 <= torch.cuda.mem_get_info(engine.device)[0]:
        return DeviceSums(window, engine, shape)
    return HostSums(window, k, shape)


class HostSums:
    """Σ w·p (one plane per class) and Σ w (last plane) in host memory."""

    def __init__(self, window: Window, k: int, shape: tuple[int, int]) -> None:
        self.window, self.k = window, k
        self.acc = np.zeros((k + 1, *shape), np.float32)

    def add(self, t: tuple[int, int], box: tuple[slice, slice], p: np.ndarray) -> None:
        w = self.window(*t)
        self.acc[(slice(0, self.k), *box)] += p * w
        self.acc[(self.k, *box)] += w

    def result(self) -> np.ndarray:
        return self.acc


class DeviceSums:
    """Σ w·p and Σ w on the GPU: the probabilities never leave it, the thread does not wait
    for each batch (it cuts and uploads the next meanwhile), and the chunk comes back in one
    copy through pinned memory. Work is ordered on the engine's compute stream."""

    @torch.inference_mode()
    def __init__(self, window: Window, engine: Engine, shape: tuple[int, int]) -> None:
        assert engine.gpu is not None
        self.window, self.k, self.device, self.gpu = window, engine.num_classes, engine.device, engine.gpu
        self.windows: dict[int, torch.Tensor] = {}  # by the host window's identity: a few kinds
        with torch.cuda.stream(self.gpu.compute_stream):
            self.acc = torch.zeros((self.k + 1, *shape), dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def add(self, t: tuple[int, int], box: tuple[slice, slice], p: Any) -> None:
        """Add tile ``t``'s probabilities ``p`` (on the GPU, or a host array a killed run spilled)."""
        w_host = self.window(*t)
        with torch.cuda.stream(self.gpu.compute_stream):
            w = self.windows.get(id(w_host))
            if w is None:
                w = self.windows[id(w_host)] = torch.from_numpy(w_host).to(self.device)
            if isinstance(p, np.ndarray):
                p = torch.from_numpy(p).to(self.device)
            self.acc[(slice(0, self.k), *box)].addcmul_(p, w)
            self.acc[(self.k, *box)] += w

    @torch.inference_mode()
    def result(self) -> np.ndarray:
        return self.gpu.download(self.acc).result()
