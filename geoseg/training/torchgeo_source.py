"""torchgeo datasets as training data: ``source: {torchgeo: LoveDA, root: /data/loveda}``.

The seam: every sample of a NonGeoDataset, and every chip torchgeo's samplers draw from a
GeoDataset, becomes a one-tile "scene" with the interface of :class:`TrainScene` (``id``,
``split``, ``shape``, ``read(window)``). From there the run is geoseg's own: scans (class
counts and band sums per cell, cached in the run folder), windows drawn inside the tiles,
normalisation, validation tiles, bundles.

- NonGeoDatasets (``KNOWN``: LandCoverAI, LoVeDA, Vaihingen2D, Potsdam2D, FieldsOfTheWorld):
  the samples of ``split`` train, those of ``val_split`` validate (or, with ``val_split:
  null``, ``split.val_fraction`` of the samples, drawn with ``split.seed``). Class tables
  (ids = mask values, names, colours) and band roles come from the dataset.
- GeoDatasets (``RasterDataset`` or a subclass such as ``Sentinel2``, ``NAIP``): the image is
  intersected (``&``) with the extra ``modalities`` (DEM, nDSM: resampled onto the image's
  grid by torchgeo) and the ``labels``; ``train_chips`` chips from ``RandomGeoSampler`` over
  the training box, validation chips from ``GridGeoSampler`` over the validation box. The boxes
  default to a stripe of ``split.val_fraction`` at the ``split.position`` end of
  ``split.axis``, ``split.gap`` pixels apart, and a chip crossing into the other box is
  dropped: training and validation pixels never meet. Pixels where every image band is 0
  (torchgeo's fill outside the files) are invalid. Classes come from ``classes:``.

This module opens a source and reads NonGeoDatasets; the rest lives next to it:
:mod:`~geoseg.training.torchgeo_datasets` (the dataset classes geoseg knows, constructing one),
:mod:`~geoseg.training.torchgeo_samples` (samples as scenes, their scans) and
:mod:`~geoseg.training.torchgeo_geo` (GeoDatasets). torchgeo is imported only by these modules,
when a source is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo
from geoseg.training.config import TorchgeoSource, TrainConfig
from geoseg.training.split import SceneSplit
from geoseg.training.torchgeo_datasets import KNOWN, construct, dataset_class, torchgeo_version
from geoseg.training.torchgeo_geo import open_geo
from geoseg.training.torchgeo_samples import SampleReader, SampleScene, SourceData, scan_key, scan_samples


def _check_unused(cfg: TrainConfig, source: str) -> None:
    used = [k for k in ("bands", "indices", "modalities") if getattr(cfg, k)]
    if used:
        raise ConfigError(f"{source}: {used[0]} does not apply to a torchgeo source; bands and "
                          "modalities come from the dataset (source.roles, source.modalities)")


def open_source(cfg: TrainConfig, resolve: Callable[[str], Path], source: str, cell: int,
                cache: Path) -> SourceData:  # fmt: skip
    """Open ``cfg.source``, list its samples or chips, split and scan them."""
    src = cfg.source
    assert src is not None
    _check_unused(cfg, source)
    cls = dataset_class(src.torchgeo)
    if src.torchgeo in KNOWN:
        return _open_nongeo(cfg, src, cls, resolve, source, cell, cache)
    return open_geo(cfg, src, resolve, source, cell, cache)


def _open_nongeo(cfg: TrainConfig, src: TorchgeoSource, cls: Any, resolve: Callable[[str], Path],
                 source: str, cell: int, cache: Path) -> SourceData:  # fmt: skip
    known = KNOWN[src.torchgeo]
    if src.root is None:
        raise ConfigError(f"{source}: source.root is needed for {src.torchgeo} (the dataset folder)")
    root = str(resolve(src.root))
    what = f"{source}: source {src.torchgeo} (root {root})"
    train_ds = construct(cls, {"root": root, "split": src.split, **src.args}, what)
    classes = _classes(cfg, known.classes(train_ds), source)
    counts = {"image": len(known.roles)}
    reader = SampleReader(train_ds, counts, classes, cache=src.cache_samples)
    n = min(len(train_ds), src.limit or len(train_ds))
    scenes = [SampleScene(reader, i, f"{src.split}/{i}", src.split) for i in range(n)]
    if src.val_split is not None:
        val_ds = construct(cls, {"root": root, "split": src.val_split, **src.args}, what)
        vreader = SampleReader(val_ds, counts, classes, cache=src.cache_samples)
        m = min(len(val_ds), src.limit or len(val_ds))
        scenes += [SampleScene(vreader, i, f"{src.val_split}/{i}", src.val_split) for i in range(m)]
        val = {s.id for s in scenes if s.split == src.val_split}
    else:
        rng = np.random.default_rng(cfg.split.seed)
        k = min(max(1, round(n * cfg.split.val_fraction)), n - 1)
        val = {scenes[int(i)].id for i in rng.choice(n, size=k, replace=False)} if k > 0 else set()
    train_n = sum(s.id not in val for s in scenes)
    if not val or not train_n:
        raise ConfigError(f"{what}: {train_n} training and {len(val)} validation samples; both "
                          "are needed (check split, val_split, limit)")  # fmt: skip
    scans = scan_samples(scenes, len(classes), cell, cache, scan_key(src, classes, cell, len(scenes)))
    splits = [SceneSplit(s.id, s.shape, s.id not in val,
                         [PixelWindow(0, s.shape[0], 0, s.shape[1])] if s.id in val else [])
              for s in scenes]  # fmt: skip
    description = {"torchgeo": src.torchgeo, "version": torchgeo_version(), "root": root,
                   "split": src.split, "val_split": src.val_split, "args": src.args,
                   "train_samples": train_n, "val_samples": len(val)}  # fmt: skip
    return SourceData(classes, counts, {"image": list(known.roles)}, scenes, scans, splits,
                      known.gsd, description)  # fmt: skip


def _classes(cfg: TrainConfig, table: list[ClassInfo], source: str) -> list[ClassInfo]:
    """The dataset's class table, or ``classes:`` when it renames the same ids."""
    if not cfg.classes:
        return table
    if sorted(c.id for c in cfg.classes) != sorted(c.id for c in table):
        raise ConfigError(f"{source}: classes has ids {[c.id for c in cfg.classes]}, the dataset's "
                          f"masks use {[c.id for c in table]}; give the same ids or leave classes "
                          "out")  # fmt: skip
    return list(cfg.classes)
