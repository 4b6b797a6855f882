"""Per-band normalisation: statistics of the training area (from the chunked scan), or the
fixed elevation scaling the models expect for nDSM/DEM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from geoseg.bundle.untrained import ELEVATION_SCALE
from geoseg.errors import ConfigError
from geoseg.training.config import FixedNorm, NormChoice
from geoseg.training.data import Scan
from geoseg.training.split import SceneSplit


def train_cells(split: SceneSplit, scan: Scan) -> np.ndarray:
    """Boolean nr×nc mask of the cells outside every validation rectangle of a training scene."""
    nr, nc = scan.n.shape
    mask = np.zeros((nr, nc), bool)
    if not split.train:
        return mask
    mask[:] = True
    c = scan.cell
    for v in split.val:
        mask[max(v.r0 // c, 0): -(-v.r1 // c), max(v.c0 // c, 0): -(-v.c1 // c)] = False
    return mask


def band_statistics(scans: Sequence[Scan], splits: Sequence[SceneSplit],
                    modality: str) -> tuple[list[float], list[float]]:  # fmt: skip
    """Mean and std of every band of ``modality`` over valid pixels of the training area."""
    n = 0.0
    s = ss = None
    for scan, split in zip(scans, splits, strict=True):
        mask = train_cells(split, scan)
        n += float(scan.n[mask].sum())
        a = scan.sums[modality][:, mask].sum(axis=1)
        b = scan.sumsq[modality][:, mask].sum(axis=1)
        s = a if s is None else s + a
        ss = b if ss is None else ss + b
    if not n or s is None or ss is None:
        raise ConfigError(f"modality {modality!r}: no valid training pixel to compute band "
                          "statistics from; check the scenes' nodata and the split")  # fmt: skip
    mean = s / n
    var = np.maximum(ss / n - mean * mean, 0.0)
    std = np.maximum(np.sqrt(var), 1e-6)
    return [float(v) for v in mean], [float(v) for v in std]


def normalisation(modalities: Mapping[str, int], choices: Mapping[str, NormChoice],
                  scans: Sequence[Scan], splits: Sequence[SceneSplit],
                  source: str) -> dict[str, dict]:  # fmt: skip
    """Per modality ``{"mean", "std", "how"}``.

    Default: statistics of the training area; height (nDSM) and dem use the fixed scaling of
    :data:`geoseg.bundle.untrained.ELEVATION_SCALE` (metres, kept comparable across scenes).
    """
    unknown = sorted(set(choices) - set(modalities))
    if unknown:
        raise ConfigError(f"{source}: normalise names modality {unknown[0]!r}, which the model "
                          f"does not take ({list(modalities)}); fix the name")  # fmt: skip
    out = {}
    for name, bands in modalities.items():
        choice = choices.get(name, "fixed" if name in ELEVATION_SCALE else "stats")
        if isinstance(choice, FixedNorm):
            if len(choice.mean) != bands or len(choice.std) != bands:
                raise ConfigError(f"{source}: normalise.{name} needs {bands} mean and std "
                                  "value(s), one per band")  # fmt: skip
            if any(v <= 0 for v in choice.std):
                raise ConfigError(f"{source}: normalise.{name}.std values must be > 0")
            out[name] = {"mean": list(choice.mean), "std": list(choice.std), "how": "given"}
        elif choice == "fixed":
            if name not in ELEVATION_SCALE:
                raise ConfigError(f"{source}: normalise.{name}: fixed scaling is defined for "
                                  f"{sorted(ELEVATION_SCALE)} only; use stats or "
                                  "{mean, std}")  # fmt: skip
            m, s = ELEVATION_SCALE[name]
            out[name] = {"mean": [m] * bands, "std": [s] * bands, "how": "fixed"}
        else:
            mean, std = band_statistics(scans, splits, name)
            out[name] = {"mean": mean, "std": std, "how": "stats"}
    return out


__all__ = ["band_statistics", "normalisation", "train_cells"]
