"""Window sampling from the scans: training candidates (random or class-balanced) and the
validation tiles. Nothing here reads pixels; windows are read later, one by one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import SamplingSpec
from geoseg.training.data import Scan
from geoseg.training.split import SceneSplit


@dataclass
class Candidates:
    """Training window positions (on the cell grid) and their labelled pixels per class."""

    scene: np.ndarray  # (n,) scene index
    r0: np.ndarray
    c0: np.ndarray
    counts: np.ndarray  # (n, K)
    window: int
    cell: int

    def __len__(self) -> int:
        return len(self.scene)

    def rect(self, i: int) -> PixelWindow:
        """The window of candidate ``i`` (before jitter)."""
        return PixelWindow.at(int(self.r0[i]), int(self.c0[i]), self.window, self.window)


def _positions(size: int, window: int, cell: int) -> np.ndarray:
    if size <= window:
        return np.array([0])
    return np.arange(0, size - window + 1, cell)


def _window_counts(scan: Scan, rows: np.ndarray, cols: np.ndarray, window: int) -> np.ndarray:
    """Labelled pixels per class of every window (rows × cols grid) from cell integrals."""
    c = scan.cell
    integ = np.zeros((scan.counts.shape[0] + 1, scan.counts.shape[1] + 1, scan.counts.shape[2]))
    integ[1:, 1:] = scan.counts.cumsum(0).cumsum(1)
    nr, nc = scan.counts.shape[:2]
    a0 = rows // c
    a1 = np.minimum(-(-(rows + window) // c), nr)
    b0 = cols // c
    b1 = np.minimum(-(-(cols + window) // c), nc)
    return (integ[a1][:, b1] - integ[a0][:, b1] - integ[a1][:, b0] + integ[a0][:, b0])


def training_candidates(scans: Sequence[Scan], splits: Sequence[SceneSplit], spec: SamplingSpec,
                        gap: int, source: str) -> Candidates:  # fmt: skip
    """Every window on the cell grid that keeps ``gap`` px off validation and has labels."""
    win = spec.window
    parts = []
    for i, (scan, split) in enumerate(zip(scans, splits, strict=True)):
        if not split.train:
            continue
        h, w = split.shape
        rows, cols = _positions(h, win, scan.cell), _positions(w, win, scan.cell)
        counts = _window_counts(scan, rows, cols, win)  # (len(rows), len(cols), K)
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        area = min(win, h) * min(win, w)
        ok = counts.sum(axis=2) >= max(spec.min_labelled * area, 1)
        for a, b in zip(*np.nonzero(ok), strict=True):
            r0, c0 = int(rr[a, b]), int(cc[a, b])
            if split.allows_training(PixelWindow.at(r0, c0, win, win), gap):
                parts.append((i, r0, c0, counts[a, b]))
    if not parts:
        raise ConfigError(f"{source}: no training window of {win} px with at least "
                          f"{spec.min_labelled:.0%} labelled pixels lies {gap} px away from "
                          "validation; use a smaller window, gap or min_labelled, or more "
                          "labelled scenes")  # fmt: skip
    cell = scans[0].cell
    return Candidates(np.array([p[0] for p in parts]), np.array([p[1] for p in parts]),
                      np.array([p[2] for p in parts]), np.stack([p[3] for p in parts]),
                      win, cell)  # fmt: skip


class WindowSampler:
    """Draws training windows reproducibly: the k-th window of step s depends only on
    (seed, s, rank, k), so a resumed or distributed run draws exactly the planned windows."""

    def __init__(self, cands: Candidates, splits: Sequence[SceneSplit], mode: str, gap: int,
                 seed: int):  # fmt: skip
        self.cands, self.splits, self.mode, self.gap, self.seed = cands, splits, mode, gap, seed
        totals = cands.counts.sum(axis=0)
        self.classes = np.nonzero(totals > 0)[0]
        if mode == "balanced":
            # per class, the cumulative share of its labelled pixels held by each window
            cum = np.cumsum(cands.counts[:, self.classes], axis=0)
            self.cum = cum / cum[-1]

    def draw(self, step: int, rank: int, k: int) -> tuple[int, int, int, np.random.Generator]:
        """(scene index, r0, c0) of one window and the generator for its augmentation."""
        rng = np.random.default_rng([self.seed, step, rank, k])
        if self.mode == "balanced":
            j = int(rng.integers(len(self.classes)))
            i = int(np.searchsorted(self.cum[:, j], rng.random(), side="right"))
            i = min(i, len(self.cands) - 1)
        else:
            i = int(rng.integers(len(self.cands)))
        s, r0, c0 = int(self.cands.scene[i]), int(self.cands.r0[i]), int(self.cands.c0[i])
        # jitter inside the cell so windows are not locked to the grid (if still allowed)
        cell, win = self.cands.cell, self.cands.window
        h, w = self.splits[s].shape
        dr, dc = (int(v) for v in rng.integers(0, cell, size=2))
        r1, c1 = min(r0 + dr, max(h - win, 0)), min(c0 + dc, max(w - win, 0))
        if self.splits[s].allows_training(PixelWindow.at(r1, c1, win, win), self.gap):
            r0, c0 = r1, c1
        return s, r0, c0, rng


@dataclass(frozen=True)
class ValTile:
    """A validation tile: ``core`` is scored, ``read`` (core plus context) is fed to the model."""

    scene: int
    core: PixelWindow
    read: PixelWindow


def validation_tiles(splits: Sequence[SceneSplit], scans: Sequence[Scan], tile: int,
                     context: int) -> list[ValTile]:  # fmt: skip
    """Non-overlapping tiles (≤ ``tile`` px) covering the labelled validation areas."""
    out = []
    for i, (split, scan) in enumerate(zip(splits, scans, strict=True)):
        h, w = split.shape
        lab = scan.labelled
        c = scan.cell
        for v in split.val:
            for r0 in range(max(v.r0, 0), min(v.r1, h), tile):
                for c0 in range(max(v.c0, 0), min(v.c1, w), tile):
                    core = PixelWindow(r0, min(r0 + tile, v.r1, h), c0, min(c0 + tile, v.c1, w))
                    cells = lab[core.r0 // c: -(-core.r1 // c), core.c0 // c: -(-core.c1 // c)]
                    if not cells.any():
                        continue
                    read = PixelWindow(max(core.r0 - context, 0), min(core.r1 + context, h),
                                       max(core.c0 - context, 0), min(core.c1 + context, w))
                    out.append(ValTile(i, core, read))
    return out
