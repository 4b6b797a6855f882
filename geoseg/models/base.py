"""The contract every geoseg model follows.

A model takes a dict of modality tensors (``{"image": B×C×H×W, "dem": B×1×H×W}``), accepts any
number of bands per modality, and returns logits ``B×K×H×W`` of the input's H×W for any tile
size: inputs are padded internally to the architecture's size multiple and cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.config import StrictModel
from geoseg.errors import InputError, ModelError


class NoArgs(StrictModel):
    """Architectures without extra arguments."""


class SegModel(nn.Module):
    """Base class of registered segmentation models.

    Subclasses set ``Args`` (a StrictModel of their keyword arguments), ``required`` (modality
    names that must be present, in order; empty means "any modalities, stacked on channels")
    and implement ``_forward`` on inputs already padded to ``size_multiple``.
    """

    Args: ClassVar[type[StrictModel]] = NoArgs
    required: ClassVar[tuple[str, ...]] = ()
    size_multiple: ClassVar[int] = 32
    #: state-dict key prefixes used only in training (momentum encoders, queues...):
    #: they are not written to inference bundles.
    training_only: ClassVar[tuple[str, ...]] = ()
    #: set where the model takes exactly its ``required`` modalities: how to fold extra ones in
    extra_modalities_hint: ClassVar[str | None] = None

    def __init__(self, modalities: Mapping[str, int], num_classes: int, args: StrictModel):
        super().__init__()
        if num_classes < 1:
            raise ModelError(f"num_classes must be >= 1, got {num_classes}")
        missing = [m for m in self.required if m not in modalities]
        if missing:
            raise ModelError(
                f"{type(self).__name__} needs modalities {list(self.required)}; "
                f"missing {missing}: add them (model init: --modality NAME=BANDS; "
                "predict: --modality NAME=PATH)"
            )
        extra = sorted(set(modalities) - set(self.required))
        if self.extra_modalities_hint and extra:
            raise ModelError(
                f"{type(self).__name__} takes modalities {' and '.join(self.required)} only, "
                f"got extra {extra}: {self.extra_modalities_hint}"
            )
        for name, bands in modalities.items():
            if bands < 1:
                raise ModelError(f"modality {name!r} must have >= 1 band, got {bands}")
        self.modalities = dict(modalities)
        self.num_classes = num_classes
        self.args = args
        #: pretrained weights loaded at creation (provenance and normalisation for the card)
        self.pretrained: list[dict] = []

    @property
    def in_channels(self) -> int:
        """Total channels when all modalities are stacked (early fusion)."""
        return sum(self.modalities.values())

    def pretrained_targets(self) -> list[tuple[str, nn.Module, str, tuple[str, ...]]]:
        """Encoders that take pretrained weights: (argument, encoder, encoder name, modalities
        feeding it). Default: ``self.encoder`` over all modalities, when the model has one."""
        encoder = getattr(self, "encoder", None)
        if isinstance(encoder, nn.Module) and hasattr(self.args, "encoder_weights"):
            return [("encoder_weights", encoder, str(self.args.encoder), tuple(self.modalities))]
        return []

    @property
    def halo(self) -> int:
        """Recommended halo in pixels: context each side a tile needs for stable border pixels."""
        return 32

    def stack(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Concatenate all modalities on the channel axis, in the model's modality order."""
        return torch.cat([inputs[m] for m in self.modalities], dim=1)

    def check_inputs(self, inputs: Mapping[str, Tensor]) -> None:
        for name, bands in self.modalities.items():
            if name not in inputs:
                raise InputError(
                    f"model needs modality {name!r} ({bands} band(s)) but the input has "
                    f"{sorted(inputs)}: add it with --modality {name}=PATH"
                )
            got = inputs[name].shape[1]
            if got != bands:
                raise InputError(
                    f"modality {name!r} has {got} band(s) but the model expects {bands}: "
                    f"select bands with --bands or retrain the model"
                )

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        self.check_inputs(inputs)
        h, w = next(iter(inputs.values())).shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect keeps image statistics at the padded border; replicate when too small
            mode = "reflect" if h > ph and w > pw else "replicate"
            inputs = {k: F.pad(v, (0, pw, 0, ph), mode=mode) for k, v in inputs.items()}
        logits = self._forward(inputs)
        return logits[..., :h, :w]

    def _forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def inference_state_dict(self) -> dict[str, Tensor]:
        """State dict without training-only parts."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if not any(k.startswith(p) for p in self.training_only)
        }
