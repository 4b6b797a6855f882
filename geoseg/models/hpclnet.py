"""HPCL-Net (Zhou et al., arXiv 2308.01251): image + DEM segmentation with hyper-pixel contrast.

Confirmed by the abstract: HRSI and DEM fused "in the semantic space"; hyper-pixel-wise
contrastive learning focused on landslide boundaries, with global hyper-pixel sample-pair queues
and a momentum encoder. Everything else is a reconstruction (spec 3.3 [INFER]): two non-shared
ResNet encoders at output stride 16, 1×1 conv fusion of the two C5 maps, a DeepLabv3+ head on
the fused map with the image's C2 as skip; hyper-pixels are the stride-16 cells of the fused map,
embedded by a projection head; a MoCo-style momentum copy of encoders + fusion + projector gives
keys, stored in one FIFO queue per class; anchors are sampled half from the boundary band;
the loss is CE + λ·supervised InfoNCE, λ switched on after a warm-up.

Only the encoders, the fusion and the head run at inference. The projector and train-step
counter always exist; the momentum copy and the queues are built on the first training step
(or when a training checkpoint containing them is loaded), so inference never allocates them,
and all of them are excluded from inference bundles (``training_only``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.models.base import SegModel
from geoseg.models.blocks import DeepLabV3PlusHead, conv_bn_relu, make_encoder
from geoseg.models.losses import boundary_cells, hyper_pixel_labels, supervised_infonce
from geoseg.models.registry import register

STRIDE = 16  # output stride of both encoders = size of a hyper-pixel in input pixels


class HPCLArgs(StrictModel):
    """Architecture and training arguments of HPCL-Net (``model.arguments`` of a config)."""

    encoder: str = "resnet50"
    #: encoder of the DEM branch (default: same architecture as the image branch)
    dem_encoder: str | None = None
    #: local .safetensors file, a hub name such as "imagenet" (needs network) or a torchgeo
    #: weight "torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO", per branch
    encoder_weights: str | None = None
    dem_encoder_weights: str | None = None
    #: subtract each tile's mean elevation (absolute elevation varies by hundreds of metres)
    dem_demean: bool = True
    decoder_channels: int = Field(256, ge=8)
    aspp_rates: tuple[int, int, int] = (6, 12, 18)
    # ---- training only: hyper-pixel contrastive learning
    embed_dim: int = Field(128, ge=2)
    proj_hidden: int = Field(256, ge=2)
    queue_size: int = Field(8192, ge=1)
    momentum: float = Field(0.999, ge=0.0, le=1.0)
    temperature: float = Field(0.1, gt=0.0)
    contrast_weight: float = Field(0.1, ge=0.0)
    #: steps with λ = 0 while the queues fill (about one epoch)
    warmup_steps: int = Field(1000, ge=0)
    anchors_per_class: int = Field(256, ge=1)
    keys_per_image: int = Field(32, ge=1)
    boundary_fraction: float = Field(0.5, ge=0.0, le=1.0)
    boundary_width: int = Field(1, ge=1)
    purity: float = Field(0.9, gt=0.5, le=1.0)
    ignore_index: int = 255


class DualEncoder(nn.Module):
    """Two non-shared encoders (image, DEM) and their fusion in semantic space (C5 level)."""

    def __init__(self, image_bands: int, dem_bands: int, args: HPCLArgs):
        super().__init__()
        self.image = make_encoder(
            args.encoder, image_bands, output_stride=STRIDE, weights=args.encoder_weights
        )
        self.dem = make_encoder(
            args.dem_encoder or args.encoder, dem_bands, output_stride=STRIDE,
            weights=args.dem_encoder_weights,
        )  # fmt: skip
        ci, cd = self.image.out_channels[-1], self.dem.out_channels[-1]
        self.fuse = conv_bn_relu(ci + cd, ci, 1)

    @property
    def out_channels(self) -> int:
        """Channels of the fused stride-16 map."""
        return self.image.out_channels[-1]

    @property
    def low_channels(self) -> int:
        """Channels of the image's stride-4 skip features."""
        return self.image.out_channels[2]

    def forward(self, image: Tensor, dem: Tensor) -> tuple[Tensor, Tensor]:
        """Fused stride-16 map and the image's stride-4 features."""
        fi, fd = self.image(image), self.dem(dem)
        return self.fuse(torch.cat([fi[-1], fd[-1]], dim=1)), fi[2]


