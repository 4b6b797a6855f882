"""GeoDatasets as a training source: ``RasterDataset`` or a subclass (``Sentinel2``, ``NAIP``).

The image is intersected (``&``) with the extra ``modalities`` (resampled onto the image's grid
by torchgeo) and the ``labels`` (a ``<Dataset>Labels`` subclass whose raster is the mask);
``train_chips`` chips from ``RandomGeoSampler`` over the training box, validation chips from
``GridGeoSampler`` over the validation box, and a chip crossing into the other box is dropped.
Band roles come from ``roles:``, the sensor's band names, or the files' band names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, ModelError
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import GeoLayer, TorchgeoSource, TrainConfig
from geoseg.training.split import SceneSplit
from geoseg.training.torchgeo_datasets import KNOWN, SENSOR_OF, construct, dataset_class, torchgeo_version
from geoseg.training.torchgeo_samples import SampleReader, SampleScene, SourceData, scan_key, scan_samples

log = logging.getLogger("geoseg.training")

_LABELS: dict[str, type] = {}


def _label_class(cls: type) -> type:
    """``cls`` with ``is_image = False`` (its raster is the mask), a module-level class so that
    DataLoader workers can unpickle it."""
    if getattr(cls, "is_image", True) is False:
        return cls
    name = f"{cls.__name__}Labels"
    if name not in _LABELS:
        new = type(name, (cls,), {"is_image": False, "__module__": __name__, "__qualname__": name})
        _LABELS[name] = new
        globals()[name] = new
    return _LABELS[name]


def __getattr__(name: str) -> type:
    """``<Dataset>Labels`` classes made by :func:`_label_class`, also in a fresh process (a
    spawned DataLoader worker unpickling a dataset that uses one)."""
    if name.endswith("Labels") and not name.startswith("_"):
        import torchgeo.datasets as tgd

        base = getattr(tgd, name[: -len("Labels")], None)
        if isinstance(base, type):
            return _label_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _layer(layer: GeoLayer | TorchgeoSource, resolve: Callable[[str], Path], source: str,
           labels: bool = False) -> Any:  # fmt: skip
    cls = dataset_class(layer.torchgeo)
    if layer.torchgeo in KNOWN:
        raise ConfigError(f"{source}: {layer.torchgeo} is a NonGeoDataset; GeoDataset layers take "
                          "RasterDataset classes")  # fmt: skip
    if labels:
        cls = _label_class(cls)
    if layer.paths is None:
        raise ConfigError(f"{source}: source.paths is needed for the GeoDataset {layer.torchgeo}")
    paths = [layer.paths] if isinstance(layer.paths, str) else list(layer.paths)
    resolved = [str(resolve(p)) for p in paths]
    return construct(cls, {"paths": resolved, **layer.args}, f"{source}: {layer.torchgeo} "
                     f"(paths {resolved})")  # fmt: skip


def _band_count(ds: Any) -> int:
    import rasterio

    if getattr(ds, "separate_files", False):
        return len(ds.bands)
    if getattr(ds, "band_indexes", None):
        return len(ds.band_indexes)
    with rasterio.open(ds.index.filepath.iloc[0]) as f:
        return int(f.count)


def _geo_roles(ds: Any, given: list[str] | None, n: int, name: str, source: str) -> list[str]:
    if given is not None:
        if len(given) != n:
            raise ConfigError(f"{source}: roles of {name} name {len(given)} bands, the files have "
                              f"{n}; give one role per band")  # fmt: skip
        return list(given)
    bands = list(getattr(ds, "bands", None) or [])
    sensor = SENSOR_OF.get(type(ds).__name__)
    if sensor is not None and len(bands) == n:
        from geoseg.models.torchgeo_bands import band_roles

        try:
            return list(band_roles(sensor, bands, n))
        except ModelError:
            pass
    if len(bands) == n:
        return [str(b).lower() for b in bands]
    return [f"b{i + 1}" for i in range(n)] if name == "image" else [
        name if n == 1 else f"{name}_{i + 1}" for i in range(n)]  # fmt: skip


def _boxes(cfg: TrainConfig, src: TorchgeoSource, ds: Any, source: str) -> tuple[Any, Any]:
    import shapely

    if (src.train_roi is None) != (src.val_roi is None):
        raise ConfigError(f"{source}: give both source.train_roi and source.val_roi, or neither")
    if src.train_roi is not None and src.val_roi is not None:
        return shapely.box(*src.train_roi), shapely.box(*src.val_roi)
    x, y, _ = ds.bounds
    (x0, x1), (y0, y1) = (x.start, x.stop), (y.start, y.stop)
    rx, ry = ds.res
    sp = cfg.split
    f = sp.val_fraction
    if sp.axis == "columns":  # east end = the last columns
        gap = sp.gap * rx
        if sp.position == "end":
            cut = x1 - f * (x1 - x0)
            return shapely.box(x0, y0, cut - gap, y1), shapely.box(cut, y0, x1, y1)
        cut = x0 + f * (x1 - x0)
        return shapely.box(cut + gap, y0, x1, y1), shapely.box(x0, y0, cut, y1)
    gap = sp.gap * ry  # rows: the last rows are the southern end (north-up grids)
    if sp.position == "end":
        cut = y0 + f * (y1 - y0)
        return shapely.box(x0, cut + gap, x1, y1), shapely.box(x0, y0, x1, cut)
    cut = y1 - f * (y1 - y0)
    return shapely.box(x0, y0, x1, cut - gap), shapely.box(x0, cut, x1, y1)


def _inside(query: Any, box: Any) -> bool:
    x, y = query[0], query[1]
    b = box.bounds
    eps = 1e-9 * max(abs(v) for v in b) if any(b) else 1e-9
    return x.start >= b[0] - eps and y.start >= b[1] - eps and x.stop <= b[2] + eps \
        and y.stop <= b[3] + eps


def _intersect(src: TorchgeoSource, resolve: Callable[[str], Path], source: str
               ) -> tuple[Any, dict[str, int], dict[str, list[str]]]:  # fmt: skip
    """The image ``&`` its modalities ``&`` the labels; band counts and roles per modality."""
    assert src.labels is not None
    image = _layer(src, resolve, source)
    counts = {"image": _band_count(image)}
    roles = {"image": _geo_roles(image, src.roles, counts["image"], "image", source)}
    ds = image
    for name, layer in src.modalities.items():
        if name in counts:
            raise ConfigError(f"{source}: source.modalities cannot be named {name!r}")
        extra = _layer(layer, resolve, source)
        counts[name] = _band_count(extra)
        roles[name] = _geo_roles(extra, layer.roles, counts[name], name, source)
        ds = ds & extra
    ds = ds & _layer(src.labels, resolve, source, labels=True)
    return ds, counts, roles


def _chips(cfg: TrainConfig, src: TorchgeoSource, ds: Any, train_box: Any, val_box: Any,
           source: str) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """Training chips (random, seeded) and validation chips (a grid), each inside its box."""
    import torch
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    gen = torch.Generator().manual_seed(cfg.seed)
    try:
        train_q = list(RandomGeoSampler(ds, size=src.chip, length=src.train_chips, roi=train_box,
                                        generator=gen))  # fmt: skip
        val_q = list(GridGeoSampler(ds, size=src.chip, stride=src.val_stride or src.chip,
                                    roi=val_box))  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"{source}: torchgeo's samplers failed ({exc}); check the boxes and "
                          "chip size") from None  # fmt: skip
    train_q = [q for q in train_q if _inside(q, train_box)]
    val_q = [q for q in val_q if _inside(q, val_box)]
    if not train_q or not val_q:
        raise ConfigError(f"{source}: {len(train_q)} training and {len(val_q)} validation chips of "
                          f"{src.chip} px fit their boxes; use a smaller chip, gap or another "
                          "val_fraction / roi")  # fmt: skip
    return train_q, val_q


def open_geo(cfg: TrainConfig, src: TorchgeoSource, resolve: Callable[[str], Path], source: str,
             cell: int, cache: Path) -> SourceData:  # fmt: skip
    """Open a GeoDataset source: its layers intersected, chips drawn in their boxes, scanned."""
    if not cfg.classes:
        raise ConfigError(f"{source}: a GeoDataset source needs classes: (id = mask value, name, "
                          "color); its rasters carry no class table")  # fmt: skip
    if src.labels is None:
        raise ConfigError(f"{source}: a GeoDataset source needs labels: {{paths: ...}} (the class "
                          "rasters)")  # fmt: skip
    ds, counts, roles = _intersect(src, resolve, source)
    classes = list(cfg.classes)
    train_box, val_box = _boxes(cfg, src, ds, source)
    train_q, val_q = _chips(cfg, src, ds, train_box, val_box, source)
    reader = SampleReader(ds, counts, classes, zero_invalid=True, cache=src.cache_samples)
    scenes = [SampleScene(reader, q, f"train-chip-{i}", "train") for i, q in enumerate(train_q)]
    scenes += [SampleScene(reader, q, f"val-chip-{i}", "val") for i, q in enumerate(val_q)]
    scans = scan_samples(scenes, len(classes), cell, cache, scan_key(src, classes, cell, len(scenes)))
    splits = [SceneSplit(s.id, s.shape, s.split == "train",
                         [PixelWindow(0, s.shape[0], 0, s.shape[1])] if s.split == "val" else [])
              for s in scenes]  # fmt: skip
    description = {"torchgeo": src.torchgeo, "version": torchgeo_version(), "paths": src.paths,
                   "modalities": {n: layer.torchgeo for n, layer in src.modalities.items()},
                   "labels": src.labels.paths, "crs": str(ds.crs), "res": list(ds.res),
                   "train_roi": list(train_box.bounds), "val_roi": list(val_box.bounds),
                   "chip": src.chip, "train_chips": len(train_q), "val_chips": len(val_q)}  # fmt: skip
    log.info("torchgeo %s: %d training and %d validation chips of %d px", src.torchgeo,
             len(train_q), len(val_q), src.chip)  # fmt: skip
    return SourceData(classes, counts, roles, scenes, scans, splits, float(ds.res[0]), description)
