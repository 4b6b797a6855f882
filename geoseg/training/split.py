"""Spatially honest train/validation split: whole scenes, random blocks or one stripe.

Validation areas are rectangles in pixel coordinates of a scene. A training window may be drawn
only where the window, grown by ``gap`` pixels on every side, touches no validation rectangle:
training labels and inputs never come within ``gap`` pixels of a validation pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import SplitSpec

if TYPE_CHECKING:
    from geoseg.training.features import FeatureIndex


@dataclass
class SceneSplit:
    """Where a scene may give training windows and where it is validated."""

    scene_id: str
    shape: tuple[int, int]
    train: bool
    val: list[PixelWindow] = field(default_factory=list)
    #: features split: the held-out label features of this scene (numbers in its FeatureIndex)
    val_features: list[int] | None = None

    def allows_training(self, rect: PixelWindow, gap: int) -> bool:
        """True when ``rect`` grown by ``gap`` touches no validation rectangle."""
        if not self.train:
            return False
        grown = rect.grow(gap)
        return not any(grown.intersects(v) for v in self.val)

    def to_dict(self) -> dict:
        """The split of this scene for the run report."""
        out = {"scene": self.scene_id, "train": self.train,
               "val_rects": [v.as_list() for v in self.val],
               "val_pixels": sum(v.area for v in self.val)}  # fmt: skip
        if self.val_features is not None:
            out["val_features"] = len(self.val_features)
        return out

    def allowed(self, r0: np.ndarray, c0: np.ndarray, height: int, width: int,
                gap: int) -> np.ndarray:  # fmt: skip
        """:meth:`allows_training` for many windows at once (top-left corners, one size)."""
        ok = np.full(np.shape(r0), self.train, bool)
        if not self.train:
            return ok
        r0, c0 = np.asarray(r0), np.asarray(c0)
        for v in self.val:
            ok &= ~((r0 - gap < v.r1) & (r0 + height + gap > v.r0)
                    & (c0 - gap < v.c1) & (c0 + width + gap > v.c0))  # fmt: skip
        return ok


SceneInfo = tuple[str, tuple[int, int], str | None]


def split_scenes(spec: SplitSpec, scenes: Sequence[SceneInfo], labelled: Sequence[np.ndarray],
                 cell: int, source: str) -> list[SceneSplit]:  # fmt: skip
    """Assign validation areas.

    Args:
        scenes: (id, (height, width), catalog split) of every training-side scene.
        labelled: per scene, labelled pixel counts per ``cell``×``cell`` cell (from the scan),
            used to place validation blocks/stripes where there are labels.
        source: the pipeline file, for error messages.
    """
    if spec.by == "scene":
        return _by_scene(spec, scenes, source)
    out = []
    for i, ((sid, shape, _), lab) in enumerate(zip(scenes, labelled, strict=True)):
        if spec.by == "blocks":
            rects = _blocks(spec, shape, lab, cell, np.random.default_rng([spec.seed, i]))
        else:
            rects = [_stripe(spec, shape, lab, cell)]
        out.append(SceneSplit(sid, shape, True, [r for r in rects if r.area]))
    if not any(s.val for s in out):
        raise ConfigError(f"{source}: no validation area holds labels; use a smaller "
                          "split.block or a larger split.val_fraction")  # fmt: skip
    return out


def _by_scene(spec: SplitSpec, scenes: Sequence[SceneInfo], source: str) -> list[SceneSplit]:
    ids = [s[0] for s in scenes]
    val = set(spec.val_scenes) if spec.val_scenes is not None else {
        sid for sid, _, split in scenes if split == "val"}  # fmt: skip
    unknown = sorted(val - set(ids))
    if unknown:
        raise ConfigError(f"{source}: split.val_scenes names {unknown[0]!r}, which is not a "
                          f"training scene ({ids[:8]}); fix the id")  # fmt: skip
    if not val:
        raise ConfigError(f"{source}: split by scene needs validation scenes: set split: val in "
                          "the catalog or split.val_scenes, or use split.by: blocks")
    if val >= set(ids):
        raise ConfigError(f"{source}: every scene is a validation scene; keep some for training")
    return [SceneSplit(sid, shape, sid not in val,
                       [PixelWindow(0, shape[0], 0, shape[1])] if sid in val else [])
            for sid, shape, _ in scenes]  # fmt: skip


def _blocks(spec: SplitSpec, shape: tuple[int, int], lab: np.ndarray, cell: int,
            rng: np.random.Generator) -> list[PixelWindow]:  # fmt: skip
    """A random ``val_fraction`` of the labelled blocks of the scene."""
    h, w = shape
    b = spec.block
    blocks, weights = [], []
    for r0 in range(0, h, b):
        for c0 in range(0, w, b):
            rect = PixelWindow(r0, min(r0 + b, h), c0, min(c0 + b, w))
            n = lab[r0 // cell: -(-rect.r1 // cell), c0 // cell: -(-rect.c1 // cell)].sum()
            if n > 0:
                blocks.append(rect)
                weights.append(n)
    if not blocks:
        return []
    k = max(1, round(len(blocks) * spec.val_fraction))
    if len(blocks) > 1:
        k = min(k, len(blocks) - 1)  # keep at least one labelled block for training
    pick = rng.choice(len(blocks), size=k, replace=False)
    return [blocks[i] for i in sorted(pick)]


def _stripe(spec: SplitSpec, shape: tuple[int, int], lab: np.ndarray, cell: int) -> PixelWindow:
    """The last (or first) ``val_fraction`` of the labelled extent, across rows or columns."""
    h, w = shape
    rows = np.nonzero(lab.sum(axis=1))[0]
    cols = np.nonzero(lab.sum(axis=0))[0]
    if not rows.size:
        return PixelWindow(0, 0, 0, 0)
    r_lo, r_hi = rows[0] * cell, min((rows[-1] + 1) * cell, h)
    c_lo, c_hi = cols[0] * cell, min((cols[-1] + 1) * cell, w)
    if spec.axis == "rows":
        n = max(1, round((r_hi - r_lo) * spec.val_fraction))
        return PixelWindow(r_hi - n, h, 0, w) if spec.position == "end" else PixelWindow(0, r_lo + n, 0, w)
    n = max(1, round((c_hi - c_lo) * spec.val_fraction))
    return PixelWindow(0, h, c_hi - n, w) if spec.position == "end" else PixelWindow(0, h, 0, c_lo + n)


# ---------------------------------------------------------------------------- features split


@dataclass
class FeatureUnit:
    """Features held out together: one feature, or all features sharing a group value."""

    key: str
    klass: int  # the class holding most of the unit's pixels
    members: list[tuple[int, int]]  # (scene index, feature number)
    pixels: int


def feature_units(feats: Sequence[FeatureIndex | None]) -> list[FeatureUnit]:
    """The units of a features split over the scenes, in a stable order (by key)."""
    acc: dict[str, dict] = {}
    for s, f in enumerate(feats):
        if f is None:
            continue
        for i in np.flatnonzero(f.pixels > 0):
            # without a group field every feature is its own unit (key per scene)
            key = str(f.group[i]) if not str(f.group[i]).startswith("f") else f"s{s}:{f.group[i]}"
            u = acc.setdefault(key, {"members": [], "px": {}})
            u["members"].append((s, int(i)))
            k = int(f.klass[i])
            u["px"][k] = u["px"].get(k, 0) + int(f.pixels[i])
    out = []
    for key in sorted(acc):
        px = acc[key]["px"]
        klass = max(sorted(px), key=lambda k: px[k])
        out.append(FeatureUnit(key, klass, acc[key]["members"], sum(px.values())))
    return out


def assign_folds(units: Sequence[FeatureUnit], folds: int, seed: int) -> np.ndarray:
    """Fold of every unit: per class, the units in a seeded random order dealt round-robin,
    so every fold holds about 1/folds of each class's features (stratified group k-fold)."""
    out = np.zeros(len(units), np.int64)
    rng = np.random.default_rng([seed, 7919])
    start = 0
    for k in sorted({u.klass for u in units}):
        idx = [i for i, u in enumerate(units) if u.klass == k]
        order = rng.permutation(len(idx))
        for pos, j in enumerate(order):
            out[idx[j]] = (start + pos) % folds
        start += len(idx)  # classes start on different folds: small classes spread out
    return out


