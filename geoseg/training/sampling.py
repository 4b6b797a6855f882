"""Window sampling from the scans: training candidates (random or class-balanced) and the
validation tiles. Nothing here reads pixels; windows are read later, one by one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import SamplingSpec
from geoseg.training.data import Scan
from geoseg.training.split import SceneSplit

if TYPE_CHECKING:
    from geoseg.training.features import FeatureIndex


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
    """Every window on the cell grid that keeps ``gap`` px off validation and holds at least
    ``min_labelled`` labelled pixels (a count: a window around one small polygon qualifies)."""
    win = spec.size
    parts = []
    need = 1
    for i, (scan, split) in enumerate(zip(scans, splits, strict=True)):
        if not split.train:
            continue
        h, w = split.shape
        rows, cols = _positions(h, win, scan.cell), _positions(w, win, scan.cell)
        counts = _window_counts(scan, rows, cols, win)  # (len(rows), len(cols), K)
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        need = spec.min_pixels(min(win, h) * min(win, w))
        ok = counts.sum(axis=2) >= need
        ok &= split.allowed(rr, cc, win, win, gap)
        a, b = np.nonzero(ok)
        parts.append((np.full(len(a), i), rr[a, b], cc[a, b], counts[a, b]))
    if not parts or not sum(len(p[0]) for p in parts):
        raise ConfigError(f"{source}: no training window of {win} px with at least {need} "
                          f"labelled pixel(s) lies {gap} px away from validation; use a smaller "
                          "window, gap or min_labelled, or more labelled scenes")  # fmt: skip
    cell = scans[0].cell
    return Candidates(np.concatenate([p[0] for p in parts]).astype(np.int64),
                      np.concatenate([p[1] for p in parts]).astype(np.int64),
                      np.concatenate([p[2] for p in parts]).astype(np.int64),
                      np.concatenate([p[3] for p in parts]), win, cell)  # fmt: skip


def feature_windows(cands: Candidates, feats: Sequence[FeatureIndex | None],
                    shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                np.ndarray]:  # fmt: skip
    """For every label feature, the candidate windows holding its pixels and how many.

    Returns (feature class, offsets, candidate indices, cumulative pixel shares) in CSR form:
    feature ``g`` (numbered across scenes in order) owns entries ``offsets[g]:offsets[g+1]``.
    Features whose pixels lie in no candidate window (e.g. too close to validation) own none.
    """
    span = -(-cands.window // cands.cell)
    klass, rows_f, rows_c, rows_w = [], [], [], []
    base = 0
    for s, f in enumerate(feats):
        if f is None:
            continue
        lookup = _scene_lookup(cands, s, shapes[s])
        for fid, cid, n in _cell_windows(f, lookup, span):
            rows_f.append(fid + base)
            rows_c.append(cid)
            rows_w.append(n)
        klass.append(f.klass)
        base += len(f)
    fid = np.concatenate(rows_f) if rows_f else np.zeros(0, np.int64)
    cid = np.concatenate(rows_c) if rows_c else np.zeros(0, np.int64)
    wts = np.concatenate(rows_w) if rows_w else np.zeros(0, np.int64)
    offsets, cid, cum = _csr(fid, cid, wts, base, len(cands))
    return (np.concatenate(klass) if klass else np.zeros(0, np.int64)), offsets, cid, cum


def _scene_lookup(cands: Candidates, scene: int, shape: tuple[int, int]) -> np.ndarray:
    """The candidate at each window position of one scene's cell grid (-1: none)."""
    win, cell = cands.window, cands.cell
    h, w = shape
    lookup = np.full((len(_positions(h, win, cell)), len(_positions(w, win, cell))), -1, np.int64)
    mine = np.flatnonzero(cands.scene == scene)
    lookup[cands.r0[mine] // cell, cands.c0[mine] // cell] = mine
    return lookup


def _cell_windows(f: FeatureIndex, lookup: np.ndarray,
                  span: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """(feature, candidate, labelled pixels) of each feature cell in each candidate window
    covering it: one triple per window offset (windows start ``span`` cells or fewer above and
    left of a cell)."""
    nc = f.cells_shape[1]
    cr, cc = f.cell_flat // nc, f.cell_flat % nc
    out = []
    for da in range(-span + 1, 1):
        for db in range(-span + 1, 1):
            a, b = cr + da, cc + db
            ok = (a >= 0) & (a < lookup.shape[0]) & (b >= 0) & (b < lookup.shape[1])
            cand = np.full(len(a), -1, np.int64)
            cand[ok] = lookup[a[ok], b[ok]]
            keep = cand >= 0
            out.append((f.cell_feature[keep], cand[keep], f.cell_count[keep]))
    return out


def _csr(fid: np.ndarray, cid: np.ndarray, wts: np.ndarray, n: int,
         ncands: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(feature, candidate, pixels) entries merged per pair, as CSR offsets over ``n``
    features, candidate indices and each feature's cumulative pixel shares."""
    m = max(ncands, 1)
    key, inv = np.unique(fid * m + cid, return_inverse=True)
    wts = np.bincount(inv, weights=wts, minlength=len(key))
    fid, cid = key // m, key % m
    offsets = np.zeros(n + 1, np.int64)
    np.add.at(offsets, fid + 1, 1)
    offsets = np.cumsum(offsets)
    cum = np.zeros(len(wts))
    for g in range(n):
        a, b = offsets[g], offsets[g + 1]
        if b > a:
            c = np.cumsum(wts[a:b])
            cum[a:b] = c / c[-1]
    return offsets, cid, cum


class WindowSampler:
    """Draws training windows reproducibly: the k-th window of step s depends only on
    (seed, s, rank, k), so a resumed or distributed run draws exactly the planned windows."""

    def __init__(self, cands: Candidates, splits: Sequence[SceneSplit], mode: str, gap: int,
                 seed: int, feats: Sequence[FeatureIndex | None] | None = None):  # fmt: skip
        self.cands, self.splits, self.mode, self.gap, self.seed = cands, splits, mode, gap, seed
        totals = cands.counts.sum(axis=0)
        self.classes = np.nonzero(totals > 0)[0]
        if mode == "features" and (feats is None or all(f is None for f in feats)):
            mode = self.mode = "balanced"  # raster labels have no features
        if mode == "features":
            assert feats is not None
            klass, self.offsets, self.fcand, self.fcum = feature_windows(
                cands, feats, [sp.shape for sp in splits])  # fmt: skip
            drawable = np.diff(self.offsets) > 0
            #: per class, the features that have a window (class uniformly, then a feature)
            self.by_class = [np.flatnonzero(drawable & (klass == k)) for k in range(int(
                klass.max()) + 1 if len(klass) else 0)]  # fmt: skip
            self.by_class = [f for f in self.by_class if len(f)]
            if not self.by_class:
                mode = self.mode = "balanced"
        if mode == "balanced":
            # per class, the cumulative share of its labelled pixels held by each window
            cum = np.cumsum(cands.counts[:, self.classes], axis=0)
            self.cum = cum / cum[-1]

    def draw(self, step: int, rank: int, k: int) -> tuple[int, int, int, np.random.Generator]:
        """(scene index, r0, c0) of one window and the generator for its augmentation."""
        rng = np.random.default_rng([self.seed, step, rank, k])
        if self.mode == "features":
            group = self.by_class[int(rng.integers(len(self.by_class)))]
            g = int(group[int(rng.integers(len(group)))])
            a, b = int(self.offsets[g]), int(self.offsets[g + 1])
            j = min(int(np.searchsorted(self.fcum[a:b], rng.random(), side="right")), b - a - 1)
            i = int(self.fcand[a + j])
        elif self.mode == "balanced":
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
