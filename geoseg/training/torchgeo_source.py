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

torchgeo is imported only here, when a source is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path
from geoseg.config import IGNORE
from geoseg.errors import ConfigError, ModelError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import PALETTE, ClassInfo
from geoseg.training.config import GeoLayer, TorchgeoSource, TrainConfig
from geoseg.training.data import Scan, _cell_counts, _cell_sum
from geoseg.training.split import SceneSplit

log = logging.getLogger("geoseg.training")


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb[:3]))


def _table(names: Sequence[str], ids: Sequence[int], colours: Sequence[Sequence[int]] | None = None
           ) -> list[ClassInfo]:  # fmt: skip
    return [ClassInfo(id=i, name=str(n).lower().replace(" ", "_").replace("/", "_"),
                      color=_hex(colours[k]) if colours else PALETTE[k % len(PALETTE)])
            for k, (i, n) in enumerate(zip(ids, names, strict=True))]  # fmt: skip


def _landcoverai(ds: Any) -> list[ClassInfo]:
    cmap = ds.cmap
    return _table(ds.classes, range(len(ds.classes)), [cmap[i] for i in range(len(ds.classes))])


def _loveda(ds: Any) -> list[ClassInfo]:
    # mask 0 is no-data (ignored); 1..7 are background .. agriculture (torchgeo lists
    # 'no-data' last in its classes tuple)
    names = [c for c in ds.classes if c != "no-data"]
    return _table(names, range(1, len(names) + 1))


def _isprs(ds: Any) -> list[ClassInfo]:
    return _table(ds.classes, range(len(ds.classes)), ds.colormap)


def _ftw(ds: Any) -> list[ClassInfo]:
    if ds.target == "instance":
        raise ConfigError("FieldsOfTheWorld target 'instance' gives field ids, not classes; use "
                          "args: {target: 2-class} or {target: 3-class}")  # fmt: skip
    names = ["background", "field", "field_boundary"][: 2 if ds.target == "2-class" else 3]
    return _table(names, range(len(names)))  # value 3 (unlabelled) is ignored


@dataclass(frozen=True)
class Known:
    """What geoseg knows of a NonGeoDataset: band roles, class table, ground sampling."""

    roles: tuple[str, ...]
    classes: Callable[[Any], list[ClassInfo]]
    gsd: float


_FTW_ROLES = tuple(f"{b}_{w}" for w in ("b", "a") for b in ("red", "green", "blue", "nir"))
#: NonGeoDatasets a train step can read (FieldsOfTheWorld: window b then window a, 4 bands each)
KNOWN: dict[str, Known] = {
    "LandCoverAI": Known(("red", "green", "blue"), _landcoverai, 0.25),
    "LandCoverAI100": Known(("red", "green", "blue"), _landcoverai, 0.25),
    "LoveDA": Known(("red", "green", "blue"), _loveda, 0.3),
    "Vaihingen2D": Known(("nir", "red", "green"), _isprs, 0.09),
    "Potsdam2D": Known(("red", "green", "blue", "nir"), _isprs, 0.05),
    "FieldsOfTheWorld": Known(_FTW_ROLES, _ftw, 10.0),
}
#: GeoDataset classes whose band names follow a sensor table of geoseg.models.torchgeo_weights
SENSOR_OF = {"Sentinel2": "SENTINEL2", "Sentinel1": "SENTINEL1", "Landsat4TM": "LANDSAT_TM",
             "Landsat5TM": "LANDSAT_TM", "Landsat7": "LANDSAT_ETM", "Landsat8": "LANDSAT_OLI",
             "Landsat9": "LANDSAT_OLI", "NAIP": "NAIP"}  # fmt: skip


@dataclass
class SourceData:
    """A source opened and scanned: what :func:`geoseg.training.prepare.prepare` needs."""

    classes: list[ClassInfo]
    modalities: dict[str, int]
    roles: dict[str, list[str]]
    scenes: list[SampleScene]
    scans: list[Scan]
    splits: list[SceneSplit]
    gsd: float
    description: dict[str, Any]


