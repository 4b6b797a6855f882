"""Training scenes: modalities + labels on one grid, scanned once in chunks, read by windows."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path
from geoseg.catalog.spec import CatalogScene
from geoseg.config import IGNORE
from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo
from geoseg.scene.labels import LabelSource, VectorLabels, open_labels
from geoseg.scene.scene import Scene


def select_bands(cs: CatalogScene, name: str,
                 wanted: Sequence[int | str] | None) -> list[int | str] | None:  # fmt: skip
    """Bands of modality ``name``: indices/descriptions, or roles declared in the catalog."""
    spec = cs.modalities[name]
    if wanted is None:
        return spec.bands
    out: list[int | str] = []
    roles = spec.roles or []
    for item in wanted:
        key = str(item).strip().lower()
        if isinstance(item, str) and key in roles:
            i = roles.index(key)
            out.append(spec.bands[i] if spec.bands else i + 1)
        else:
            out.append(item)
    return out


def band_roles(cs: CatalogScene, scene: Scene, name: str) -> list[str]:
    """Names of the used bands for the bundle card: catalog roles, else band descriptions."""
    spec = cs.modalities[name]
    mod = scene.modalities[name]
    if spec.roles:
        file_bands = list(spec.bands) if spec.bands else list(range(1, len(spec.roles) + 1))
        lookup = {}
        for b, role in zip(file_bands, spec.roles, strict=False):
            lookup[b if isinstance(b, int) else str(b).lower()] = role
        names = [lookup.get(b) for b in mod.bands]
        descr = [d.lower() for d in mod.descriptions]
        names = [n or lookup.get(d) for n, d in zip(names, descr, strict=True)]
        if all(names):
            return [str(n) for n in names]
    return [d if d else f"b{b}" for d, b in zip(mod.descriptions, mod.bands, strict=True)]


@dataclass
class TrainScene:
    """One labelled scene, picklable (paths and geometries, no open handles)."""

    id: str
    split: str | None
    scene: Scene
    labels: LabelSource

    @classmethod
    def open(cls, cs: CatalogScene, modalities: Sequence[str], bands: Mapping[str, Sequence],
             classes: Sequence[ClassInfo], options: VectorLabels,
             indices: Mapping[str, Any] | None = None) -> TrainScene:  # fmt: skip
        """Open the ``modalities`` (with their ``bands``) and the labels of a catalog scene;
        ``indices``: derived spectral-index modalities (``{name: IndexBands}``) computed from
        the bands' roles."""
        if cs.labels is None:
            raise InputError(f"scene {cs.id!r} has no labels; add labels: to it in the catalog "
                             "or leave it out of the training scenes")  # fmt: skip
        missing = [m for m in modalities if m not in cs.modalities]
        if missing:
            raise InputError(f"scene {cs.id!r} has no modality {missing[0]!r} (it has "
                             f"{list(cs.modalities)}); add it or choose modalities:")  # fmt: skip
        scene = cs.open(list(modalities), {m: select_bands(cs, m, bands.get(m))
                                           for m in modalities})  # fmt: skip
        if indices:
            scene = scene.with_indices(indices, {m: band_roles(cs, scene, m) for m in modalities})
        labels = open_labels(cs.labels, scene.grid, classes, options)
        return cls(cs.id, cs.split, scene, labels)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the scene grid."""
        return self.scene.grid.shape

    def read(self, window: PixelWindow) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Raw inputs, labels (255 where unlabelled or invalid) and validity of ``window``.

        Parts of the window outside the scene are padded (inputs 0, invalid, unlabelled).
        """
        H, W = self.shape
        inner = PixelWindow(max(window.r0, 0), min(window.r1, H), max(window.c0, 0), min(window.c1, W))
        arrays, valid = self.scene.read(inner)
        target = self.labels.read(inner)
        target[~valid] = IGNORE
        if inner == window:
            return arrays, target, valid
        pad = ((inner.r0 - window.r0, window.r1 - inner.r1), (inner.c0 - window.c0, window.c1 - inner.c1))
        arrays = {k: np.pad(v, ((0, 0), *pad)) for k, v in arrays.items()}
        return arrays, np.pad(target, pad, constant_values=IGNORE), np.pad(valid, pad)


@dataclass
class Scan:
    """Per-cell label counts (nr×nc×K) and per-band sums of valid pixels, per modality."""

    cell: int
    counts: np.ndarray
    n: np.ndarray
    sums: dict[str, np.ndarray]
    sumsq: dict[str, np.ndarray]

    @property
    def labelled(self) -> np.ndarray:
        """Labelled pixels per cell (nr×nc)."""
        return self.counts.sum(axis=2)


