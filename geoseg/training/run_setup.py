"""What a training run settles before its first step: torch threads, the prepared data and
the configuration as preparing (and self-supervised pretraining) resolved it, class weights
of the loss, and the autocast dtype."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from geoseg.errors import ConfigError
from geoseg.training import ddp
from geoseg.training.config import TrainConfig
from geoseg.training.criterion import auto_class_weights
from geoseg.training.prepare import Prepared, prepare
from geoseg.training.sparse import with_window


def set_threads(threads: int | None, dist: ddp.Dist, device: torch.device) -> None:
    """torch's CPU threads: ``threads`` if set, else the cores shared by the ranks of a CPU
    process group (otherwise torch's default)."""
    if threads:
        torch.set_num_threads(threads)
    elif dist.enabled and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))


def prepare_run(cfg: TrainConfig, resolve: Callable[[str], Path], default_catalog: str | None,
                source: str, out: Path, device: torch.device, dist: ddp.Dist, progress: bool
                ) -> tuple[Prepared, TrainConfig]:  # fmt: skip
    """The prepared data (rank 0 scans first and caches in ``out/cache``; the others then read
    the cache) and the config as resolved: the automatic window, and the encoder of the
    self-supervised pretraining when ``pretrain`` is set."""
    if not dist.main:
        ddp.barrier(dist)
    prep = prepare(cfg, resolve, default_catalog, source, out / "cache")
    if dist.main:
        ddp.barrier(dist)
    # what prepare resolved (the automatic window) holds for the rest of the run
    cfg = prep.config or with_window(cfg, cfg.sampling.size)
    if cfg.pretrain is not None and cfg.model.init is None:  # self-supervised first
        from geoseg.training.pretrain import pretrained_config

        cfg = pretrained_config(cfg, prep, out, device, dist, progress)
    return prep, cfg


def class_weights(cfg: TrainConfig, prep: Prepared, source: str) -> list[float] | None:
    """The loss's class weights: none, automatic (from the training pixels) or as given."""
    cw = cfg.loss.class_weights
    if cw == "none":
        return None
    if cw == "auto":
        return auto_class_weights(prep.class_pixels)
    if len(cw) != len(prep.classes):
        raise ConfigError(f"{source}: loss.class_weights has {len(cw)} values for "
                          f"{len(prep.classes)} classes; give one per class")
    return list(cw)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 (else fp16) on CUDA when ``amp`` is set; None for full precision."""
    if cfg.amp and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None
