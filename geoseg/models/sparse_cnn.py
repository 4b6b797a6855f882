"""SparseCNN: the default model of the ``sparse`` recipe (a few dozen polygons/points).

An ensemble of small nets in one module, so that a bundle, the tiled predictor and the
evaluation see one ordinary model:

- every member is a TinyCNN-like context branch (three 3×3 convolutions, receptive radius
  3 px) plus, optionally, a per-pixel branch (1×1 convolutions: what a per-pixel random forest
  sees) whose logits are added;
- the members are initialised differently and trained each on its own loss (the trainer calls
  :meth:`SparseCNN.member_logits`); in eval mode the model returns the log of the members'
  averaged class probabilities, so the predictor's softmax is exactly that average;
- optionally inputs pass through ``asinh`` first (bands are already standardised): heavy-tailed
  bands such as terrain curvatures keep their outliers from saturating the net;
- eval mode also averages over the 8 flips/90° rotations (``tta``; the training augmentation
  draws them too).

Measured on the sparse-label benchmark cases: docs/benchmarks.md (issue 16).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.models.base import SegModel
from geoseg.models.registry import register


class SparseArgs(StrictModel):
    """Arguments of ``sparsecnn`` (defaults: docs/benchmarks.md, issue 16)."""

    width: int = Field(32, ge=1, description="channels of every member")
    members: int = Field(4, ge=1, le=16, description="independently initialised nets whose "
                         "class probabilities are averaged")  # fmt: skip
    pixel: bool = Field(True, description="add a per-pixel (1×1 convolution) branch")
    squash: bool = Field(True, description="asinh of the normalised inputs (heavy tails)")
    tta: bool = Field(True, description="eval: also average over the 8 flips/rotations "
                      "(prediction ~9x dearer)")  # fmt: skip


def _block(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Member(nn.Module):
    """One net: a 3×3 context branch plus an optional 1×1 per-pixel branch."""

    def __init__(self, cin: int, k: int, w: int, pixel: bool):
        super().__init__()
        self.context = nn.Sequential(*_block(cin, w, 3), *_block(w, w, 3), nn.Conv2d(w, k, 3, padding=1))
        self.pixel = nn.Sequential(*_block(cin, w, 1), *_block(w, w, 1), nn.Conv2d(w, k, 1)) \
            if pixel else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.context(x)
        return out if self.pixel is None else out + self.pixel(x)


#: the 8 symmetries of the square: (forward, inverse) on the last two axes
def _dihedral() -> list[tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]]:
    out = []
    for flip in (False, True):
        for k in range(4):
            def fwd(t: Tensor, k: int = k, flip: bool = flip) -> Tensor:
                return torch.rot90(t.flip(-1) if flip else t, k, (-2, -1))

            def inv(t: Tensor, k: int = k, flip: bool = flip) -> Tensor:
                t = torch.rot90(t, -k, (-2, -1))
                return t.flip(-1) if flip else t

            out.append((fwd, inv))
    return out


DIHEDRAL = _dihedral()


@register("sparsecnn")
class SparseCNN(SegModel):
    """An ensemble of small context + per-pixel nets; probabilities averaged in eval mode."""

    Args: ClassVar[type[StrictModel]] = SparseArgs
    size_multiple: ClassVar[int] = 1

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: SparseArgs):
        super().__init__(modalities, num_classes, args)
        self.members = nn.ModuleList(Member(self.in_channels, num_classes, args.width, args.pixel)
                                     for _ in range(args.members))  # fmt: skip

    @property
    def halo(self) -> int:
        return 8

    def _input(self, inputs: Mapping[str, Tensor]) -> Tensor:
        x = self.stack(inputs)
        return torch.asinh(x) if self.args.squash else x  # type: ignore[attr-defined]

    def member_logits(self, inputs: Mapping[str, Tensor]) -> list[Tensor]:
        """Every member's logits (B×K×H×W): the trainer applies the loss to each."""
        self.check_inputs(inputs)
        x = self._input(inputs)
        return [m(x) for m in self.members]

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        x = self._input(inputs)
        if self.training:  # raw mean of the members (pre-training regresses on it)
            return torch.stack([m(x) for m in self.members]).mean(0)
        views = DIHEDRAL if self.args.tta else DIHEDRAL[:1]  # type: ignore[attr-defined]
        probs = [inv(m(fwd(x)).float().softmax(1)) for fwd, inv in views for m in self.members]
        return torch.stack(probs).mean(0).clamp_min(1e-12).log()
