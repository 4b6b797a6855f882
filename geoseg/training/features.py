"""Label features (the polygons, points or lines of vector labels) as burnt on a scene's grid.

Sparse labels are a few dozen polygons or points scattered over a scene. Sampling, the
features split and feature balancing need to know, per feature: its class, its group (an
optional attribute such as a survey id), how many pixels it burns, its pixel bounding box, and
which scan cells hold its pixels. :func:`scan_features` burns the features' *numbers* chunk by
chunk exactly as :class:`geoseg.scene.labels.VectorLabelsSource` burns their classes (same
rasteriser, same order: later features over earlier ones), so every labelled pixel belongs to
exactly one feature. Raster labels have no features (``None``).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path
from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.labels import LabelSource, VectorLabelsSource
from geoseg.training.data import TrainScene


@dataclass
class FeatureIndex:
    """The label features of one scene: per feature its class index, group, burnt pixels and
    pixel bounding box, and (sparse) its pixels per scan cell."""

    source: VectorLabelsSource
    klass: np.ndarray  # (n,) class index
    group: np.ndarray  # (n,) group key (str); the feature number when no group field
    pixels: np.ndarray  # (n,) pixels burnt (0: too small to hold a pixel centre)
    bbox: np.ndarray  # (n, 4) r0, r1, c0, c1 of the burnt pixels
    cell: int
    cells_shape: tuple[int, int]
    cell_feature: np.ndarray  # (m,) feature of each (feature, cell) pair
    cell_flat: np.ndarray  # (m,) flat cell index (row * ncols + col)
    cell_count: np.ndarray  # (m,) pixels of the feature in the cell

    def __len__(self) -> int:
        return len(self.klass)

    def rect(self, i: int) -> PixelWindow:
        """The pixel bounding box of feature ``i``."""
        return PixelWindow(*self.bbox[i])

    def read_ids(self, window: PixelWindow) -> np.ndarray:
        """Feature number of every pixel of ``window`` (-1 where no feature is burnt)."""
        return _burn_ids(self.source, window) - 1

    def weights(self) -> np.ndarray:
        """Per feature, the weight of each of its pixels for ``loss.balance: features``:
        1/sqrt(pixels), scaled so that the labelled pixels weigh 1 on average."""
        n = np.maximum(self.pixels, 1).astype(np.float64)
        w = 1.0 / np.sqrt(n)
        total = float((w * self.pixels).sum())
        return (w * self.pixels.sum() / total if total > 0 else w).astype(np.float32)

    def subset_labels(self, ids: Sequence[int]) -> LabelSource:
        """A label source burning only features ``ids`` (the held-out ones): validation never
        scores a pixel of a training feature, even inside a held-out feature's box."""
        from shapely import STRtree

        ids = np.sort(np.asarray(ids, dtype=np.int64))
        sub = copy.copy(self.source)
        sub.geoms = self.source.geoms[ids]
        sub.values = self.source.values[ids]
        sub.rows = self.source.rows[ids]
        sub.tree = STRtree(sub.geoms)
        return sub


def _burn_ids(src: VectorLabelsSource, window: PixelWindow) -> np.ndarray:
    """Feature numbers + 1 of ``window`` (0: none), burnt as the source burns classes."""
    from rasterio.features import rasterize
    from shapely import box

    sub = src.grid.window(window)
    if not len(src.geoms):
        return np.zeros(window.shape, np.int32)
    hits = np.sort(src.tree.query(box(*sub.bounds)))
    if not hits.size:
        return np.zeros(window.shape, np.int32)
    return rasterize(zip(src.geoms[hits], (hits + 1).tolist(), strict=True),
                     out_shape=window.shape, transform=sub.transform, fill=0,
                     all_touched=src.options.all_touched, dtype="int32")  # fmt: skip


def _groups(src: VectorLabelsSource, field: str | None) -> np.ndarray:
    """Group key of every burnt feature: the ``field`` attribute, else the feature number."""
    if field is None:
        return np.array([f"f{i}" for i in range(len(src.geoms))], dtype=object)
    import pyogrio

    df = pyogrio.read_dataframe(src.path, layer=src.spec.layer, read_geometry=False)
    if field not in df.columns:
        raise InputError(f"{src.path}: split.group_field {field!r} is not an attribute (it has "
                         f"{list(df.columns)[:12]}); fix split.group_field")  # fmt: skip
    values = df[field].to_numpy()[src.rows]
    return np.array([f"g{v}" for v in values], dtype=object)


