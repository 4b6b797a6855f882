"""Torch datasets of windows: training windows drawn per step, validation tiles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geoseg.geometry.window import PixelWindow
from geoseg.training.augment import geometric, photometric
from geoseg.training.config import AugmentSpec
from geoseg.training.criterion import WEIGHT
from geoseg.training.data import TrainScene
from geoseg.training.sampling import ValTile, WindowSampler


def normalise(arrays: Mapping[str, np.ndarray], valid: np.ndarray,
              norm: Mapping[str, Mapping[str, list[float]]]) -> dict[str, np.ndarray]:  # fmt: skip
    """(x − mean) / std per band; invalid pixels (and NaN) become 0, the normalised mean."""
    out = {}
    for name, a in arrays.items():
        mean = np.asarray(norm[name]["mean"], np.float32)[:, None, None]
        std = np.asarray(norm[name]["std"], np.float32)[:, None, None]
        b = (a.astype(np.float32) - mean) / std
        b[:, ~valid] = 0.0
        out[name] = np.nan_to_num(b, nan=0.0, posinf=0.0, neginf=0.0)
    return out


class TrainWindows(Dataset):
    """Item j is window j % batch of step start + j // batch (for this rank)."""

    def __init__(self, scenes: Sequence[TrainScene], sampler: WindowSampler,
                 norm: Mapping[str, Mapping[str, list[float]]], augment: AugmentSpec,
                 window: int, batch: int, start: int, stop: int, rank: int = 0,
                 weights: Sequence[tuple[Any, Any]] | None = None):  # fmt: skip
        self.scenes, self.sampler, self.norm, self.augment = scenes, sampler, norm, augment
        self.window, self.batch, self.start, self.stop, self.rank = window, batch, start, stop, rank
        #: loss.balance: features: per scene (FeatureIndex, weight per feature) or (None, None)
        self.weights = weights

    def __len__(self) -> int:
        """Windows of this rank: one batch per step of ``start:stop``."""
        return max(self.stop - self.start, 0) * self.batch

    def __getitem__(self, j: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Normalised, augmented inputs and labels of window ``j``."""
        step = self.start + j // self.batch
        s, r0, c0, rng = self.sampler.draw(step, self.rank, j % self.batch)
        # windows larger than a scene are padded (inputs 0, labels ignored)
        win = PixelWindow.at(r0, c0, self.window, self.window)
        arrays, target, valid = self.scenes[s].read(win)
        arrays = normalise(arrays, valid, self.norm)
        arrays["__valid__"] = valid[None].astype(np.float32)
        weight = self._weight(s, win)
        if weight is not None:
            arrays[WEIGHT] = weight[None]
        arrays, target = geometric(arrays, target, self.augment, rng)
        valid = arrays.pop("__valid__")[0] > 0.5
        weight = arrays.pop(WEIGHT, None)
        arrays = photometric(arrays, valid, self.augment, rng)
        if weight is not None:  # travels with the inputs; TrainModule takes it out
            arrays[WEIGHT] = weight
        return ({k: torch.from_numpy(v) for k, v in arrays.items()},
                torch.from_numpy(target.astype(np.int64)))  # fmt: skip


    def _weight(self, s: int, win: PixelWindow) -> np.ndarray | None:
        """Per-pixel loss weights of the window (``loss.balance: features``), else None."""
        if self.weights is None:
            return None
        feats, w = self.weights[s]
        if feats is None:
            return np.ones(win.shape, np.float32)
        ids = feats.read_ids(win)
        return np.where(ids >= 0, w[np.maximum(ids, 0)], 1.0).astype(np.float32)


def read_val_tile(scenes: Sequence[TrainScene], tile: ValTile,
                  norm: Mapping[str, Mapping[str, list[float]]]
                  ) -> tuple[dict[str, torch.Tensor], np.ndarray, tuple[slice, slice]]:  # fmt: skip
    """Inputs of the tile's read rectangle, labels of its core, and the core's slices in it."""
    arrays, target, valid = scenes[tile.scene].read(tile.read)
    arrays = normalise(arrays, valid, norm)
    sl = tile.core.relative_to(tile.read).slices
    inputs = {k: torch.from_numpy(v)[None] for k, v in arrays.items()}
    return inputs, target[sl], sl
