"""A small synthetic scene with sparse labels: a 4-band image whose land-cover zones have their
own spectra, and a few dozen small polygons (and points) of three classes inside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from affine import Affine

from tests.support import write_geotiff

CLASSES = [{"id": 1, "name": "water", "color": "#1f78b4"},
           {"id": 2, "name": "grass", "color": "#33a02c"},
           {"id": 3, "name": "roof", "color": "#e31a1c"}]  # fmt: skip
SIZE = 128
X0, Y0, RES = 500000.0, 5800000.0, 10.0


def zones() -> np.ndarray:
    """Class index (0..2) of every pixel: three vertical zones with wavy borders."""
    r, c = np.mgrid[:SIZE, :SIZE]
    wave = 6 * np.sin(r / 9.0)
    return np.digitize(c + wave, [SIZE / 3, 2 * SIZE / 3]).astype(np.int64)


def write_image(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    spectra = np.array([[300, 500, 200, 100], [400, 700, 500, 2500], [900, 900, 1000, 1100]], float)
    z = zones()
    img = spectra[z].transpose(2, 0, 1) + rng.normal(0, 180, (4, SIZE, SIZE))
    return write_geotiff(path, img.astype(np.int16),
                         transform=Affine(RES, 0, X0, 0, -RES, Y0))  # fmt: skip


def polygons(n_per_class: int = 12, seed: int = 0, groups: int = 0) -> list[dict]:
    """Small squares (2-4 px) of each class inside its zone, kept 3 px apart."""
    rng = np.random.default_rng(seed)
    z = zones()
    feats: list[dict] = []
    taken = np.zeros((SIZE, SIZE), bool)
    for k in range(3):
        n = 0
        for _ in range(2000):
            if n == n_per_class:
                break
            s = int(rng.integers(2, 5))
            r, c = (int(v) for v in rng.integers(2, SIZE - s - 2, size=2))
            if not (z[r:r + s, c:c + s] == k).all() or taken[r - 3:r + s + 3, c - 3:c + s + 3].any():
                continue
            taken[r:r + s, c:c + s] = True
            x0, y0 = X0 + c * RES, Y0 - r * RES
            ring = [[x0, y0], [x0 + s * RES, y0], [x0 + s * RES, y0 - s * RES],
                    [x0, y0 - s * RES], [x0, y0]]  # fmt: skip
            props = {"lc": CLASSES[k]["id"]}
            if groups:
                props["survey"] = int(n % groups)
            feats.append({"type": "Feature", "properties": props,
                          "geometry": {"type": "Polygon", "coordinates": [ring]}})  # fmt: skip
            n += 1
    return feats


def write_labels(path: Path, feats: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
                                "features": feats}))  # fmt: skip
    return path


def sparse_scene(tmp: Path, groups: int = 0, n_per_class: int = 12) -> dict:
    """A catalog scene (dict) of the synthetic image and its polygons."""
    tmp.mkdir(parents=True, exist_ok=True)
    image = write_image(tmp / "image.tif")
    labels = write_labels(tmp / "labels.geojson", polygons(n_per_class, groups=groups))
    return {"id": "synthetic", "modalities": {"image": {"path": str(image),
                                                        "roles": ["blue", "green", "red", "nir"]}},
            "labels": {"path": str(labels), "class_field": "lc"}}  # fmt: skip
