"""Training losses of the seed models.

* :class:`AnnealedFocalLoss`: FarSeg's foreground-aware optimisation (normalised focal weighting,
  annealed from plain CE), with a step counter that is saved in the state dict.
* HPCL-Net pieces: :func:`hyper_pixel_labels`, :func:`boundary_cells`, :func:`supervised_infonce`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.errors import ConfigError

Schedule = Literal["cosine", "poly", "linear"]


def annealing_factor(step: float, max_step: int, schedule: Schedule = "cosine") -> float:
    """ζ(t): 1 at t=0 (plain CE) falling to 0 at t=T (pure normalised focal weighting)."""
    if step >= max_step:
        return 0.0
    frac = max(step, 0.0) / max_step
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "poly":
        return (1.0 - frac) ** 0.9
    if schedule == "linear":
        return 1.0 - frac
    raise ConfigError(f"unknown annealing schedule {schedule!r}; use cosine, poly or linear")


def focal_weights(logits: Tensor, target: Tensor, ce: Tensor, gamma: float, ignore_index: int) -> Tensor:
    """Normalised focal weights s_i = Z·(1 − p_i)^γ, Z = Σ l_i / Σ l_i (1 − p_i)^γ (no grad).

    ``ce`` is the per-pixel CE (0 on ignored pixels); Z is taken over the whole batch so the
    re-weighted loss keeps the total magnitude of plain CE.
    """
    with torch.no_grad():
        valid = target != ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        p = logits.float().softmax(dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        w = (1.0 - p).pow(gamma)
        denom = (ce * w).sum()
        z = ce.sum() / denom if denom > 0 else torch.ones_like(denom)
        return z * w


class AnnealedFocalLoss(nn.Module):
    """FarSeg's foreground-aware optimisation loss (official ``annealing_softmax_focalloss``).

    L = Σ_i l_i ω_i(t) / (N_valid + B), with ω_i(t) = s_i + ζ(t)(1 − s_i) and s_i the normalised
    focal weights (:func:`focal_weights`); ω = s after T steps. The step counter ``step`` is a
    buffer (saved with a checkpoint, so a resumed run keeps its schedule); in training mode each
    call first increments it, as the official model does, so the first training step uses t=1
    (ζ = 1 − O(1/T²), i.e. CE to ~1e-8 relative; exactly CE at t=0).
    The +B in the denominator is the official guard against empty batches.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        max_step: int = 10_000,
        schedule: Schedule = "cosine",
        ignore_index: int = 255,
    ):
        super().__init__()
        if max_step < 1:
            raise ConfigError(f"max_step must be >= 1, got {max_step}")
        annealing_factor(0, max_step, schedule)  # validates the schedule name
        self.gamma = gamma
        self.max_step = max_step
        self.schedule: Schedule = schedule
        self.ignore_index = ignore_index
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, logits: Tensor, target: Tensor, step: int | None = None) -> Tensor:
        """Loss of ``logits`` (B×K×H×W) against ``target`` (B×H×W); ``step`` overrides t."""
        if step is None:
            if self.training:
                self.step += 1
            step = int(self.step)
        target = target.long()
        ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        s = focal_weights(logits, target, ce, self.gamma, self.ignore_index)
        zeta = annealing_factor(step, self.max_step, self.schedule)
        weight = s + zeta * (1.0 - s)
        n_valid = (target != self.ignore_index).sum()
        return (ce * weight).sum() / (n_valid + logits.shape[0])

    def extra_repr(self) -> str:
        """Settings shown in the module's repr."""
        return f"gamma={self.gamma}, max_step={self.max_step}, schedule={self.schedule!r}"


# ---------------------------------------------------------------------------------- HPCL-Net


def hyper_pixel_labels(
    target: Tensor, num_classes: int, stride: int, purity: float = 0.9, ignore_index: int = 255
) -> Tensor:
    """Label of each stride×stride block ("hyper-pixel") of ``target`` (B×H×W → B×h×w).

    A block takes class c when c covers at least ``purity`` of its valid pixels (and at least
    half the block is valid); mixed blocks, typically on object boundaries, get -1.
    H and W must be multiples of ``stride``.
    """
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
    frac = F.avg_pool2d(onehot, stride)  # class fraction of the whole block
    valid_frac = F.avg_pool2d(valid.unsqueeze(1).float(), stride).squeeze(1)
    best, label = (frac / valid_frac.clamp_min(1e-6).unsqueeze(1)).max(dim=1)
    pure = (best >= purity) & (valid_frac >= 0.5)
    return torch.where(pure, label, torch.full_like(label, -1))


def boundary_cells(labels: Tensor, width: int = 1) -> Tensor:
    """Labelled cells with a differently labelled (or mixed) cell within ``width`` cells.

    The block-grid analogue of dilate(L) − erode(L): a boolean B×h×w mask of the labelled cells
    that lie in the boundary band. Cells outside the image do not count as different.
    """
    k = 2 * width + 1
    lab = labels.float().unsqueeze(1)
    # a cell is interior when max and min of the labels around it both equal its own label
    hi = F.max_pool2d(F.pad(lab, (width,) * 4, mode="replicate"), k, stride=1)
    lo = -F.max_pool2d(F.pad(-lab, (width,) * 4, mode="replicate"), k, stride=1)
    interior = (hi == lab) & (lo == lab)
    return (labels >= 0) & ~interior.squeeze(1)


def supervised_infonce(
    anchors: Tensor,
    anchor_labels: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    temperature: float = 0.1,
) -> Tensor:
    """Supervised InfoNCE of L2-normalised ``anchors`` (A×D) against ``keys`` (N×D).

    For an anchor of class c, P are the keys of class c and Ng the others:
    L = −1/|P| Σ_{k+∈P} log( e^{q·k+/τ} / (e^{q·k+/τ} + Σ_{k−∈Ng} e^{q·k−/τ}) ), averaged over the
    anchors that have at least one positive and one negative (0 when there are none).
    """
    sim = anchors @ keys.t() / temperature  # A×N
    pos = anchor_labels.unsqueeze(1) == key_labels.unsqueeze(0)
    neg = ~pos
    usable = pos.any(1) & neg.any(1)
    if not usable.any():
        return anchors.sum() * 0.0  # keeps the graph (and DDP) happy
    sim, pos, neg = sim[usable], pos[usable], neg[usable]
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)
    # −log(e^s / (e^s + e^n)) = logaddexp(s, n) − s, with n the log-sum-exp over negatives
    per_pair = torch.logaddexp(sim, neg_lse) - sim
    per_anchor = (per_pair * pos).sum(1) / pos.sum(1)
    return per_anchor.mean()
