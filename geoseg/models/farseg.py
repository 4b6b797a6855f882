"""FarSeg (Zheng et al., CVPR 2020): foreground-aware relation network, after the official code.

ResNet (OS32) → FPN (P2–P5, 256 ch) → foreground-scene relation (scene vector from pooled C5, a
separate projection per level) → light-weight decoder averaging the four levels at stride 4 →
1×1 classifier → bilinear ×4 (align_corners=True). Training uses the foreground-aware
optimisation loss (:class:`geoseg.models.losses.AnnealedFocalLoss`) held in ``criterion``, whose step
counter is saved in training checkpoints and left out of inference bundles.

Differences to the official code: the first conv takes any band count; the forward returns
logits (the official inference returns softmax probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.models.base import SegModel
from geoseg.models.blocks import make_encoder
from geoseg.models.losses import AnnealedFocalLoss
from geoseg.models.registry import register


class FarSegArgs(StrictModel):
    """Arguments of ``farseg``."""

    encoder: str = "resnet50"
    #: local .safetensors file, a hub name such as "imagenet" (needs network), or a torchgeo
    #: weight "torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO" (matched to the bands by role)
    encoder_weights: str | None = None
    fpn_channels: int = Field(256, ge=8)
    decoder_channels: int = Field(128, ge=8)
    #: 1: the official 1×1 classifier; 3: torchgeo's FarSeg (3×3), for its weights
    classifier_kernel: Literal[1, 3] = 1
    #: foreground-aware optimisation: focal γ, annealing length T (iterations) and schedule
    fa_gamma: float = Field(2.0, ge=0.0)
    fa_max_step: int = Field(10_000, ge=1)
    fa_schedule: Literal["cosine", "poly", "linear"] = "cosine"
    ignore_index: int = 255


class FPN(nn.Module):
    """maskrcnn-benchmark FPN: 1×1 laterals, nearest ×2 top-down sums, a 3×3 conv per level."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for conv in [*self.lateral, *self.output]:
            nn.init.kaiming_uniform_(conv.weight, a=1)  # the official FPN init
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        inner = self.lateral[-1](feats[-1])
        outs = [self.output[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(inner, size=feats[i].shape[-2:], mode="nearest")
            inner = self.lateral[i](feats[i]) + up
            outs.insert(0, self.output[i](inner))
        return outs


def _conv1x1_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # the official relation module keeps the conv bias before BN
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SceneRelation(nn.Module):
    """Foreground-scene relation with scale-aware projections.

    For each level i: v_i = MLP_i(u) (no norm), c_i = CBR(P_i), r_i = σ(⟨v_i, c_i⟩) (one channel),
    output r_i · CBR'(P_i).
    """

    def __init__(self, scene_channels: int, channels: int, levels: int):
        super().__init__()
        self.scene = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(scene_channels, channels, 1), nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 1),
            )
            for _ in range(levels)
        )  # fmt: skip
        self.content = nn.ModuleList(_conv1x1_bn_relu(channels, channels) for _ in range(levels))
        self.reencode = nn.ModuleList(_conv1x1_bn_relu(channels, channels) for _ in range(levels))

    def forward(self, scene: Tensor, feats: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for proj, content, reencode, p in zip(self.scene, self.content, self.reencode, feats, strict=True):
            relation = torch.sigmoid((proj(scene) * content(p)).sum(dim=1, keepdim=True))
            out.append(relation * reencode(p))
        return out


class LightweightDecoder(nn.Module):
    """Per level log2(stride/4) units (at least one) of 3×3 conv → BN → ReLU → bilinear ×2,
    then the mean of the four stride-4 maps."""

    def __init__(self, cin: int, cout: int, strides: Sequence[int] = (4, 8, 16, 32)):
        super().__init__()
        self.branches = nn.ModuleList()
        for stride in strides:
            n_up = int(math.log2(stride)) - 2
            units = []
            for i in range(max(n_up, 1)):
                units += [
                    nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]
                if n_up > 0:
                    # nn.UpsamplingBilinear2d in the official code: align_corners=True
                    units.append(nn.UpsamplingBilinear2d(scale_factor=2))
            self.branches.append(nn.Sequential(*units))

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        outs = [b(f) for b, f in zip(self.branches, feats, strict=True)]
        return sum(outs) / len(outs)


@register("farseg")
class FarSeg(SegModel):
    """FarSeg with an smp ResNet encoder for any band count (modalities stacked on channels)."""

    Args: ClassVar[type[StrictModel]] = FarSegArgs
    size_multiple: ClassVar[int] = 32
    training_only: ClassVar[tuple[str, ...]] = ("criterion.",)

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: FarSegArgs):
        super().__init__(modalities, num_classes, args)
        self.encoder = make_encoder(args.encoder, self.in_channels, weights=args.encoder_weights)
        chans = self.encoder.out_channels[2:]  # C2..C5
        self.fpn = FPN(chans, args.fpn_channels)
        self.relation = SceneRelation(chans[-1], args.fpn_channels, len(chans))
        self.decoder = LightweightDecoder(args.fpn_channels, args.decoder_channels)
        k = args.classifier_kernel
        self.classifier = nn.Conv2d(args.decoder_channels, num_classes, k, padding=k // 2)
        self.criterion = AnnealedFocalLoss(
            args.fa_gamma, args.fa_max_step, args.fa_schedule, args.ignore_index
        )

    @property
    def halo(self) -> int:
        # effective receptive field r50 ≈ 85 px at 512² (benchmarks/models.py); the scene vector
        # is global whatever the halo
        return 96

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        x = self.stack(inputs)
        c = self.encoder(x)[2:]
        scene = F.adaptive_avg_pool2d(c[-1], 1)
        feats = self.relation(scene, self.fpn(c))
        logits = self.classifier(self.decoder(feats))
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=True)

    def training_loss(
        self, inputs: Mapping[str, Tensor], target: Tensor, step: int | None = None
    ) -> dict[str, Tensor]:
        """Foreground-aware optimisation loss; advances the loss's step counter in train mode."""
        logits = self(inputs)
        loss = self.criterion(logits, target, step)
        return {"loss": loss, "logits": logits.detach()}
