"""Building blocks shared by the seed models: encoders, attention gates, ASPP, DeepLabv3+ head."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn

from geoseg.errors import ModelError
from geoseg.models.weights import load_encoder_weights

#: encoder_weights values that name a hub checkpoint (downloaded by smp, needs network)
HUB_WEIGHTS = frozenset({"imagenet", "ssl", "swsl", "instagram", "advprop", "noisy-student"})


def make_encoder(
    name: str, in_channels: int, *, output_stride: int = 32, weights: str | None = None
) -> nn.Module:
    """An smp encoder (5 stages) for ``in_channels`` bands, optionally dilated to ``output_stride``.

    ``weights`` is a hub name (see ``HUB_WEIGHTS``) or a local .safetensors file whose first conv
    is adapted to the band count by :func:`load_encoder_weights`.
    """
    hub = weights if weights in HUB_WEIGHTS else None
    try:
        encoder = get_encoder(
            name, in_channels=in_channels, depth=5, weights=hub, output_stride=output_stride
        )
    except KeyError:
        raise ModelError(
            f"unknown encoder {name!r}; use an smp encoder such as resnet18, resnet34, resnet50"
        ) from None
    except (ValueError, AttributeError) as exc:
        raise ModelError(
            f"encoder {name!r} cannot run at output stride {output_stride} ({exc}); use a ResNet encoder"
        ) from None
    if weights and hub is None:
        load_encoder_weights(encoder, weights)
    return encoder


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) → BN → ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel re-weighting from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class ChannelGate(nn.Module):
    """σ(MLP(avg-pool) + MLP(max-pool)) per channel, the MLP shared (CBAM channel attention)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        a = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(a)


class SpatialGate(nn.Module):
    """σ(Conv7×7([mean_c ; max_c])) per location (CBAM spatial attention)."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(s))


class PixelGate(nn.Module):
    """σ(Conv1×1(ReLU(Conv1×1(x)))) → one weight per pixel from its own features (FFA-Net style)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.net(x))


class TriLevelAttention(nn.Module):
    """DeepTriNet's tri-level attention unit: channel → spatial → pixel gates in series.

    The serial order and the gate designs are a reconstruction (spec 4.3 [INFER]); ``residual``
    returns ``x + TAU(x)`` instead of ``TAU(x)``.
    """

    def __init__(self, channels: int, reduction: int = 8, residual: bool = False):
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate()
        self.pixel = PixelGate(channels, reduction)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.pixel(self.spatial(self.channel(x)))
        return x + y if self.residual else y


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (dense convs), optionally gated after each conv branch.

    ``attention(channels)`` builds the module applied after the 1×1 and each atrous branch;
    the image-pooling branch is never gated (it is constant over the map).
    """

    def __init__(
        self,
        cin: int,
        cout: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        attention: Callable[[int], nn.Module] | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        gate = attention or (lambda _c: nn.Identity())
        branches = [nn.Sequential(conv_bn_relu(cin, cout, 1), gate(cout))]
        branches += [nn.Sequential(conv_bn_relu(cin, cout, 3, r), gate(cout)) for r in rates]
        self.branches = nn.ModuleList(branches)
        self.pool = conv_bn_relu(cin, cout, 1)
        self.project = nn.Sequential(conv_bn_relu(cout * (len(branches) + 1), cout, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ head: ASPP on the deep map, 48-ch low-level skip, two 3×3 convs, 1×1 classifier.

    With ``se`` a squeeze-excitation block follows the concatenation and the second 3×3 conv
    (DeepTriNet); ``aspp_attention`` gates the ASPP conv branches.
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        aspp_attention: Callable[[int], nn.Module] | None = None,
        se_reduction: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.aspp = ASPP(high_channels, channels, rates, aspp_attention, dropout)
        self.low = conv_bn_relu(low_channels, 48, 1)
        cat = channels + 48

        def se(c: int) -> nn.Module:
            return SqueezeExcite(c, se_reduction) if se_reduction else nn.Identity()

        self.fuse = nn.Sequential(
            se(cat), conv_bn_relu(cat, channels, 3), conv_bn_relu(channels, channels, 3),
            se(channels),
        )  # fmt: skip
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, high: Tensor, low: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.aspp(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat([x, self.low(low)], dim=1))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())