def scan_features(ts: TrainScene, cell: int, group_field: str | None,
                  chunk: int = 1024) -> FeatureIndex | None:  # fmt: skip
    """Burn the scene's label features chunk by chunk (None for raster labels)."""
    src = ts.labels
    if not isinstance(src, VectorLabelsSource):
        return None
    from shapely import box

    H, W = ts.shape
    n = len(src.geoms)
    nr, nc = -(-H // cell), -(-W // cell)
    pixels = np.zeros(n, np.int64)
    lo = np.full((n, 2), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n, 2), -1, np.int64)
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for win in ts.scene.grid.chunks(chunk):
        if not src.tree.query(box(*ts.scene.grid.window(win).bounds)).size:
            continue
        ids = _burn_ids(src, win) - 1
        rr, cc = np.nonzero(ids >= 0)
        if not rr.size:
            continue
        fid = ids[rr, cc].astype(np.int64)
        rr, cc = rr + win.r0, cc + win.c0
        pixels += np.bincount(fid, minlength=n)
        np.minimum.at(lo, fid, np.stack([rr, cc], axis=1))
        np.maximum.at(hi, fid, np.stack([rr, cc], axis=1))
        k, c = np.unique(fid * (nr * nc) + (rr // cell) * nc + cc // cell, return_counts=True)
        keys.append(k)
        counts.append(c)
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    cnt = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    key, inv = np.unique(key, return_inverse=True)
    cnt = np.bincount(inv, weights=cnt, minlength=len(key)).astype(np.int64)
    bbox = np.stack([lo[:, 0], hi[:, 0] + 1, lo[:, 1], hi[:, 1] + 1], axis=1)
    bbox[pixels == 0] = 0
    return FeatureIndex(src, np.asarray(src.values, np.int64), _groups(src, group_field), pixels,
                        bbox, cell, (nr, nc), key // (nr * nc), key % (nr * nc), cnt)  # fmt: skip


def cached_features(ts: TrainScene, cell: int, group_field: str | None, cache: Path,
                    key: str) -> FeatureIndex | None:  # fmt: skip
    """:func:`scan_features`, its arrays cached as .npz in ``cache`` under the scan's ``key``."""
    if not isinstance(ts.labels, VectorLabelsSource):
        return None
    h = hashlib.sha256(f"{key}|{cell}|{group_field}|features-1".encode()).hexdigest()[:16]
    path = cache / f"{ts.id}-features-{h}.npz"
    names = ("pixels", "bbox", "cell_feature", "cell_flat", "cell_count")
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in names}
            groups = np.array(json.loads(str(z["groups"])), dtype=object)
        src = ts.labels
        nr, nc = -(-ts.shape[0] // cell), -(-ts.shape[1] // cell)
        return FeatureIndex(src, np.asarray(src.values, np.int64), groups, cell=cell,
                            cells_shape=(nr, nc), **arrays)  # fmt: skip
    feats = scan_features(ts, cell, group_field)
    assert feats is not None
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, groups=json.dumps([str(g) for g in feats.group]),
                 **{k: getattr(feats, k) for k in names})  # fmt: skip
    return feats


def feature_extents(ts: TrainScene) -> np.ndarray | None:
    """Largest side (pixels) of every label feature's bounding box, from the geometries alone
    (no rasterising); None for raster labels."""
    src = ts.labels
    if not isinstance(src, VectorLabelsSource) or not len(src.geoms):
        return None
    import shapely

    b = shapely.bounds(src.geoms)
    rx, ry = (abs(v) for v in ts.scene.grid.resolution)
    return np.maximum((b[:, 2] - b[:, 0]) / rx, (b[:, 3] - b[:, 1]) / ry) + 1


def holdout_layer(feats: FeatureIndex, ids: Sequence[int], out: Path) -> Path:
    """Write the held-out features (their original rows and geometries, so that evaluation
    burns them exactly as training did) as a GeoPackage: ``geoseg evaluate --holdout``."""
    import pyogrio

    src = feats.source
    df = pyogrio.read_dataframe(src.path, layer=src.spec.layer)
    rows = np.unique(src.rows[np.asarray(ids, dtype=np.int64)])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pyogrio.write_dataframe(df.iloc[rows], tmp, driver="GPKG", layer="holdout")
    return out


def describe(feats: Sequence[FeatureIndex | None], names: Sequence[str]) -> dict[str, Any]:
    """Features and labelled pixels per class over the scenes (for the run report)."""
    out: dict[str, Any] = {}
    for k, name in enumerate(names):
        n = sum(int(((f.klass == k) & (f.pixels > 0)).sum()) for f in feats if f is not None)
        px = sum(int(f.pixels[f.klass == k].sum()) for f in feats if f is not None)
        out[name] = {"features": n, "pixels": px}
    return out
