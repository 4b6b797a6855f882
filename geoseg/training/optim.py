"""Optimisers and learning-rate schedules from the pipeline (stateless schedule: lr(step))."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from geoseg.training.config import OptimizerSpec, ScheduleSpec


def build_optimizer(spec: OptimizerSpec,
                    params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:  # fmt: skip
    """SGD (momentum, Nesterov), Adam or AdamW over the parameters that need gradients."""
    params = [p for p in params if p.requires_grad]
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay, nesterov=spec.nesterov)  # fmt: skip
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def lr_factor(spec: ScheduleSpec, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps.

    Linear warm-up over ``warmup_steps``, then constant, poly ((1 − t)^power), cosine or step
    decay over the remaining steps, never below ``min_lr_ratio``.
    """
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.name == "constant":
        return 1.0
    if spec.name == "step":
        return max(spec.gamma ** (step // spec.step_size), spec.min_lr_ratio)
    span = max(total - spec.warmup_steps, 1)
    t = min(max(step - spec.warmup_steps, 0) / span, 1.0)
    f = (1.0 - t) ** spec.power if spec.name == "poly" else 0.5 * (1.0 + math.cos(math.pi * t))
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * f


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every group's learning rate to ``base_lr · factor``; returns it."""
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
