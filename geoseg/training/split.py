"""Spatially honest train/validation split: whole scenes, random blocks or one stripe.

Validation areas are rectangles in pixel coordinates of a scene. A training window may be drawn
only where the window, grown by ``gap`` pixels on every side, touches no validation rectangle:
training labels and inputs never come within ``gap`` pixels of a validation pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import SplitSpec


@dataclass
class SceneSplit:
    """Where a scene may give training windows and where it is validated."""

    scene_id: str
    shape: tuple[int, int]
    train: bool
    val: list[PixelWindow] = field(default_factory=list)

    def allows_training(self, rect: PixelWindow, gap: int) -> bool:
        """True when ``rect`` grown by ``gap`` touches no validation rectangle."""
        if not self.train:
            return False
        grown = rect.grow(gap)
        return not any(grown.intersects(v) for v in self.val)

    def to_dict(self) -> dict:
        """The split of this scene for the run report."""
        return {"scene": self.scene_id, "train": self.train,
                "val_rects": [v.as_list() for v in self.val],
                "val_pixels": sum(v.area for v in self.val)}  # fmt: skip


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
