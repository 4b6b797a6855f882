"""Bundles: safetensors + strict JSON card; never unpickled; seeded init is reproducible."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geoseg.bundle.bundle import load_bundle, read_card
from geoseg.bundle.untrained import init_bundle
from geoseg.errors import BundleError, ModelError
from geoseg.models import create


def test_roundtrip_gives_identical_outputs(unet_rgb: Path) -> None:
    a = load_bundle(unet_rgb)
    b = load_bundle(unet_rgb)
    x = {"image": torch.randn(1, 3, 70, 90)}
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
    assert a.digest == b.digest and len(a.digest) == 64


def test_seeded_init_is_reproducible(tmp_path: Path) -> None:
    p1 = init_bundle("unet", {"image": 2}, 3, seed=5, output=tmp_path / "a")
    p2 = init_bundle("unet", {"image": 2}, 3, seed=5, output=tmp_path / "b")
    p3 = init_bundle("unet", {"image": 2}, 3, seed=6, output=tmp_path / "c")
    w1, w2, w3 = (load_file(str(p / "weights.safetensors")) for p in (p1, p2, p3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w1[k], w3[k]) for k in w1)


def test_card_is_strict(unet_rgb: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(unet_rgb, bad)
    card = json.loads((bad / "card.json").read_text())
    card["tile_sise"] = 3
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="tile_sise"):
        read_card(bad)


def test_pickles_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(BundleError, match="never unpickles"):
        load_bundle(p)
    q = tmp_path / "raw.pkl"
    q.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(BundleError, match="pickled PyTorch checkpoint"):
        read_card(q)


def test_weights_not_matching_the_card(unet_rgb: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "mismatch"
    shutil.copytree(unet_rgb, bad)
    card = json.loads((bad / "card.json").read_text())
    card["arguments"]["encoder"] = "resnet34"
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="do not match the card"):
        load_bundle(bad)


def test_registry_errors() -> None:
    with pytest.raises(ModelError, match="unknown architecture"):
        create("nosuch", 3, 2)
    with pytest.raises(ModelError, match="invalid argument 'encodr'"):
        create("unet", 3, 2, encodr="resnet18")