def _cell_sum(values: np.ndarray, cell: int, shape: tuple[int, int]) -> np.ndarray:
    """Sum of (…, h, w) values over cell×cell cells -> (…, nr, nc); h, w padded to cells."""
    h, w = values.shape[-2:]
    ph, pw = shape[0] * cell - h, shape[1] * cell - w
    if ph or pw:
        values = np.pad(values, [(0, 0)] * (values.ndim - 2) + [(0, ph), (0, pw)])
    v = values.reshape(*values.shape[:-2], shape[0], cell, shape[1], cell)
    return v.sum(axis=(-3, -1))


def _cell_counts(target: np.ndarray, cell: int, shape: tuple[int, int], k: int) -> np.ndarray:
    """Labelled pixels per class in cell×cell cells -> (nr, nc, k)."""
    h, w = target.shape
    cid = (np.arange(h) // cell)[:, None] * shape[1] + (np.arange(w) // cell)[None, :]
    lab = target < k
    idx = cid[lab].astype(np.int64) * k + target[lab]
    return np.bincount(idx, minlength=shape[0] * shape[1] * k).reshape(shape[0], shape[1], k)


def scan_scene(ts: TrainScene, num_classes: int, cell: int, chunk: int = 1024) -> Scan:
    """Read the scene chunk by chunk once: label counts and band sums per cell."""
    H, W = ts.shape
    nr, nc = -(-H // cell), -(-W // cell)
    step = max(cell, chunk // cell * cell)
    counts = np.zeros((nr, nc, num_classes), np.int64)
    n = np.zeros((nr, nc), np.int64)
    sums = {m: np.zeros((n_bands, nr, nc)) for m, n_bands in ts.scene.band_counts.items()}
    sumsq = {m: np.zeros((n_bands, nr, nc)) for m, n_bands in ts.scene.band_counts.items()}
    for r0 in range(0, H, step):
        for c0 in range(0, W, step):
            r1, c1 = min(r0 + step, H), min(c0 + step, W)
            arrays, target, valid = ts.read(PixelWindow(r0, r1, c0, c1))
            cr, cc = r0 // cell, c0 // cell
            shape = (-(-(r1 - r0) // cell), -(-(c1 - c0) // cell))
            sl = (slice(cr, cr + shape[0]), slice(cc, cc + shape[1]))
            counts[sl] += _cell_counts(target, cell, shape, num_classes)
            n[sl] += _cell_sum(valid.astype(np.int64), cell, shape)
            for m, a in arrays.items():
                a = np.where(valid[None], a, 0.0).astype(np.float64)
                sums[m][(slice(None), *sl)] += _cell_sum(a, cell, shape)
                sumsq[m][(slice(None), *sl)] += _cell_sum(a * a, cell, shape)
    return Scan(cell, counts, n, sums, sumsq)


def scan_key(ts: TrainScene, num_classes: int, cell: int, extra: str) -> str:
    """Identity of a scan: files (size, mtime), bands, label file, classes, cell."""
    h = hashlib.sha256()
    paths = [m.path for m in ts.scene.modalities.values()] + [ts.labels.path]
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{p}|{st and st.st_size}|{st and st.st_mtime_ns}".encode())
    mods = [(n, m.bands, m.resampling) for n, m in ts.scene.modalities.items()]
    derived = ts.scene.indices.derived if ts.scene.indices is not None else ()
    h.update(f"{mods}|{num_classes}|{cell}|{extra}".encode())
    if derived:  # spectral indices change the band sums
        h.update(repr([(n, s.model_dump()) for n, s in derived]).encode())
    return h.hexdigest()[:16]


def cached_scan(ts: TrainScene, num_classes: int, cell: int, cache: Path, extra: str) -> Scan:
    """:func:`scan_scene`, cached as .npz in ``cache`` (a resumed run does not rescan)."""
    key = scan_key(ts, num_classes, cell, extra)
    path = cache / f"{ts.id}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            mods = json.loads(str(z["modalities"]))
            return Scan(cell, z["counts"], z["n"], {m: z[f"sum_{m}"] for m in mods},
                        {m: z[f"sumsq_{m}"] for m in mods})  # fmt: skip
    scan = scan_scene(ts, num_classes, cell)
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, counts=scan.counts, n=scan.n, modalities=json.dumps(list(scan.sums)),
                 **{f"sum_{m}": v for m, v in scan.sums.items()},
                 **{f"sumsq_{m}": v for m, v in scan.sumsq.items()})  # fmt: skip
    return scan
