"""The model card: everything besides weights that prediction needs, as strict JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoseg.config import StrictModel
from geoseg.scene.classes import ClassInfo


class ModalityCard(StrictModel):
    """Bands of one modality: roles, normalisation and how to resample it onto the grid."""

    bands: list[str] = Field(min_length=1, description="band roles, e.g. red, green, nir, ndsm")
    mean: list[float]
    std: list[float]
    resampling: Literal["bilinear", "nearest", "cubic"] = "bilinear"

    @model_validator(mode="after")
    def _lengths(self) -> ModalityCard:
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean/std need {n} values (one per band)")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class ModelCard(StrictModel):
    """JSON card stored beside the weights of a bundle."""

    format: Literal["geoseg-bundle"] = "geoseg-bundle"
    format_version: Literal[1] = 1
    architecture: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    modalities: dict[str, ModalityCard]
    classes: list[ClassInfo] = Field(min_length=1)
    tile_size: int = Field(512, ge=16)
    halo: int = Field(32, ge=0)
    gsd: float | None = Field(None, description="ground sampling distance the model saw, m")
    trained: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    geoseg_version: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _unique_ids(self) -> ModelCard:
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError("class ids must be unique")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def band_counts(self) -> dict[str, int]:
        return {name: len(m.bands) for name, m in self.modalities.items()}

    @property
    def reference(self) -> str:
        """Name of the modality whose grid is the output grid (the first one)."""
        return next(iter(self.modalities))

    def default_overlap(self, tile: int | None = None) -> int:
        """The tile overlap used when none is given: the model's halo, at most a quarter of
        the tile (``tile`` defaults to the card's); predict, the accessor and the ONNX export
        for QGIS Deepness all take it from here."""
        return min(self.halo, (tile or self.tile_size) // 4)


def normalise(card: ModelCard, arrays: Mapping[str, np.ndarray],
              valid: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-band standardisation with the card's statistics; nodata pixels become 0 (the mean)."""
    out = {}
    for name, m in card.modalities.items():
        mean = np.asarray(m.mean, np.float32)[:, None, None]
        std = np.asarray(m.std, np.float32)[:, None, None]
        x = (arrays[name] - mean) / std
        x[:, ~valid] = 0.0
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        out[name] = x
    return out
