"""torchgeo checkpoints into bundles: a SemanticSegmentationTask built and saved by Lightning in
the test, imported, predicts as the task does on the same tiles; a FarSeg state dict likewise;
a checkpoint needing code to unpickle is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle.bundle import load_bundle
from geoseg.bundle.card import normalise
from geoseg.bundle.torchgeo_import import import_torchgeo
from geoseg.errors import BundleError
from tests.support import invoke

trainers = pytest.importorskip("torchgeo.trainers")
pl = pytest.importorskip("lightning.pytorch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn_stats(model: torch.nn.Module) -> None:
    torch.manual_seed(7)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)


def _task_checkpoint(path: Path, model: str) -> torch.nn.Module:
    """A torchgeo task saved as Lightning saves it (Trainer.save_checkpoint)."""
    torch.manual_seed(0)
    task = trainers.SemanticSegmentationTask(model=model, backbone="resnet18", in_channels=4,
                                             num_classes=3, loss="ce")  # fmt: skip
    _bn_stats(task)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", max_epochs=1)  # fmt: skip
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return task.eval()


@pytest.mark.parametrize("model", ["unet", "deeplabv3+"])
def test_task_checkpoint_round_trip(model: str, tmp_path: Path) -> None:
    task = _task_checkpoint(tmp_path / "task.ckpt", model)
    out = import_torchgeo(tmp_path / "task.ckpt", tmp_path / "bundle",
                          roles=["red", "green", "blue", "nir"],
                          class_names=["background", "field", "boundary"], tile=64)  # fmt: skip
    bundle = load_bundle(out)
    card = bundle.card
    assert card.architecture == {"unet": "unet", "deeplabv3+": "deeplabv3plus"}[model]
    assert [c.name for c in card.classes] == ["background", "field", "boundary"]
    assert card.modalities["image"].bands == ["red", "green", "blue", "nir"]
    raw = np.random.default_rng(0).integers(0, 256, (4, 64, 64)).astype(np.float32)
    # the card normalises as torchgeo's data modules do by default: x / 255
    x = normalise(card, {"image": raw}, np.ones((64, 64), bool))["image"]
    assert np.allclose(x, raw / 255)
    tile = torch.from_numpy(x)[None]
    with torch.no_grad():
        expect, got = task(tile), bundle.model({"image": tile})
    assert torch.allclose(got, expect, atol=1e-5, rtol=1e-5), (got - expect).abs().max()
    assert card.training["imported_from"]["model"] == model
    if model == "unet":  # pathlib paths (Lightning callbacks keep some) are allowed
        ckpt = torch.load(tmp_path / "task.ckpt", weights_only=True)
        ckpt["callbacks"] = {"ModelCheckpoint": {"dirpath": Path("/runs/ckpts")}}
        torch.save(ckpt, tmp_path / "paths.ckpt")
        assert load_bundle(import_torchgeo(tmp_path / "paths.ckpt", tmp_path / "p")).card.num_classes == 3


def test_farseg_state_dict_and_cli(tmp_path: Path) -> None:
    from torchgeo.models import FarSeg

    torch.manual_seed(1)
    theirs = FarSeg(backbone="resnet18", classes=2, backbone_pretrained=False)
    _bn_stats(theirs)
    theirs.eval()
    torch.save(theirs.state_dict(), tmp_path / "farseg.pth")
    code, _, err = invoke("model", "import", tmp_path / "farseg.pth", "--from", "torchgeo",
                            "--roles", "red,green,blue", "--mean", "123.675,116.28,103.53",
                            "--std", "58.395,57.12,57.375", "--tile", "64",
                            "-o", tmp_path / "b")  # fmt: skip
    assert code == 0, err
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["arguments"]["classifier_kernel"] == 3 and card["modalities"]["image"]["std"][0] == 58.395
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_bundle(tmp_path / "b").model({"image": x}), theirs(x), atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo unpickled > evil-ran.txt",))


class _Custom:
    pass


def test_checkpoint_needing_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "unet", "x": _Evil()}},
               tmp_path / "evil.ckpt")  # fmt: skip
    with pytest.raises(BundleError, match=r"refused, unpickling it needs .*system"):
        import_torchgeo(tmp_path / "evil.ckpt", tmp_path / "b")
    assert not (tmp_path / "evil-ran.txt").exists()
    torch.save({"state_dict": {}, "hyper_parameters": {"obj": _Custom()}}, tmp_path / "c.ckpt")
    code, _, err = invoke("model", "import", tmp_path / "c.ckpt", "--from", "torchgeo",
                          "-o", tmp_path / "b")  # fmt: skip
    assert code == 2 and "test_import._Custom" in err and "allow-list" in err
    assert not (tmp_path / "b").exists()
