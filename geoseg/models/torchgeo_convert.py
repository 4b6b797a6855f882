"""Parameter names between torchgeo's models and geoseg's (pure renaming, no torchgeo import).

- torchgeo ``FarSeg`` (``torchgeo/models/farseg.py``) -> geoseg ``farseg`` with
  ``classifier_kernel: 3``: same computation, other module names (torchvision FPN, ``fsr``,
  nested decoder blocks).
- torchgeo ``SemanticSegmentationTask`` with ``model: unet`` / ``deeplabv3+`` -> geoseg
  ``unet`` / ``deeplabv3plus``: both wrap the same smp class, geoseg under ``net.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from geoseg.errors import BundleError

#: torchgeo task ``model`` -> geoseg architecture (same smp class, default arguments)
TASK_MODELS = {"unet": "unet", "deeplabv3+": "deeplabv3plus"}

_FARSEG_RULES = (
    (r"^backbone\.fc\.", None),  # the ImageNet classifier torchvision's ResNet keeps
    (r"^backbone\.", "encoder."),
    (r"^fpn\.inner_blocks\.(\d+)\.0\.", r"fpn.lateral.\1."),
    (r"^fpn\.layer_blocks\.(\d+)\.0\.", r"fpn.output.\1."),
    (r"^fsr\.scene_encoder\.", "relation.scene."),
    (r"^fsr\.content_encoders\.", "relation.content."),
    (r"^fsr\.feature_reencoders\.", "relation.reencode."),
    (r"^decoder\.classifier\.0\.", "classifier."),
)


def is_farseg_state(state: Mapping[str, Any]) -> bool:
    """True for the state dict of torchgeo's FarSeg."""
    return any(k.startswith("fsr.scene_encoder.") for k in state)


def farseg_key(key: str) -> str | None:
    """The geoseg name of a torchgeo FarSeg parameter (None: not used by geoseg)."""
    m = re.match(r"^decoder\.blocks\.(\d+)\.(\d+)\.(\d+)\.(.*)$", key)
    if m:  # torchgeo nests (conv, bn, relu, up) units; geoseg keeps them flat, 4 per unit
        b, unit, k, rest = m.groups()
        return f"decoder.branches.{b}.{4 * int(unit) + int(k)}.{rest}"
    for pattern, repl in _FARSEG_RULES:
        if re.match(pattern, key):
            return None if repl is None else re.sub(pattern, repl, key)
    raise BundleError(f"torchgeo FarSeg parameter {key!r} has no geoseg counterpart; not a "
                      "torchgeo FarSeg state dict")  # fmt: skip


def farseg_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchgeo FarSeg state dict under geoseg ``farseg`` names."""
    out = {}
    for key, value in state.items():
        new = farseg_key(key)
        if new is not None:
            out[new] = value
    return out


def farseg_arguments(state: Mapping[str, Tensor]) -> tuple[dict[str, Any], int, int]:
    """geoseg ``farseg`` arguments, input bands and classes of a torchgeo FarSeg state dict."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^backbone\.layer3\.(\d+)\.", k))}
    bottleneck = any(k.startswith("backbone.layer1.0.conv3.") for k in state)
    n = len(blocks)
    encoder = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50",
               (True, 23): "resnet101"}.get((bottleneck, n))  # fmt: skip
    if encoder is None:
        raise BundleError(f"torchgeo FarSeg backbone with {n} layer3 blocks is not a ResNet-18/34/"
                          "50/101")  # fmt: skip
    bands = int(state["backbone.conv1.weight"].shape[1])
    classes = int(state["decoder.classifier.0.weight"].shape[0])
    return {"encoder": encoder, "classifier_kernel": 3}, bands, classes


def task_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A Lightning ``SemanticSegmentationTask`` state dict (``model.*``) under geoseg's smp
    baseline names (``net.*``); loss and metric buffers are dropped."""
    return {"net." + k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