class SampleReader:
    """Reads samples of a torchgeo dataset as geoseg arrays: inputs per modality (the
    dataset's ``image`` split by band counts), class indices (255 unlabelled) and validity."""

    def __init__(self, dataset: Any, counts: dict[str, int], classes: Sequence[ClassInfo],
                 ignore: Sequence[int] = (), zero_invalid: bool = False, cache: int = 2):  # fmt: skip
        self.dataset, self.counts, self.zero_invalid, self.cache = dataset, counts, zero_invalid, cache
        top = max([c.id for c in classes] + list(ignore) + [255])
        self.lut = np.full(top + 1, IGNORE, np.uint8)
        for i, c in enumerate(classes):
            self.lut[c.id] = i
        self._lru: OrderedDict[Any, tuple] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lru": OrderedDict()}

    def sample(self, key: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(inputs per modality, class indices, valid) of the sample ``key`` (index or GeoSlice)."""
        hashable = key if isinstance(key, int) else repr(key)
        if hashable in self._lru:
            self._lru.move_to_end(hashable)
            return self._lru[hashable]
        s = self.dataset[key]
        image = np.asarray(s["image"], dtype=np.float32)
        if image.ndim == 4:  # a time series of one step
            image = image.reshape(-1, *image.shape[-2:])
        if "mask" in s:
            mask = np.asarray(s["mask"]).astype(np.int64).reshape(image.shape[-2:])
            target = np.where((mask >= 0) & (mask < len(self.lut)),
                              self.lut[np.clip(mask, 0, len(self.lut) - 1)], IGNORE).astype(np.uint8)
        else:
            target = np.full(image.shape[-2:], IGNORE, np.uint8)
        valid = np.isfinite(image).all(axis=0)
        if self.zero_invalid:
            n0 = next(iter(self.counts.values()))
            valid &= (image[:n0] != 0).any(axis=0)
        arrays, i = {}, 0
        for name, n in self.counts.items():
            arrays[name] = image[i : i + n]
            i += n
        if i != image.shape[0]:
            raise ConfigError(f"torchgeo sample {key!r} has {image.shape[0]} bands, the source "
                              f"declares {self.counts}; fix roles or modalities")  # fmt: skip
        out = (arrays, target, valid)
        if self.cache:
            self._lru[hashable] = out
            while len(self._lru) > self.cache:
                self._lru.popitem(last=False)
        return out


class SampleScene:
    """One sample (or chip) as a one-tile training scene, like :class:`TrainScene`."""

    def __init__(self, reader: SampleReader, key: Any, id: str, split: str,
                 shape: tuple[int, int] = (0, 0)):  # fmt: skip
        self.reader, self.key, self.id, self.split, self.shape = reader, key, id, split, shape

    def read(self, window: PixelWindow) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Inputs, labels and validity of ``window``; outside the sample: 0, 255, invalid."""
        arrays, target, valid = self.reader.sample(self.key)
        H, W = target.shape
        inner = PixelWindow(max(window.r0, 0), min(window.r1, H), max(window.c0, 0), min(window.c1, W))
        sl = inner.slices
        arrays = {k: v[:, sl[0], sl[1]] for k, v in arrays.items()}
        target, valid = target[sl], valid[sl]
        if inner == window:
            return {k: v.copy() for k, v in arrays.items()}, target.copy(), valid.copy()
        pad = ((inner.r0 - window.r0, window.r1 - inner.r1), (inner.c0 - window.c0, window.c1 - inner.c1))
        return ({k: np.pad(v, ((0, 0), *pad)) for k, v in arrays.items()},
                np.pad(target, pad, constant_values=IGNORE), np.pad(valid, pad))  # fmt: skip


def _dataset_class(name: str) -> Any:
    import torchgeo.datasets as tgd

    cls = getattr(tgd, name, None)
    geo = isinstance(cls, type) and issubclass(cls, tgd.RasterDataset)
    if name in KNOWN or geo:
        return cls
    raise ConfigError(f"source.torchgeo {name!r}: geoseg trains on the NonGeoDatasets "
                      f"{sorted(KNOWN)} and on RasterDataset GeoDatasets (RasterDataset, "
                      "Sentinel2, NAIP, Landsat8...); use one of them")  # fmt: skip


def _construct(cls: Any, kwargs: dict[str, Any], what: str) -> Any:
    try:
        return cls(**kwargs)
    except FileNotFoundError as exc:  # torchgeo's DatasetNotFoundError
        raise ConfigError(f"{what}: {exc}".replace("use `download=True` to automatically",
                                                   "fetch and")) from None  # fmt: skip
    except (AssertionError, TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: torchgeo refused the arguments {kwargs} ({exc or 'invalid'}); "
                          "check split and args") from None  # fmt: skip


def _scan(scene: SampleScene, k: int, cell: int) -> tuple[Scan, tuple[int, int]]:
    arrays, target, valid = scene.reader.sample(scene.key)
    h, w = target.shape
    shape = (-(-h // cell), -(-w // cell))
    sums = {m: _cell_sum(np.where(valid[None], a, 0.0).astype(np.float64), cell, shape)
            for m, a in arrays.items()}  # fmt: skip
    sumsq = {m: _cell_sum(np.where(valid[None], a, 0.0).astype(np.float64) ** 2, cell, shape)
             for m, a in arrays.items()}  # fmt: skip
    return Scan(cell, _cell_counts(target, cell, shape, k),
                _cell_sum(valid.astype(np.int64), cell, shape), sums, sumsq), (h, w)


def _scans(scenes: list[SampleScene], k: int, cell: int, cache: Path, key: str) -> list[Scan]:
    """Scan every sample once (cached as one .npz in the run's cache folder); sets shapes."""
    path = cache / f"torchgeo-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            mods = json.loads(str(z["modalities"]))
            out = []
            for i, s in enumerate(scenes):
                s.shape = tuple(int(v) for v in z[f"{i}_shape"])  # type: ignore[assignment]
                out.append(Scan(cell, z[f"{i}_counts"], z[f"{i}_n"],
                                {m: z[f"{i}_sum_{m}"] for m in mods},
                                {m: z[f"{i}_sumsq_{m}"] for m in mods}))  # fmt: skip
            return out
    out, arrays = [], {}
    for i, s in enumerate(scenes):
        scan, s.shape = _scan(s, k, cell)
        out.append(scan)
        arrays.update({f"{i}_counts": scan.counts, f"{i}_n": scan.n, f"{i}_shape": np.array(s.shape)})
        arrays.update({f"{i}_sum_{m}": v for m, v in scan.sums.items()})
        arrays.update({f"{i}_sumsq_{m}": v for m, v in scan.sumsq.items()})
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, modalities=json.dumps(list(out[0].sums) if out else []), **arrays)
    return out


def _key(src: TorchgeoSource, classes: Sequence[ClassInfo], cell: int, n: int) -> str:
    text = f"{src.model_dump_json()}|{[c.id for c in classes]}|{cell}|{n}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    cls = _dataset_class(src.torchgeo)
    if src.torchgeo in KNOWN:
        return _open_nongeo(cfg, src, cls, resolve, source, cell, cache)
    return _open_geo(cfg, src, cls, resolve, source, cell, cache)


def _version() -> str:
    from torchgeo import __version__

    return f"torchgeo {__version__}"


def _open_nongeo(cfg: TrainConfig, src: TorchgeoSource, cls: Any, resolve: Callable[[str], Path],
                 source: str, cell: int, cache: Path) -> SourceData:  # fmt: skip
    known = KNOWN[src.torchgeo]
    if src.root is None:
        raise ConfigError(f"{source}: source.root is needed for {src.torchgeo} (the dataset folder)")
    root = str(resolve(src.root))
    what = f"{source}: source {src.torchgeo} (root {root})"
    train_ds = _construct(cls, {"root": root, "split": src.split, **src.args}, what)
    classes = _classes(cfg, known.classes(train_ds), source)
    counts = {"image": len(known.roles)}
    reader = SampleReader(train_ds, counts, classes, cache=src.cache_samples)
    n = min(len(train_ds), src.limit or len(train_ds))
    scenes = [SampleScene(reader, i, f"{src.split}/{i}", src.split) for i in range(n)]
    if src.val_split is not None:
        val_ds = _construct(cls, {"root": root, "split": src.val_split, **src.args}, what)
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
    scans = _scans(scenes, len(classes), cell, cache, _key(src, classes, cell, len(scenes)))
    splits = [SceneSplit(s.id, s.shape, s.id not in val,
                         [PixelWindow(0, s.shape[0], 0, s.shape[1])] if s.id in val else [])
              for s in scenes]  # fmt: skip
    description = {"torchgeo": src.torchgeo, "version": _version(), "root": root,
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


# ------------------------------------------------------------------ GeoDatasets

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
    cls = _dataset_class(layer.torchgeo)
    if layer.torchgeo in KNOWN:
        raise ConfigError(f"{source}: {layer.torchgeo} is a NonGeoDataset; GeoDataset layers take "
                          "RasterDataset classes")  # fmt: skip
    if labels:
        cls = _label_class(cls)
    if layer.paths is None:
        raise ConfigError(f"{source}: source.paths is needed for the GeoDataset {layer.torchgeo}")
    paths = [layer.paths] if isinstance(layer.paths, str) else list(layer.paths)
    resolved = [str(resolve(p)) for p in paths]
    return _construct(cls, {"paths": resolved, **layer.args}, f"{source}: {layer.torchgeo} "
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
        from geoseg.models.torchgeo_weights import band_roles

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


def _open_geo(cfg: TrainConfig, src: TorchgeoSource, cls: Any, resolve: Callable[[str], Path],
              source: str, cell: int, cache: Path) -> SourceData:  # fmt: skip
    import torch
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    if not cfg.classes:
        raise ConfigError(f"{source}: a GeoDataset source needs classes: (id = mask value, name, "
                          "color); its rasters carry no class table")  # fmt: skip
    if src.labels is None:
        raise ConfigError(f"{source}: a GeoDataset source needs labels: {{paths: ...}} (the class "
                          "rasters)")  # fmt: skip
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
    classes = list(cfg.classes)
    train_box, val_box = _boxes(cfg, src, ds, source)
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
    reader = SampleReader(ds, counts, classes, zero_invalid=True, cache=src.cache_samples)
    scenes = [SampleScene(reader, q, f"train-chip-{i}", "train") for i, q in enumerate(train_q)]
    scenes += [SampleScene(reader, q, f"val-chip-{i}", "val") for i, q in enumerate(val_q)]
    scans = _scans(scenes, len(classes), cell, cache, _key(src, classes, cell, len(scenes)))
    splits = [SceneSplit(s.id, s.shape, s.split == "train",
                         [PixelWindow(0, s.shape[0], 0, s.shape[1])] if s.split == "val" else [])
              for s in scenes]  # fmt: skip
    description = {"torchgeo": src.torchgeo, "version": _version(), "paths": src.paths,
                   "modalities": {n: layer.torchgeo for n, layer in src.modalities.items()},
                   "labels": src.labels.paths, "crs": str(ds.crs), "res": list(ds.res),
                   "train_roi": list(train_box.bounds), "val_roi": list(val_box.bounds),
                   "chip": src.chip, "train_chips": len(train_q), "val_chips": len(val_q)}  # fmt: skip
    log.info("torchgeo %s: %d training and %d validation chips of %d px", src.torchgeo,
             len(train_q), len(val_q), src.chip)  # fmt: skip
    return SourceData(classes, counts, roles, scenes, scans, splits, float(ds.res[0]), description)
