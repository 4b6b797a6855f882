"""TinyCNN: a three-layer fully convolutional net (receptive radius 3 px).

Useful as a near per-pixel baseline and to measure pipeline overhead where the model is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.models.base import SegModel
from geoseg.models.registry import register


class TinyArgs(StrictModel):
    """Arguments of ``tinycnn``."""

    width: int = Field(16, ge=1)


@register("tinycnn")
class TinyCNN(SegModel):
    """Three 3x3 convolutions on the stacked modalities (cheap baseline)."""

    Args: ClassVar[type[StrictModel]] = TinyArgs
    size_multiple: ClassVar[int] = 1

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: TinyArgs):
        super().__init__(modalities, num_classes, args)
        w = args.width
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, num_classes, 3, padding=1),
        )  # fmt: skip

    @property
    def halo(self) -> int:
        return 8

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.net(self.stack(inputs))
