"""Loading pretrained encoder weights from local files, without unpickling."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from geoseg.errors import BundleError


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a safetensors state dict into ``encoder`` (first conv adapted to its band count).

    Returns (missing, unexpected) keys. Only safetensors files are read; a pickled checkpoint
    must be converted first (``geoseg model convert`` is deliberately not offered: unpickling
    untrusted files runs arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: encoder weights not found; give a local .safetensors file")
    if path.suffix != ".safetensors":
        raise BundleError(
            f"{path}: only .safetensors weights are loaded (pickles can run code); "
            "convert it with safetensors.torch.save_file on a trusted machine"
        )
    state = load_file(str(path))
    own = encoder.state_dict()
    adapted = {}
    for key, value in state.items():
        if key in own and own[key].shape != value.shape and value.ndim == 4:
            adapted[key] = adapt_first_conv(value, own[key].shape[1])
        elif key in own and own[key].shape == value.shape:
            adapted[key] = value
    # smp encoders override load_state_dict and return None: call the base implementation
    result = nn.Module.load_state_dict(encoder, adapted, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt RGB conv weights to ``in_channels`` bands, keeping the activation scale."""
    src_c = weight.shape[1]
    reps = -(-in_channels // src_c)
    new = weight.repeat(1, reps, 1, 1)[:, :in_channels]
    return new * (src_c / in_channels)
