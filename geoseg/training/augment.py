"""Augmentations of one training window.

Geometric ones (flips, 90° rotations) move every modality and the labels together, so pixels
stay aligned; photometric ones (brightness, contrast, noise) touch imagery only — elevation
(height, DEM, DSM...) keeps its metric meaning.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geoseg.training.config import AugmentSpec

#: modalities holding elevations: never photometrically augmented
ELEVATION = frozenset({"height", "dem", "dsm", "dtm", "ndsm", "elevation"})


def geometric(arrays: Mapping[str, np.ndarray], target: np.ndarray, spec: AugmentSpec,
              rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """Same random flip/rotation for (C, H, W) arrays and the (H, W) target."""
    ops: list[tuple[str, int]] = []
    if spec.flip:
        if rng.random() < 0.5:
            ops.append(("flip", -1))
        if rng.random() < 0.5:
            ops.append(("flip", -2))
    if spec.rotate:
        k = int(rng.integers(4))
        if k and target.shape[0] == target.shape[1]:  # non-square windows only flip
            ops.append(("rot", k))

    def apply(a: np.ndarray) -> np.ndarray:
        for op, v in ops:
            a = np.flip(a, axis=v) if op == "flip" else np.rot90(a, k=v, axes=(-2, -1))
        return np.ascontiguousarray(a)

    return {k: apply(v) for k, v in arrays.items()}, apply(target)


def photometric(arrays: Mapping[str, np.ndarray], valid: np.ndarray, spec: AugmentSpec,
                rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Brightness/contrast/noise on normalised imagery (not elevation), valid pixels only."""
    out = dict(arrays)
    if not (spec.brightness or spec.contrast or spec.noise or spec.band_jitter):
        return out
    for name, a in arrays.items():
        if name in ELEVATION:
            continue
        scale = 1.0 + rng.uniform(-spec.contrast, spec.contrast) if spec.contrast else 1.0
        shift = rng.uniform(-spec.brightness, spec.brightness) if spec.brightness else 0.0
        b = a * np.float32(scale) + np.float32(shift)
        if spec.band_jitter:  # spectral jitter: one shift per band
            j = spec.band_jitter
            b = b + rng.uniform(-j, j, size=(a.shape[0], 1, 1)).astype(np.float32)
        if spec.noise:
            b = b + rng.normal(0.0, spec.noise, size=a.shape).astype(np.float32)
        out[name] = np.where(valid[None], b, a).astype(np.float32)
    return out
