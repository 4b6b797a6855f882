"""Baselines from segmentation-models-pytorch: U-Net and DeepLabV3+ with early fusion.

All modalities are stacked on the channel axis, so any single-stream baseline doubles as the
"early fusion" comparison for the multi-modal models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.models.base import SegModel
from geoseg.models.registry import register
from geoseg.models.weights import load_encoder_weights


class SmpArgs(StrictModel):
    """Arguments of the segmentation-models-pytorch baselines."""

    encoder: str = "resnet18"
    encoder_depth: int = 5
    #: local .safetensors file, a hub name such as "imagenet" (needs network), or a torchgeo
    #: weight "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO" (matched to the bands by role)
    encoder_weights: str | None = None


class _SmpModel(SegModel):
    Args: ClassVar[type[StrictModel]] = SmpArgs
    smp_class: ClassVar[type]

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: SmpArgs):
        super().__init__(modalities, num_classes, args)
        hub = args.encoder_weights if args.encoder_weights in {"imagenet", "ssl", "swsl"} else None
        self.net = self.smp_class(
            encoder_name=args.encoder,
            encoder_depth=args.encoder_depth,
            encoder_weights=hub,
            in_channels=self.in_channels,
            classes=num_classes,
        )
        if args.encoder_weights and hub is None:
            load_encoder_weights(self.net.encoder, args.encoder_weights)

    def pretrained_targets(self) -> list[tuple[str, nn.Module, str, tuple[str, ...]]]:
        """The smp encoder, over all modalities."""
        return [("encoder_weights", self.net.encoder, self.args.encoder, tuple(self.modalities))]

    @property
    def halo(self) -> int:
        return 64

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.net(self.stack(inputs))


@register("unet")
class UNet(_SmpModel):
    """U-Net (smp) on the stacked modalities."""

    smp_class = smp.Unet


@register("deeplabv3plus")
class DeepLabV3Plus(_SmpModel):
    """DeepLabV3+ (smp, output stride 16) on the stacked modalities."""

    smp_class = smp.DeepLabV3Plus
