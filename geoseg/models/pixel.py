"""The ``pixel`` family: per-pixel classifiers (random forest, gradient boosting) on the bands.

Not a :class:`~geoseg.models.base.SegModel`: a pixel model has no tensors, no receptive field
and no training loop. It is trained by :mod:`geoseg.training.pixel` (scikit-learn, LightGBM),
stored as ONNX with its card (:mod:`geoseg.bundle.pixel_onnx`: never pickled) and predicted by
the ONNX engine through the same tiled predictor as every model. This module only holds its
strict arguments, so that cards, configs and ``geoseg info`` can validate them without
importing scikit-learn.

Features per pixel: the normalised bands of every modality (spectral-index modalities from
``indices:`` included), plus, with ``local: k``, the mean and standard deviation of every band
over a k×k window (reflect-padded at the array's edges).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from geoseg.config import StrictModel

#: the architecture name of the family in configs and cards
PIXEL = "pixel"


class PixelArgs(StrictModel):
    """Arguments of ``architecture: pixel`` (defaults: docs/benchmarks.md, issue 16)."""

    estimator: Literal["random_forest", "lightgbm"] = Field(
        "random_forest", description="random_forest (scikit-learn) or lightgbm")
    trees: int = Field(200, ge=1, le=5000, description="trees (boosting rounds for lightgbm)")
    max_depth: int | None = Field(None, ge=1, description="tree depth limit (default: none for "
                                  "the forest, -1 = num_leaves only for lightgbm)")  # fmt: skip
    min_samples_leaf: int = Field(1, ge=1, description="random_forest: pixels per leaf")
    max_features: Literal["sqrt", "log2", "all"] = Field(
        "sqrt", description="random_forest: features tried per split")
    learning_rate: float = Field(0.05, gt=0, le=1, description="lightgbm: shrinkage")
    num_leaves: int = Field(31, ge=2, description="lightgbm: leaves per tree")
    local: int = Field(0, ge=0, le=31, description="side of the window of local mean/std "
                       "features (odd, >= 3; 0: bands only)")  # fmt: skip
    balance: Literal["none", "classes", "features"] = Field(
        "none", description="sample weights: none (measured best, docs/benchmarks.md); classes "
        "(each class weighs the same); "
        "features (each class the same, and within it each label feature by sqrt(pixels): "
        "one huge polygon does not drown ten small ones)")
    max_pixels: int = Field(200_000, ge=100, description="training pixels at most (a seeded "
                            "sample of the labelled training pixels)")  # fmt: skip
    seed: int = 0

    @model_validator(mode="after")
    def _odd_local(self) -> PixelArgs:
        if self.local and (self.local < 3 or self.local % 2 == 0):
            raise ValueError(f"local {self.local}: use an odd window side >= 3, or 0")
        return self

    @property
    def radius(self) -> int:
        """Pixels of context each side the features need (the card's halo)."""
        return self.local // 2


def is_pixel_architecture(name: str) -> bool:
    """True for the ``pixel`` family (case ignored)."""
    return name.strip().lower() == PIXEL