def held_out_units(spec: SplitSpec, units: Sequence[FeatureUnit]) -> np.ndarray:
    """Which units are held out: fold ``spec.fold`` of ``spec.folds``, else per class a seeded
    ``val_fraction`` of the units (at least one, and at least one left for training)."""
    if spec.folds is not None:
        return assign_folds(units, spec.folds, spec.seed) == spec.fold
    out = np.zeros(len(units), bool)
    rng = np.random.default_rng([spec.seed, 104729])
    for k in sorted({u.klass for u in units}):
        idx = np.array([i for i, u in enumerate(units) if u.klass == k])
        if len(idx) < 2:
            continue  # a class with one unit stays in training (the report says so)
        n = min(max(1, round(len(idx) * spec.val_fraction)), len(idx) - 1)
        out[rng.choice(idx, size=n, replace=False)] = True
    return out


def merge_rects(rects: Sequence[PixelWindow]) -> list[PixelWindow]:
    """Overlapping rectangles replaced by their bounding rectangle until none overlap, so no
    validation pixel is scored twice."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    out = list(rects)
    while len(out) > 1:
        r = np.array([[w.r0, w.r1, w.c0, w.c1] for w in out], np.float64)
        # overlapping pairs (half-open, as PixelWindow.intersects: shrink to miss mere touches)
        boxes = shapely.box(r[:, 2] + 0.25, r[:, 0] + 0.25, r[:, 3] - 0.25, r[:, 1] - 0.25)
        a, b = shapely.STRtree(boxes).query(boxes, predicate="intersects")
        if (a != b).sum() == 0:
            break
        n, labels = connected_components(coo_matrix((np.ones(len(a)), (a, b)),
                                                    shape=(len(out), len(out))))  # fmt: skip
        out = [PixelWindow(int(r[labels == g, 0].min()), int(r[labels == g, 1].max()),
                           int(r[labels == g, 2].min()), int(r[labels == g, 3].max()))
               for g in range(n)]  # fmt: skip
    return sorted(out, key=lambda w: (w.r0, w.c0))


def split_by_features(spec: SplitSpec, scenes: Sequence[SceneInfo],
                      feats: Sequence[FeatureIndex | None], source: str) -> list[SceneSplit]:  # fmt: skip
    """Hold out whole label features (stratified by class, grouped by ``group_field``): their
    boxes are the validation areas, which training windows keep ``gap`` pixels away from."""
    if all(f is None for f in feats):
        raise ConfigError(f"{source}: split.by: features needs vector labels (polygons or "
                          "points); these scenes have raster labels: use split.by: blocks")
    units = feature_units(feats)
    if len(units) < 2:
        raise ConfigError(f"{source}: split.by: features found {len(units)} labelled feature(s);"
                          " it needs at least 2: use split.by: blocks or stripe")  # fmt: skip
    held = held_out_units(spec, units)
    if not held.any():
        raise ConfigError(f"{source}: split.by: features held out no feature (every class has "
                          "a single feature or group); add features or use split.by: blocks")
    val_ids: list[list[int]] = [[] for _ in scenes]
    for u, h in zip(units, held, strict=True):
        if h:
            for s, i in u.members:
                val_ids[s].append(i)
    out = []
    for s, (sid, shape, _) in enumerate(scenes):
        f = feats[s]
        ids = sorted(val_ids[s])
        rects = [] if f is None else merge_rects([f.rect(i) for i in ids])
        out.append(SceneSplit(sid, shape, True, rects, ids))
    return out
