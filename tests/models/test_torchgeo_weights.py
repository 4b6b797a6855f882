"""torchgeo weights by name: resolution through torchgeo's API, the local cache (files written in
torchgeo's key layout under the names torch hub gives them), band mapping by role,
normalisation into the card, and the refusals (missing file, pickled code, wrong bands)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle.bundle import load_bundle
from geoseg.bundle.untrained import init_bundle
from geoseg.errors import BundleError, InputError, ModelError
from geoseg.models import create
from geoseg.models import torchgeo_weights as tw
from tests.support import invoke, write_geotiff

tgm = pytest.importorskip("torchgeo.models")
timm = pytest.importorskip("timm")

ETM = "torchgeo:ResNet18_Weights.LANDSAT_ETM_SR_MOCO"  # SR_B1..B5, SR_B7: 6 bands, /255
S2RGB = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"  # B4, B3, B2: /10000

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_weight(cache: Path, name: str, seed: int) -> dict[str, torch.Tensor]:
    """The file torchgeo would download, in its layout: a timm ResNet state dict (fc included)
    saved by torch.save under the URL's last part."""
    w = tw.resolve(name)
    torch.manual_seed(seed)
    state = timm.create_model(w.model, in_chans=len(w.bands)).state_dict()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / os.path.basename(w.url))
    return state


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv(tw.CACHE_ENV, str(folder))
    return folder


def test_resolution_through_torchgeo() -> None:
    s2 = tw.resolve("torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO")
    assert s2.model == "resnet50" and len(s2.bands) == 13
    assert s2.url.endswith("/resnet50_sentinel2_all_moco-df8b932e.pth")
    assert s2.filename == "resnet50_sentinel2_all_moco-df8b932e.pth"
    assert s2.roles[1:4] == ("blue", "green", "red") and s2.roles[8] == "nir08"
    assert s2.roles[-2:] == ("swir16", "swir22") and s2.licence == "CC-BY-4.0"
    assert s2.mean == (0.0,) * 13 and s2.std == (10000.0,) * 13
    etm = tw.resolve(ETM)
    assert etm.bands == ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
    assert etm.roles == ("blue", "green", "red", "nir", "swir16", "swir22")
    assert etm.std == (255.0,) * 6 and etm.licence == "CC0-1.0"
    # Landsat 8 OLI's B5 is nir, Landsat 7 ETM+'s B5 is swir16: the sensor decides
    assert tw.resolve("torchgeo:ResNet50_Weights.LANDSAT_OLI_SR_MOCO").roles[4] == "nir"
    # an alias member (SENTINEL1_GRD_MOCO = SENTINEL1_ALL_MOCO) resolves too
    assert tw.resolve("torchgeo:ResNet50_Weights.SENTINEL1_GRD_MOCO").roles == ("vv", "vh")
    with pytest.raises(ModelError, match=r"no weight 'ResNet18_Weights\.NOPE'"):
        tw.resolve("torchgeo:ResNet18_Weights.NOPE")
    with pytest.raises(ModelError, match="ResNet encoder weights"):
        tw.resolve("torchgeo:ViTSmall16_Weights.SENTINEL2_ALL_DINO")


@pytest.mark.parametrize("name", ["torchgeo:ResNet18_Weights.SENTINEL2_RGB_SECO", ETM,
                                  "torchgeo:ResNet50_Weights.SENTINEL2_ALL_SOFTCON"])
