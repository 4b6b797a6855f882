"""Samples of a torchgeo dataset as one-tile training scenes, and their scans.

:class:`SampleReader` reads a sample (an index of a NonGeoDataset, or a chip's GeoSlice of a
GeoDataset) as geoseg arrays; :class:`SampleScene` gives one sample the interface of
:class:`TrainScene` (``id``, ``split``, ``shape``, ``read(window)``); :func:`scan_samples`
scans every sample once (class counts and band sums per cell, cached in the run folder).
:class:`SourceData` is an opened source, as :func:`geoseg.training.prepare.prepare` takes it.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path
from geoseg.config import IGNORE
from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo
from geoseg.training.config import TorchgeoSource
from geoseg.training.data import Scan, _cell_counts, _cell_sum
from geoseg.training.split import SceneSplit


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


def scan_samples(scenes: list[SampleScene], k: int, cell: int, cache: Path, key: str) -> list[Scan]:
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


def scan_key(src: TorchgeoSource, classes: Sequence[ClassInfo], cell: int, n: int) -> str:
    """The cache key of a source's scans: its settings, class ids, cell size, sample count."""
    text = f"{src.model_dump_json()}|{[c.id for c in classes]}|{cell}|{n}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
