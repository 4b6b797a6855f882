"""Training on labelled scenes: ``geoseg train PIPELINE.yaml`` or ``type: train`` steps.

Modules: ``config`` (strict schema, recipes), ``labels`` (raster/vector labels on the scene
grid), ``data`` (scenes, chunked scan), ``split`` (spatially honest validation), ``sampling``
(windows), ``augment``, ``stats`` (normalisation), ``windows`` (torch datasets), ``criterion``
(losses), ``optim``, ``checkpoint`` (safetensors + JSON), ``ddp`` (torchrun), ``loop``,
``report``, ``profiles``, ``step`` (pipeline step), ``cli``.

Importing this package stays light (the CLI imports it at start-up); the ``train`` step is
registered with the pipeline registry as soon as ``geoseg.pipeline`` is imported — at once if it
already is, else right after its import (geoseg.pipeline pulls in torch, the CLI must not).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__all__ = ["TrainConfig", "TrainStep", "train"]


def train(*args: Any, **kwargs: Any) -> Any:
    """See :func:`geoseg.train.loop.train` (imported lazily: it pulls in torch)."""
    from geoseg.train.loop import train as _train

    return _train(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from geoseg.train.config import TrainConfig

        return TrainConfig
    if name == "TrainStep":
        from geoseg.train.step import TrainStep

        return TrainStep
    raise AttributeError(f"module 'geoseg.train' has no attribute {name!r}")


class _RegisterAfterPipeline(importlib.abc.MetaPathFinder):
    """Post-import hook: once ``geoseg.pipeline`` has executed, import our step module."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "geoseg.pipeline":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            importlib.import_module("geoseg.train.step")

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "geoseg.pipeline" in sys.modules:
    importlib.import_module("geoseg.train.step")
elif not any(isinstance(f, _RegisterAfterPipeline) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterPipeline())