def test_folded_normalisation_equals_the_weights_transforms(name: str) -> None:
    w = tw.resolve(name)
    weight = tgm.get_weight(name.removeprefix("torchgeo:"))
    x = torch.rand(1, len(w.bands), 8, 8, dtype=torch.float64) * 3000
    expect = x.clone()[0]
    for step in weight.transforms:
        if type(step).__name__ == "Normalize":
            expect = step(expect)
    mean = torch.tensor(w.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(w.std, dtype=torch.float64)[:, None, None]
    assert torch.allclose((x[0] - mean) / std, expect, rtol=1e-9, atol=1e-9)


def test_cache_file_is_the_one_torchgeo_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no GEOSEG_WEIGHTS_DIR: the default cache is torch hub's checkpoints folder, where
    # torchgeo's own loader (load_state_dict_from_url) looks, without network
    monkeypatch.delenv(tw.CACHE_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert tw.cache_dir() == tmp_path / "hub" / "checkpoints"
    _write_weight(tw.cache_dir(), ETM, seed=1)
    theirs = tgm.resnet18(weights=tgm.get_weight(ETM.removeprefix("torchgeo:")))
    roles = list(tw.resolve(ETM).roles)
    ours = create("unet", {"image": 6}, 2, encoder="resnet18", encoder_weights=ETM,
                  band_roles={"image": roles})  # fmt: skip
    assert torch.equal(ours.net.encoder.conv1.weight, theirs.conv1.weight)
    assert torch.equal(ours.net.encoder.layer4[1].bn2.running_var, theirs.layer4[1].bn2.running_var)


ROLES = ["swir2", "red", "nir", "ndsm", "blue", "green", "swir1"]  # shuffled, aliases, extra ndsm


@pytest.mark.parametrize("name", ["farseg", "deeptrinet", "unet", "hpclnet"])
def test_bands_are_mapped_by_role(name: str, cache: Path) -> None:
    state = _write_weight(cache, ETM, seed=2)
    small = {"deeptrinet": {"decoder_channels": 16}, "farseg": {"fpn_channels": 32,
             "decoder_channels": 16}, "hpclnet": {"decoder_channels": 16, "queue_size": 8}}  # fmt: skip
    mods = {"image": 7, "dem": 1} if name == "hpclnet" else {"image": 7}
    roles = {"image": ROLES, "dem": ["dem"]}
    model = create(name, mods, 3, encoder="resnet18", encoder_weights=ETM, band_roles=roles,
                   **small.get(name, {}))  # fmt: skip
    encoder = model.pretrained_targets()[0][1]
    conv = encoder.conv1.weight
    src = state["conv1.weight"]  # blue, green, red, nir, swir16, swir22
    for i, j in enumerate([5, 2, 3, None, 0, 1, 4]):
        assert torch.equal(conv[:, i], torch.zeros_like(conv[:, i]) if j is None else src[:, j])
    assert torch.equal(encoder.layer3[0].downsample[0].weight, state["layer3.0.downsample.0.weight"])
    rec = model.pretrained[0]
    assert rec["new_bands"] == ["ndsm"] and rec["argument"] == "encoder_weights"
    assert rec["normalisation"]["image"][3] is None and rec["normalisation"]["image"][0] == [0.0, 255.0]


def test_missing_roles_and_wrong_encoder_are_refused(cache: Path) -> None:
    _write_weight(cache, ETM, seed=3)
    with pytest.raises(InputError, match=r"needs band roles \['swir22'\].*lacks"):
        create("unet", {"image": 5}, 2, encoder="resnet18", encoder_weights=ETM,
               band_roles={"image": ["blue", "green", "red", "nir", "swir16"]})  # fmt: skip
    with pytest.raises(InputError, match="band roles of modality 'image' are needed"):
        create("unet", {"image": 6}, 2, encoder="resnet18", encoder_weights=ETM)
    with pytest.raises(ModelError, match="set encoder: resnet18"):
        create("farseg", {"image": 6}, 2, encoder="resnet34", encoder_weights=ETM,
               band_roles={"image": list(tw.resolve(ETM).roles)})  # fmt: skip


def test_normalisation_and_provenance_go_into_the_card(cache: Path, tmp_path: Path) -> None:
    _write_weight(cache, ETM, seed=4)
    out = init_bundle("farseg", {"image": 7}, 3, {"encoder": "resnet18", "encoder_weights": ETM,
                      "fpn_channels": 32, "decoder_channels": 16}, tile=64,
                      roles={"image": ROLES}, output=tmp_path / "b")  # fmt: skip
    card = json.loads((out / "card.json").read_text())
    image = card["modalities"]["image"]
    assert image["bands"] == ROLES
    assert image["std"] == [255.0, 255.0, 255.0, 1.0, 255.0, 255.0, 255.0]  # ndsm keeps its own
    (rec,) = card["pretrained"]
    assert rec["name"] == ETM and rec["licence"] == "CC0-1.0" and rec["new_bands"] == ["ndsm"]
    assert rec["url"] == tw.resolve(ETM).url and rec["source"].startswith("torchgeo 0.8")
    # a bundle never needs the pretrained file again: its own weights are loaded
    (cache / tw.resolve(ETM).filename).unlink()
    bundle = load_bundle(out)
    assert bundle.card.arguments["encoder_weights"] == ETM


def test_missing_file_is_one_line_naming_it(cache: Path, tmp_path: Path) -> None:
    path = cache / tw.resolve(S2RGB).filename
    code, _, err = invoke("model", "init", "unet", "--weights", S2RGB, "--classes", "2",
                          "-o", tmp_path / "b")  # fmt: skip
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert str(path) in last and tw.resolve(S2RGB).url in last and "geoseg weights fetch" in last
    assert len(err.strip().splitlines()) == 1


def test_fetch_offline_is_one_line_and_leaves_no_file(cache: Path) -> None:
    code, _, err = invoke("weights", "fetch", S2RGB)  # the suite's network guard refuses
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"download of {tw.resolve(S2RGB).url} failed" in err
    assert not any(cache.iterdir())  # no partial download under any name


def test_model_init_takes_the_weights_bands_and_roles(cache: Path, tmp_path: Path) -> None:
    _write_weight(cache, S2RGB, seed=5)
    code, out, err = invoke("model", "init", "deeplabv3plus", "--weights", S2RGB, "--classes", "2",
                            "--tile", "64", "-o", tmp_path / "b")  # fmt: skip
    assert code == 0, err
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert card["arguments"]["encoder"] == "resnet18"
    assert card["modalities"]["image"]["bands"] == ["red", "green", "blue"]
    assert card["modalities"]["image"]["std"] == [10000.0] * 3
    code, out, _ = invoke("weights", "list", "--cached")
    assert code == 0 and f"* {S2RGB}" in out and ETM not in out


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo unpickled > evil-ran.txt",))


def test_pickle_carrying_code_is_refused(cache: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil()}, cache / tw.resolve(ETM).filename)
    with pytest.raises(BundleError, match=r"refused.*needs code to unpickle \(.*system\)"):
        create("unet", {"image": 6}, 2, encoder="resnet18", encoder_weights=ETM,
               band_roles={"image": list(tw.resolve(ETM).roles)})  # fmt: skip
    assert not (tmp_path / "evil-ran.txt").exists()


class _Blocker:
    """A meta path finder refusing torchgeo and lightning: importing them fails."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in {"torchgeo", "lightning", "pytorch_lightning"}:
            raise ImportError(f"{name} imported during prediction")


def test_predict_with_a_pretrained_bundle_does_not_import_torchgeo(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _write_weight(cache, S2RGB, seed=6)
    bundle = init_bundle("unet", {"image": 3}, 2, {"encoder": "resnet18", "encoder_weights": S2RGB},
                         tile=64, roles={"image": ["red", "green", "blue"]},
                         output=tmp_path / "b")  # fmt: skip
    image = write_geotiff(tmp_path / "s2.tif", np.random.default_rng(0).integers(
        0, 3000, (3, 64, 64)).astype(np.uint16))  # fmt: skip
    monkeypatch.setenv(tw.CACHE_ENV, str(tmp_path / "empty"))  # the weight file is not needed
    for name in [m for m in sys.modules if m.split(".")[0] in {"torchgeo", "lightning"}]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Blocker(), *sys.meta_path])
    code, _, err = invoke("predict", image, "--model", bundle, "--out", tmp_path / "out",
                          "--workers", "1")  # fmt: skip
    assert code == 0, err
    assert any((tmp_path / "out").rglob("*.tif"))
