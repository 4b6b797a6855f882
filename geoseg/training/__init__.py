"""Training on labelled scenes: strict config and recipes, chunked scans of scenes and labels,
spatially honest splits, window sampling, augmentation, normalisation statistics, losses,
optimisers, checkpoints, DDP and the training loop with its report. May import models,
bundle, scene, catalog, geometry, evaluation.metrics and inference.engine (the one device
check); never pipeline or cli.

``train`` and ``TrainConfig`` are importable from here (loaded on first use: torch is heavy).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from geoseg.training.loop import train

        return train
    if name == "TrainConfig":
        from geoseg.training.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'geoseg.training' has no attribute {name!r}")
