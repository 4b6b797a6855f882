"""What :func:`geoseg.training.prepare.prepare` adds for sparse labels (a few polygons/points).

- the window size, when not set: from the label features' size and the model's halo;
- the feature index of every scene (when the split, the sampling or the loss needs it);
- the features split (whole features held out, stratified, grouped, boxes kept ``gap`` away);
- validation scenes whose labels hold only the held-out features;
- warnings when validation is too small to choose anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.catalog.spec import CatalogScene
from geoseg.training.config import TrainConfig
from geoseg.training.data import TrainScene, scan_key
from geoseg.training.features import FeatureIndex, cached_features, feature_extents, holdout_layer
from geoseg.training.split import SceneSplit

log = logging.getLogger("geoseg.training")

#: window bounds of the automatic choice (pixels)
MIN_WINDOW, MAX_WINDOW = 16, 256
#: the pixel family's scan grid (it has no window; the scan only locates labelled cells)
PIXEL_CELL = 16
#: below these, validation cannot tell models apart (the report warns)
MIN_VAL_FEATURES, MIN_VAL_PIXELS = 3, 200


def is_pixel(cfg: TrainConfig) -> bool:
    """True for the ``pixel`` family (random forest, gradient boosting), which has no window."""
    return cfg.model.architecture.lower() == "pixel"


def needs_features(cfg: TrainConfig) -> bool:
    """The split, the sampling or the loss works on label features."""
    return (cfg.split.by == "features" or cfg.sampling.mode == "features"
            or cfg.loss.balance == "features")  # fmt: skip


def model_halo(cfg: TrainConfig, modalities: dict[str, int], num_classes: int) -> int:
    """The halo (context a tile needs) of the configured model, built without weights."""
    if is_pixel(cfg):
        return 0
    from geoseg.models import create

    args = dict(cfg.model.arguments)
    return int(create(cfg.model.architecture, modalities, num_classes, load_weights=False,
                      **args).halo)  # fmt: skip


def auto_window(extents: np.ndarray | None, halo: int) -> int:
    """The training window: the 90th percentile of the features' extent plus one halo of
    context, rounded up to 16 px, within 16..256 px (256 without vector labels). Measured
    (docs/benchmarks.md): 16 px for 15 m landslide discs (+5 mIoU points over 32 px), 64 px
    for building footprints (+12 over 16 px)."""
    if extents is None or not len(extents):
        return MAX_WINDOW
    need = float(np.percentile(extents, 90)) + halo
    return int(min(max(16 * math.ceil(need / 16), MIN_WINDOW), MAX_WINDOW))


def with_window(cfg: TrainConfig, window: int, stride: int | None = None) -> TrainConfig:
    """``cfg`` with the sampling window (and stride) set."""
    upd: dict[str, Any] = {"window": window}
    if stride is not None and cfg.sampling.stride is None:
        upd["stride"] = stride
    return cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update=upd)})


def resolve_window(cfg: TrainConfig, scenes: Sequence[TrainScene], num_classes: int) -> TrainConfig:
    """``cfg`` with ``sampling.window`` set: as given, else chosen from the label features
    (vector labels; candidate grid window/4, at least 4 px), else 256."""
    if cfg.sampling.window is not None:
        return cfg
    if is_pixel(cfg):
        return with_window(cfg, 4 * PIXEL_CELL, PIXEL_CELL)
    parts = [e for e in (feature_extents(ts) for ts in scenes) if e is not None]
    if not parts:
        return with_window(cfg, MAX_WINDOW)
    halo = model_halo(cfg, scenes[0].scene.band_counts, num_classes)
    window = auto_window(np.concatenate(parts), halo)
    log.info("sampling.window %d px (features' 90th percentile extent + model halo %d px)",
             window, halo)  # fmt: skip
    return with_window(cfg, window, max(4, window // 4))


def feature_indexes(cfg: TrainConfig, scenes: Sequence[TrainScene], cell: int, cache: Path,
                    num_classes: int, extra: str) -> list[FeatureIndex | None] | None:  # fmt: skip
    """Every scene's feature index when something needs it (None otherwise)."""
    if not needs_features(cfg) and not is_pixel(cfg):
        return None
    return [cached_features(ts, cell, cfg.split.group_field, cache,
                            scan_key(ts, num_classes, cell, extra)) for ts in scenes]  # fmt: skip


def validation_scenes(scenes: Sequence[TrainScene], splits: Sequence[SceneSplit],
                      feats: Sequence[FeatureIndex | None] | None) -> list[TrainScene] | None:  # fmt: skip
    """For a features split: the scenes with labels of their held-out features only."""
    if feats is None or all(sp.val_features is None for sp in splits):
        return None
    out = []
    for ts, sp, f in zip(scenes, splits, feats, strict=True):
        labels = ts.labels if f is None else f.subset_labels(sp.val_features or [])
        out.append(TrainScene(ts.id, ts.split, ts.scene, labels))
    return out


def holdout_specs(out: Path, cat_scenes: Sequence[CatalogScene], splits: Sequence[SceneSplit],
                  feats: Sequence[FeatureIndex | None] | None) -> list[dict] | None:  # fmt: skip
    """For a features split: the scene specs of ``geoseg evaluate --holdout`` with labels of
    the held-out features only (written to ``out/holdout/<scene>.gpkg``)."""
    if feats is None or all(sp.val_features is None for sp in splits):
        return None
    specs = []
    for cs, sp, f in zip(cat_scenes, splits, feats, strict=True):
        if f is None or not sp.val_features or cs.labels is None:
            continue
        path = holdout_layer(f, sp.val_features, out / "holdout" / f"{cs.id}.gpkg")
        labels = cs.labels.model_copy(update={"path": str(path), "layer": "holdout"})
        specs.append(cs.model_copy(update={"labels": labels}).model_dump(mode="json",
                                                                         exclude_none=True))
    return specs


def split_warnings(splits: Sequence[SceneSplit], feats: Sequence[FeatureIndex | None] | None,
                   val_pixels: int, names: Sequence[str]) -> list[str]:  # fmt: skip
    """Why validation may be too small to choose anything (empty when it is not)."""
    out = []
    if val_pixels < MIN_VAL_PIXELS:
        out.append(f"validation holds about {val_pixels} labelled pixels (< {MIN_VAL_PIXELS}): "
                   "the best-on-validation bundle is chosen by noise; prefer the last bundle or "
                   "cross-validate (--folds)")  # fmt: skip
    if feats is None or all(sp.val_features is None for sp in splits):
        return out
    per_class = np.zeros(len(names), np.int64)
    train_class = np.zeros(len(names), np.int64)
    for sp, f in zip(splits, feats, strict=True):
        if f is None:
            continue
        held = np.zeros(len(f), bool)
        held[sp.val_features or []] = True
        has = f.pixels > 0
        per_class += np.bincount(f.klass[held & has], minlength=len(names))[: len(names)]
        train_class += np.bincount(f.klass[~held & has], minlength=len(names))[: len(names)]
    few = [f"{names[k]} ({int(per_class[k])})" for k in range(len(names))
           if train_class[k] + per_class[k] > 0 and per_class[k] < MIN_VAL_FEATURES]  # fmt: skip
    if few:
        out.append(f"held-out features per class below {MIN_VAL_FEATURES}: {', '.join(few)}; "
                   "validation cannot tell models apart on these classes")  # fmt: skip
    return out
