"""geoseg's FarSeg computes what torchgeo's FarSeg computes when both carry the same weights
(parameter names mapped by geoseg.models.torchgeo_convert), at 3 bands."""

from __future__ import annotations

import pytest
import torch

from geoseg.models import create
from geoseg.models.torchgeo_convert import farseg_arguments, farseg_key, farseg_state

farseg_mod = pytest.importorskip("torchgeo.models.farseg")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _torchgeo_farseg(classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = farseg_mod.FarSeg(backbone="resnet18", classes=classes, backbone_pretrained=False)
    # non-trivial batch-norm statistics, so a mapped-but-unused tensor would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_same_weights_same_output() -> None:
    theirs = _torchgeo_farseg()
    state = theirs.state_dict()
    args, bands, classes = farseg_arguments(state)
    assert (args, bands, classes) == ({"encoder": "resnet18", "classifier_kernel": 3}, 3, 5)
    ours = create("farseg", bands, classes, **args).eval()
    mapped = farseg_state(state)
    own = ours.inference_state_dict()
    assert set(mapped) == set(own)  # every parameter has its counterpart, none left over
    ours.load_state_dict(mapped, strict=False)
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expect, got = theirs(x), ours({"image": x})
    assert got.shape == expect.shape == (2, 5, 96, 128)
    assert torch.allclose(got, expect, atol=1e-5, rtol=1e-5), (got - expect).abs().max()


def test_key_mapping() -> None:
    assert farseg_key("backbone.fc.weight") is None
    assert farseg_key("fpn.inner_blocks.2.0.bias") == "fpn.lateral.2.bias"
    assert farseg_key("fpn.layer_blocks.0.0.weight") == "fpn.output.0.weight"
    assert farseg_key("decoder.blocks.3.2.1.running_var") == "decoder.branches.3.9.running_var"
    assert farseg_key("decoder.classifier.0.weight") == "classifier.weight"
