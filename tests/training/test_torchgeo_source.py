"""torchgeo datasets as training sources: a tiny LoveDA folder in its real layout (trained on,
end to end) and a RasterDataset GeoDataset with a DEM and labels (chips split honestly)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from PIL import Image

from geoseg.errors import ConfigError, InputError
from geoseg.evaluation.evaluate import holdout_regions
from geoseg.geometry.window import PixelWindow
from geoseg.training.config import TrainConfig
from geoseg.training.loop import train
from geoseg.training.model import build_model, make_card
from geoseg.training.prepare import prepare
from tests.support import write_geotiff

pytest.importorskip("torchgeo")

LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]


def _loveda(root: Path, rng: np.random.Generator) -> Path:
    """LoveDA's layout: <Split>/<Urban|Rural>/images_png/N.png and masks_png/N.png; mask 0 is
    no-data, 1..7 the classes."""
    for split, names in (("Train", ["10", "11", "12"]), ("Val", ["20", "21"])):
        for scene in ("Urban",):
            img_dir = root / split / scene / "images_png"
            mask_dir = root / split / scene / "masks_png"
            img_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            for n in names:
                mask = rng.integers(0, 8, (48, 48), dtype=np.uint8)
                mask[:8] = 0  # a no-data strip
                img = (mask[..., None] * 30 + rng.integers(0, 20, (48, 48, 3))).astype(np.uint8)
                Image.fromarray(img).save(img_dir / f"{n}.png")
                Image.fromarray(mask).save(mask_dir / f"{n}.png")
    return root


def _cfg(**over: object) -> TrainConfig:
    base = {"model": {"architecture": "tinycnn", "arguments": {"width": 4}},
            "sampling": {"window": 32, "min_labelled": 0.01}, "split": {"gap": 0},
            "steps": 3, "batch": 2, "val_every": 3, "device": "cpu", "amp": False,
            "augment": {"flip": False, "rotate": False}}  # fmt: skip
    return TrainConfig(**{**base, **over})


def test_loveda_folder_trains_with_the_dataset_classes_and_roles(tmp_path: Path) -> None:
    root = _loveda(tmp_path / "loveda", np.random.default_rng(0))
    cfg = _cfg(source={"torchgeo": "LoveDA", "root": str(root), "args": {"scene": ["urban"]}})
    res = train(cfg, tmp_path / "run", progress=False)
    card = json.loads((res.best / "card.json").read_text())
    assert [c["name"] for c in card["classes"]] == LOVEDA_CLASSES
    assert [c["id"] for c in card["classes"]] == list(range(1, 8))  # mask 0 (no-data) ignored
    assert card["modalities"]["image"]["bands"] == ["red", "green", "blue"]
    scenes = card["training"]["scenes"]
    assert scenes["torchgeo"] == "LoveDA" and scenes["train_samples"] == 3
    assert scenes["val_samples"] == 2
    report = json.loads(res.report.read_text())
    assert report["split"]["train_windows_touching_validation"] == 0
    assert card["gsd"] == 0.3
    with pytest.raises(InputError, match="torchgeo dataset LoveDA"):
        holdout_regions(res.report)  # its held-out samples are not catalog scenes


def test_pretrained_weights_set_the_normalisation_of_their_bands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import timm
    import torch

    from geoseg.models import torchgeo_weights as tw

    name = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"  # B4, B3, B2 = red, green, blue; /10000
    monkeypatch.setenv(tw.CACHE_ENV, str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    torch.save(timm.create_model("resnet18", in_chans=3).state_dict(),
               tmp_path / "weights" / tw.resolve(name).filename)  # fmt: skip
    root = _loveda(tmp_path / "loveda", np.random.default_rng(3))
    cfg = _cfg(source={"torchgeo": "LoveDA", "root": str(root), "args": {"scene": ["urban"]}},
               model={"architecture": "unet", "arguments": {"encoder": "resnet18",
                      "encoder_weights": name}}, steps=1, val_every=1, batch=2)  # fmt: skip
    prep = prepare(cfg, lambda p: Path(p), None, "test", tmp_path / "cache")
    model = build_model(cfg, prep, lambda p: Path(p))
    assert prep.norm["image"] == {"mean": [0.0] * 3, "std": [10000.0] * 3,
                                  "how": f"pretrained {name}"}  # fmt: skip
    card = make_card(cfg, prep, model, {}, 0, "test", {"statement": ""})
    assert card.modalities["image"].std == [10000.0] * 3
    assert card.pretrained[0].name == name and card.pretrained[0].new_bands == []


def test_loveda_without_val_split_holds_out_samples(tmp_path: Path) -> None:
    root = _loveda(tmp_path / "loveda", np.random.default_rng(1))
    cfg = _cfg(source={"torchgeo": "LoveDA", "root": str(root), "val_split": None,
                       "args": {"scene": ["urban"]}}, split={"val_fraction": 0.34, "gap": 0})
    prep = prepare(cfg, lambda p: Path(p), None, "test", tmp_path / "cache")
    assert sum(not s.train for s in prep.splits) == 1 and len(prep.splits) == 3
    # the scan is cached: a second prepare reads it back with the same shapes
    again = prepare(cfg, lambda p: Path(p), None, "test", tmp_path / "cache")
    assert [s.shape for s in again.scenes] == [s.shape for s in prep.scenes] == [(48, 48)] * 3
    assert np.array_equal(again.scans[0].counts, prep.scans[0].counts)


def test_unknown_dataset_lists_the_supported_ones(tmp_path: Path) -> None:
    cfg = _cfg(source={"torchgeo": "NoSuchSet", "root": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"LoveDA.*Potsdam2D|Potsdam2D.*LoveDA"):
        prepare(cfg, lambda p: Path(p), None, "pipe.yaml", tmp_path / "cache")
    missing = _cfg(source={"torchgeo": "LoveDA", "root": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="Dataset not found"):
        prepare(missing, lambda p: Path(p), None, "pipe.yaml", tmp_path / "cache")


def test_rasterdataset_with_dem_and_labels_splits_chips_apart(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    t = Affine(1, 0, 500000, 0, -1, 5800000)
    labels = rng.integers(0, 3, (1, 128, 128), dtype=np.uint8)
    for sub, data in (("image", (labels * 50 + 10).repeat(3, 0).astype(np.uint16)),
                      ("dem", rng.normal(100, 5, (1, 128, 128)).astype(np.float32)),
                      ("labels", labels)):
        (tmp_path / sub).mkdir()
        write_geotiff(tmp_path / sub / f"{sub}.tif", data, transform=t)
    classes = [{"id": i, "name": n} for i, n in enumerate(["soil", "crop", "water"])]
    cfg = _cfg(classes=classes, source={
        "torchgeo": "RasterDataset", "paths": str(tmp_path / "image"), "roles": ["red", "green", "blue"],
        "modalities": {"dem": {"paths": str(tmp_path / "dem")}},
        "labels": {"paths": str(tmp_path / "labels")}, "chip": 32, "train_chips": 6},
        split={"val_fraction": 0.25, "gap": 8, "axis": "columns"})  # fmt: skip
    prep = prepare(cfg, lambda p: Path(p), None, "test", tmp_path / "cache")
    assert prep.modalities == {"image": 3, "dem": 1}
    assert prep.roles == {"image": ["red", "green", "blue"], "dem": ["dem"]}
    train_box, val_box = prep.source["train_roi"], prep.source["val_roi"]
    assert train_box[2] + 8 <= val_box[0] + 1e-6  # gap of 8 px (1 m pixels) between the boxes
    for s in prep.scenes:
        x = s.key[0]
        box = train_box if s.split == "train" else val_box
        assert box[0] - 1e-6 <= x.start and x.stop <= box[2] + 1e-6
    arrays, target, valid = prep.scenes[0].read(_full(prep.scenes[0]))
    assert arrays["image"].shape == (3, 32, 32) and arrays["dem"].shape == (1, 32, 32)
    assert valid.all() and set(np.unique(target)) <= {0, 1, 2}
    # image = labels * 50 + 10 in every band: the chip's labels and image agree
    assert np.array_equal(target.astype(np.int64) * 50 + 10, arrays["image"][0].astype(np.int64))
    # the label class survives pickling into a fresh process (spawned loader workers)
    import pickle

    from geoseg.training import torchgeo_geo

    cls = pickle.loads(pickle.dumps(torchgeo_geo.RasterDatasetLabels))
    assert cls.is_image is False and cls is torchgeo_geo.RasterDatasetLabels


def _full(scene: object) -> PixelWindow:
    return PixelWindow(0, scene.shape[0], 0, scene.shape[1])