@register("hpclnet")
class HPCLNet(SegModel):
    """HPCL-Net: needs modalities ``image`` (any bands) and ``dem`` (any bands, e.g. DEM+slope)."""

    Args: ClassVar[type[StrictModel]] = HPCLArgs
    required: ClassVar[tuple[str, ...]] = ("image", "dem")
    size_multiple: ClassVar[int] = STRIDE
    training_only: ClassVar[tuple[str, ...]] = ("projector.", "momentum_", "queue", "train_step")
    extra_modalities_hint = "stack derived terrain bands (slope, aspect) into the dem modality"

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: HPCLArgs):
        super().__init__(modalities, num_classes, args)
        self.backbone = DualEncoder(modalities["image"], modalities["dem"], args)
        self.head = DeepLabV3PlusHead(
            self.backbone.out_channels, self.backbone.low_channels, num_classes,
            channels=args.decoder_channels, rates=args.aspp_rates,
        )  # fmt: skip
        self.projector = nn.Sequential(
            nn.Conv2d(self.backbone.out_channels, args.proj_hidden, 1),
            nn.BatchNorm2d(args.proj_hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(args.proj_hidden, args.embed_dim, 1),
        )
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self.momentum_backbone: DualEncoder | None = None
        self.momentum_projector: nn.Module | None = None

    def pretrained_targets(self) -> list[tuple[str, nn.Module, str, tuple[str, ...]]]:
        """The image branch (``encoder_weights``) and the DEM branch (``dem_encoder_weights``)."""
        a = self.args
        return [("encoder_weights", self.backbone.image, a.encoder, ("image",)),
                ("dem_encoder_weights", self.backbone.dem, a.dem_encoder or a.encoder, ("dem",))]

    @property
    def halo(self) -> int:
        """Context in pixels each tile needs on every side."""
        # ResNet OS16 + ASPP like DeepTriNet: ERF r50 ≈ 160 px, capped at a quarter of a 512 tile
        return 128

    # ------------------------------------------------------------------ inference

    def _dem(self, inputs: Mapping[str, Tensor]) -> Tensor:
        dem = inputs["dem"]
        if self.args.dem_demean:
            dem = dem - dem.mean(dim=(2, 3), keepdim=True)
        return dem

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        image = inputs["image"]
        fused, low = self.backbone(image, self._dem(inputs))
        return self.head(fused, low, image.shape[-2:])

    # ------------------------------------------------------------------ training-only parts

    @property
    def has_training_parts(self) -> bool:
        """True once the momentum copy and the queues exist."""
        return self.momentum_backbone is not None

    def enable_training_parts(self) -> None:
        """Build the momentum copy (= current query weights) and the empty per-class queues.

        Called by :meth:`training_loss`; call it yourself before wrapping the model in DDP.
        """
        if self.has_training_parts:
            return
        self.momentum_backbone = copy.deepcopy(self.backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]:
            p.requires_grad_(False)
        ref = self.projector[-1].weight
        k, size, dim = self.num_classes, self.args.queue_size, self.args.embed_dim
        self.register_buffer("queue", torch.zeros(k, size, dim, device=ref.device, dtype=ref.dtype))
        self.register_buffer("queue_ptr", torch.zeros(k, dtype=torch.long, device=ref.device))
        self.register_buffer("queue_count", torch.zeros(k, dtype=torch.long, device=ref.device))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        # a training checkpoint carries the momentum copy and queues: build them to receive it.
        # Hooked here (not in load_state_dict) so it also works when the model is nested, e.g.
        # inside a training wrapper; children are loaded after this call.
        if any(k.startswith((f"{prefix}momentum_", f"{prefix}queue")) for k in state_dict):
            self.enable_training_parts()
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """θ_k ← m·θ_k + (1 − m)·θ_q for the momentum encoders, fusion and projector."""
        self.enable_training_parts()
        m = self.args.momentum
        pairs = [(self.momentum_backbone, self.backbone), (self.momentum_projector, self.projector)]
        for key_net, query_net in pairs:
            for pk, pq in zip(key_net.parameters(), query_net.parameters(), strict=True):
                pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor) -> None:
        """Push ``keys`` (N×D) into the queue of their class, overwriting the oldest (FIFO)."""
        self.enable_training_parts()
        size = self.args.queue_size
        for c in labels.unique().tolist():
            ks = keys[labels == c][-size:]
            n = ks.shape[0]
            pos = (self.queue_ptr[c] + torch.arange(n, device=ks.device)) % size
            self.queue[c, pos] = ks.to(self.queue.dtype)
            self.queue_ptr[c] = (self.queue_ptr[c] + n) % size
            self.queue_count[c] = min(int(self.queue_count[c]) + n, size)

    def queued(self) -> tuple[Tensor, Tensor]:
        """All stored keys (oldest first per class) and their class labels."""
        self.enable_training_parts()
        keys, labels = [], []
        for c in range(self.num_classes):
            n, ptr = int(self.queue_count[c]), int(self.queue_ptr[c])
            order = torch.arange(ptr - n, ptr, device=self.queue.device) % self.args.queue_size
            keys.append(self.queue[c, order])
            labels.append(torch.full((n,), c, dtype=torch.long, device=self.queue.device))
        return torch.cat(keys), torch.cat(labels)

    def _sample_anchors(self, q: Tensor, labels: Tensor, boundary: Tensor) -> tuple[Tensor, Tensor]:
        """Up to ``anchors_per_class`` anchors per class, ``boundary_fraction`` from the band."""
        dim = q.shape[1]
        flat = q.permute(0, 2, 3, 1).reshape(-1, dim)
        lab, bnd = labels.reshape(-1), boundary.reshape(-1)
        total = self.args.anchors_per_class
        chosen = []
        for c in lab[lab >= 0].unique().tolist():
            on_band = torch.nonzero((lab == c) & bnd).squeeze(1)
            inside = torch.nonzero((lab == c) & ~bnd).squeeze(1)
            nb = min(on_band.numel(), round(total * self.args.boundary_fraction))
            ni = min(inside.numel(), total - nb)
            nb = min(on_band.numel(), total - ni)  # fill from the band when the interior is short
            chosen.append(on_band[torch.randperm(on_band.numel(), device=q.device)[:nb]])
            chosen.append(inside[torch.randperm(inside.numel(), device=q.device)[:ni]])
        idx = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long, device=q.device)
        return flat[idx], lab[idx]

    def _sample_keys(self, k: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Up to ``keys_per_image`` random keys per class and image (enqueued after the step)."""
        b, dim = k.shape[:2]
        flat = k.permute(0, 2, 3, 1).reshape(b, -1, dim)
        lab = labels.reshape(b, -1)
        keys, key_labels = [], []
        for i in range(b):
            for c in lab[i][lab[i] >= 0].unique().tolist():
                idx = torch.nonzero(lab[i] == c).squeeze(1)
                idx = idx[torch.randperm(idx.numel(), device=k.device)[: self.args.keys_per_image]]
                keys.append(flat[i, idx])
                key_labels.append(lab[i, idx])
        if not keys:
            return k.new_zeros(0, dim), labels.new_zeros(0)
        return torch.cat(keys), torch.cat(key_labels)

    def contrast_weight(self, step: int) -> float:
        """λ(t): 0 during the warm-up, ``contrast_weight`` afterwards."""
        return self.args.contrast_weight if step > self.args.warmup_steps else 0.0

    def training_loss(
        self, inputs: Mapping[str, Tensor], target: Tensor, step: int | None = None
    ) -> dict[str, Tensor]:
        """CE + λ(t)·HPCL. In train mode also advances the step, the momentum copy and queues.

        Returns ``loss`` (to backpropagate), its parts ``ce`` and ``contrast``, ``weight`` (λ(t))
        and the detached ``logits``.
        """
        self.check_inputs(inputs)
        self.enable_training_parts()
        if step is None:
            if self.training:
                self.train_step += 1
            step = int(self.train_step)
        h, w = target.shape[-2:]
        inputs, target = self._pad_to_stride(inputs, target)
        image, dem = inputs["image"], self._dem(inputs)
        fused, low = self.backbone(image, dem)
        logits = self.head(fused, low, image.shape[-2:])
        ce = F.cross_entropy(logits, target, ignore_index=self.args.ignore_index)
        contrast = self._contrast_loss(F.normalize(self.projector(fused), dim=1), image, dem, target)
        weight = self.contrast_weight(step)
        return {
            "loss": ce + weight * contrast,
            "ce": ce.detach(),
            "contrast": contrast.detach(),
            "weight": torch.tensor(weight),
            "logits": logits[..., :h, :w].detach(),
        }

    def _pad_to_stride(self, inputs: Mapping[str, Tensor],
                       target: Tensor) -> tuple[Mapping[str, Tensor], Tensor]:  # fmt: skip
        """Inputs (reflected) and target (ignored) padded at the bottom/right to whole
        hyper-pixels; the target as int64."""
        h, w = target.shape[-2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            inputs = {n: F.pad(v, (0, pw, 0, ph), mode=mode) for n, v in inputs.items()}
            target = F.pad(target, (0, pw, 0, ph), value=self.args.ignore_index)
        return inputs, target.long()

    def _contrast_loss(self, q: Tensor, image: Tensor, dem: Tensor, target: Tensor) -> Tensor:
        """Supervised InfoNCE of sampled anchors of the query embeddings ``q`` against this
        batch's momentum keys and the queued ones; in train mode, first steps the momentum
        copy and afterwards enqueues this batch's keys."""
        with torch.no_grad():
            if self.training:
                self.momentum_update()
            k = F.normalize(self.momentum_projector(self.momentum_backbone(image, dem)[0]), dim=1)
            labels = hyper_pixel_labels(
                target, self.num_classes, STRIDE, self.args.purity, self.args.ignore_index
            )
            boundary = boundary_cells(labels, self.args.boundary_width)
        anchors, anchor_labels = self._sample_anchors(q, labels, boundary)
        keys, key_labels = self._sample_keys(k, labels)
        queued, queued_labels = self.queued()
        all_keys, all_labels = torch.cat([keys, queued]), torch.cat([key_labels, queued_labels])
        contrast = supervised_infonce(anchors, anchor_labels, all_keys, all_labels, self.args.temperature)
        if self.training:
            self.enqueue(keys, key_labels)
        return contrast
