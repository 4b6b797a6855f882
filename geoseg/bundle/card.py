"""The model card: everything besides weights that prediction needs, as strict JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from geoseg.config import StrictModel
from geoseg.scene.classes import ClassInfo
from geoseg.scene.indices import IndexBands


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


class PretrainedWeights(StrictModel):
    """Pretrained encoder weights a bundle started from (provenance; prediction needs none)."""

    argument: str = Field(description="the architecture argument, e.g. encoder_weights")
    name: str = Field(description="e.g. torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO")
    url: str
    licence: str
    source: str = Field(description="where the name was resolved, e.g. torchgeo 0.8.1")
    publication: str | None = None
    modalities: list[str]
    bands: list[str] = Field(description="the weight's bands, as its source names them")
    roles: list[str] = Field(description="the weight's bands as roles")
    new_bands: list[str] = Field(default_factory=list, description="input bands the weight "
                                 "does not know: new first-layer channels, zero at the start")
    normalisation: dict[str, list[list[float] | None]] = Field(
        default_factory=dict, description="per modality and band, the pretraining's (mean, std) "
        "written to the card; null where the weight knows no such band")  # fmt: skip


class ModelCard(StrictModel):
    """JSON card stored beside the weights of a bundle."""

    format: Literal["geoseg-bundle"] = "geoseg-bundle"
    format_version: Literal[1] = 1
    architecture: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    modalities: dict[str, ModalityCard] = Field(min_length=1)
    classes: list[ClassInfo] = Field(min_length=1)
    tile_size: int = Field(512, ge=16)
    halo: int = Field(32, ge=0)
    gsd: float | None = Field(None, description="ground sampling distance the model saw, m")
    trained: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    pretrained: list[PretrainedWeights] = Field(
        default_factory=list, exclude_if=lambda v: not v,  # absent when empty: older readers
        description="pretrained weights the encoders started from")  # fmt: skip
    derived: dict[str, IndexBands] = Field(
        default_factory=dict, description="modalities computed from others' bands (spectral "
        "indices, geoseg.scene.indices): prediction recomputes them")  # fmt: skip
    geoseg_version: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _unique_ids(self) -> ModelCard:
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError("class ids must be unique")
        for name, spec in self.derived.items():
            if name not in self.modalities or spec.source not in self.modalities:
                raise ValueError(f"derived modality {name!r} and its source {spec.source!r} "
                                 "must both be modalities of the card")  # fmt: skip
            if self.modalities[name].bands != spec.indices:
                raise ValueError(f"derived modality {name!r}: bands must be its indices "
                                 f"{spec.indices}")  # fmt: skip
        return self

    @property
    def raster_modalities(self) -> list[str]:
        """Modalities read from rasters (not derived), in order; the first is the reference."""
        return [m for m in self.modalities if m not in self.derived]

    def source_roles(self) -> dict[str, list[str]]:
        """Band roles of the raster modalities (what derived modalities are computed from)."""
        return {m: self.modalities[m].bands for m in self.raster_modalities}

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
