"""Training losses around a model, as one module so DistributedDataParallel sees the forward.

``loss: auto`` uses the model's own ``training_loss`` when it has one (FarSeg: the
foreground-aware annealed focal loss; HPCL-Net: CE + hyper-pixel contrastive loss with its
momentum encoder and queues) and cross-entropy otherwise. ``ce``, ``dice`` and ``ce_dice`` apply
to any model's logits (ignore index 255, optional class weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.config import IGNORE
from geoseg.models import SegModel
from geoseg.training.config import LossSpec

#: key of the per-pixel loss weights among a batch's inputs (``loss.balance: features``)
WEIGHT = "__weight__"


def soft_dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """1 − mean soft Dice over the classes present in target or prediction (labelled pixels)."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    safe = torch.where(target == ignore_index, torch.zeros_like(target), target)
    onehot = F.one_hot(safe, k).permute(0, 3, 1, 2).float() * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1.0) / (denom + 1.0)
    if not present.any():
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


def auto_class_weights(pixels: Sequence[float]) -> list[float]:
    """Inverse square-root frequency, mean 1 over the classes present (absent classes: 1)."""
    p = np.asarray(pixels, dtype=np.float64)
    present = p > 0
    w = np.ones_like(p)
    if present.any():
        w[present] = 1.0 / np.sqrt(p[present] / p[present].sum())
        w[present] /= w[present].mean()
    return [float(v) for v in w]


class TrainModule(nn.Module):
    """``forward(inputs, target) -> {"loss", "logits", ...}`` for a model and a loss spec."""

    def __init__(self, model: SegModel, spec: LossSpec, class_weights: Sequence[float] | None):
        super().__init__()
        self.model = model
        self.spec = spec
        self.own_loss = spec.name == "auto" and hasattr(model, "training_loss")
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weight, persistent=False)

    @property
    def loss_name(self) -> str:
        """The loss as named in the run report."""
        if self.own_loss:
            return f"{type(self.model).__name__}.training_loss"
        return "ce" if self.spec.name == "auto" else self.spec.name

    def forward(self, inputs: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """``loss`` to backpropagate and the detached ``logits`` of a batch."""
        inputs = dict(inputs)
        weight = inputs.pop(WEIGHT, None)
        if self.own_loss:
            return self.model.training_loss(inputs, target)  # type: ignore[operator]
        members = getattr(self.model, "member_logits", None)
        if members is not None:  # an ensemble: every member trained on its own loss
            outs = members(inputs)
            loss = torch.stack([self._loss(o, target, weight) for o in outs]).mean()
            return {"loss": loss, "logits": torch.stack(outs).mean(0).detach()}
        logits = self.model(inputs)
        return {"loss": self._loss(logits, target, weight), "logits": logits.detach()}

    def _loss(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        """The configured loss of one set of logits."""
        name = self.loss_name
        loss = logits.new_zeros(())
        if name == "focal" or (weight is not None and name in ("ce", "ce_dice")):
            loss = loss + self._weighted_ce(logits, target, weight)
        elif name in ("ce", "ce_dice"):
            # an all-ignored batch would give NaN: count it as zero loss
            if (target != IGNORE).any():
                loss = loss + F.cross_entropy(logits.float(), target, weight=self.class_weight,
                                              ignore_index=IGNORE,
                                              label_smoothing=self.spec.label_smoothing)
            else:
                loss = loss + logits.sum() * 0.0
        if name in ("dice", "ce_dice"):
            loss = loss + self.spec.dice_weight * soft_dice_loss(logits, target)
        return loss

    def _weighted_ce(self, logits: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        """Cross-entropy (focal when ``name: focal``) with per-pixel weights, averaged as
        Σ w·loss / Σ w·class weight over the labelled pixels."""
        lab = target != IGNORE
        if not lab.any():
            return logits.sum() * 0.0
        ce = F.cross_entropy(logits.float(), target, weight=self.class_weight, ignore_index=IGNORE,
                             reduction="none", label_smoothing=self.spec.label_smoothing)
        if self.spec.name == "focal":
            safe = torch.where(lab, target, torch.zeros_like(target))
            pt = logits.float().softmax(1).gather(1, safe[:, None])[:, 0]
            ce = ce * (1.0 - pt).clamp(min=0).pow(self.spec.focal_gamma)
        w = lab.float() if weight is None else weight.float() * lab
        denom = w
        if self.class_weight is not None:
            denom = w * self.class_weight[torch.where(lab, target, torch.zeros_like(target))]
        return (ce * w).sum() / denom.sum().clamp(min=1e-12)
