"""Training pieces: honest splits, window sampling, augmentations, schedules, losses, exact
resume, safetensors checkpoints, normalisation statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.geometry.window import PixelWindow
from geoseg.training.augment import geometric, photometric
from geoseg.training.config import AugmentSpec, ScheduleSpec, TrainConfig
from geoseg.training.criterion import auto_class_weights, soft_dice_loss
from geoseg.training.optim import lr_factor
from geoseg.training.prepare import Prepared, prepare
from geoseg.training.sampling import WindowSampler
from tests.support import DATA

ALEX = DATA / "alexandria"
CLASSES = [{"id": 0, "name": "background"}, {"id": 1, "name": "building"}]


def scene(sid: str = "alexandria", split: str | None = None) -> dict:
    out = {"id": sid, "modalities": {"height": str(ALEX / "hag.tif"), "dsm": str(ALEX / "dsm.tif")},
           "labels": {"path": str(ALEX / "buildings.geojson"), "class_value": 1}}
    return {**out, "split": split} if split else out


def config(**over: object) -> TrainConfig:
    base = {"classes": CLASSES, "scenes": [scene()], "model": {"architecture": "tinycnn"},
            "vector_labels": {"background": 0, "extent": "labels"},
            "sampling": {"window": 32}, "steps": 6, "batch": 2, "val_every": 3,
            "device": "cpu", "threads": 1}  # fmt: skip
    base.update(over)
    return TrainConfig.model_validate(base)


def _prepare(cfg: TrainConfig, tmp_path: Path) -> Prepared:
    return prepare(cfg, lambda p: Path(p).resolve(), None, "test.yaml", tmp_path / "cache")


@pytest.mark.parametrize("split", [
    {"by": "blocks", "block": 48, "val_fraction": 0.3, "gap": 8, "seed": 3},
    {"by": "stripe", "val_fraction": 0.25, "gap": 16, "axis": "columns", "position": "start"},
])  # fmt: skip
def test_validation_never_overlaps_training_windows(tmp_path: Path, split: dict) -> None:
    cfg = config(split=split)
    prep = _prepare(cfg, tmp_path)
    gap = cfg.split.gap
    vals = [v for s in prep.splits for v in s.val]
    assert vals and len(prep.cands) > 5
    for i in range(len(prep.cands)):
        grown = prep.cands.rect(i).grow(gap)
        assert not any(grown.intersects(v) for v in vals)
    sampler = WindowSampler(prep.cands, prep.splits, "balanced", gap, seed=0)
    for step in range(300):
        _, r0, c0, _ = sampler.draw(step, 0, 0)
        win = PixelWindow(r0, r0 + 32, c0, c0 + 32).grow(gap)
        assert not any(win.intersects(v) for v in vals)
        assert 0 <= r0 <= 259 - 32 and 0 <= c0 <= 283 - 32
    for t in prep.val_tiles:  # scored pixels lie in validation areas, tiles do not overlap
        assert any(t.core.r0 >= v.r0 and t.core.r1 <= v.r1 and t.core.c0 >= v.c0
                   and t.core.c1 <= v.c1 for v in vals)  # fmt: skip
    cores = [t.core for t in prep.val_tiles]
    assert not any(a.intersects(b) for i, a in enumerate(cores) for b in cores[i + 1:])
    assert prep.split_report(cfg)["train_windows_touching_validation"] == 0


def test_split_by_scene(tmp_path: Path) -> None:
    cfg = config(scenes=[scene("a"), scene("b", "val")], split={"by": "scene"})
    prep = _prepare(cfg, tmp_path)
    assert set(prep.cands.scene.tolist()) == {0}  # training windows only from scene a
    assert {t.scene for t in prep.val_tiles} == {1}
    assert "whole scenes ['b']" in prep.split_report(cfg)["statement"]
    with pytest.raises(ConfigError, match="needs validation scenes"):
        _prepare(config(scenes=[scene("a"), scene("b")], split={"by": "scene"}), tmp_path)


def test_balanced_sampling_favours_the_rare_class(tmp_path: Path) -> None:
    prep = _prepare(config(split={"by": "stripe", "gap": 8}), tmp_path)
    share = {}
    for mode in ("random", "balanced"):
        sampler = WindowSampler(prep.cands, prep.splits, mode, 8, seed=1)
        counts = np.zeros(2)
        for step in range(400):
            i = sampler.draw(step, 0, 0)
            hit = (prep.cands.scene == i[0]) & (prep.cands.r0 <= i[1]) & (prep.cands.c0 <= i[2])
            counts += prep.cands.counts[np.nonzero(hit)[0][-1]]
        share[mode] = counts[1] / counts.sum()
    assert share["balanced"] > share["random"]
    # reproducible: the window of (seed, step, rank, k) never changes
    a = WindowSampler(prep.cands, prep.splits, "balanced", 8, seed=5).draw(17, 1, 2)[:3]
    b = WindowSampler(prep.cands, prep.splits, "balanced", 8, seed=5).draw(17, 1, 2)[:3]
    assert a == b


def test_normalisation_from_training_area(tmp_path: Path) -> None:
    import rasterio

    prep = _prepare(config(split={"by": "stripe", "gap": 8}), tmp_path)
    assert prep.norm["height"] == {"mean": [0.0], "std": [10.0], "how": "fixed"}
    assert prep.norm["dsm"]["how"] == "stats"
    with rasterio.open(ALEX / "dsm.tif") as ds:
        dsm = ds.read(1, masked=True)
    val, cell = prep.splits[0].val[0], prep.scans[0].cell
    mask = np.ones(dsm.shape, bool)
    # statistics leave out the cells (window/4 px) that touch the validation stripe
    mask[val.r0 // cell * cell:val.r1, val.c0 // cell * cell:val.c1] = False
    assert prep.norm["dsm"]["mean"][0] == pytest.approx(float(dsm[mask].mean()), rel=1e-6)
    assert prep.norm["dsm"]["std"][0] == pytest.approx(float(dsm[mask].std()), rel=1e-4)


def test_geometric_augmentation_moves_everything_together() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16)).astype(np.float32)
    height = img[:1] * 2
    target = (img[0] > 0.5).astype(np.uint8)
    spec = AugmentSpec(flip=True, rotate=True)
    for seed in range(12):
        arrays, lab = geometric({"image": img, "height": height}, target, spec,
                                np.random.default_rng(seed))  # fmt: skip
        assert np.array_equal(arrays["height"], arrays["image"][:1] * 2)
        assert np.array_equal(lab, (arrays["image"][0] > 0.5).astype(np.uint8))


def test_photometric_augmentation_touches_imagery_only() -> None:
    arrays = {"image": np.ones((3, 8, 8), np.float32), "height": np.ones((1, 8, 8), np.float32)}
    valid = np.ones((8, 8), bool)
    valid[0] = False
    spec = AugmentSpec(brightness=0.5, contrast=0.3, noise=0.1)
    out = photometric(arrays, valid, spec, np.random.default_rng(0))
    assert np.array_equal(out["height"], arrays["height"])
    assert not np.allclose(out["image"][:, 1:], 1.0)
    assert np.array_equal(out["image"][:, 0], arrays["image"][:, 0])  # nodata left alone


def test_schedules() -> None:
    poly = ScheduleSpec(name="poly", power=0.9)
    assert lr_factor(poly, 0, 100) == 1.0
    assert lr_factor(poly, 50, 100) == pytest.approx(0.5**0.9)
    cos = ScheduleSpec(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(cos, 0, 110) == pytest.approx(0.1)  # warm-up (step+1)/10
    assert lr_factor(cos, 9, 110) == pytest.approx(1.0)
    assert lr_factor(cos, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    step = ScheduleSpec(name="step", step_size=10, gamma=0.5)
    assert lr_factor(step, 25, 100) == 0.25


def test_recipes_are_presets() -> None:
    cfg = config(recipe="farseg", steps=10)
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.007 and cfg.clip_grad == 35.0
    assert cfg.steps == 10 and cfg.sampling.window == 32  # explicit keys win


def test_losses() -> None:
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 10.0
    target = torch.ones(1, 4, 4, dtype=torch.long)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.0, abs=1e-3)
    target[0, 0] = 255  # ignored pixels do not count
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.0, abs=1e-3)
    w = auto_class_weights([900, 100, 0])
    assert w[1] > w[0] and w[2] == 1.0 and np.mean(w[:2]) == pytest.approx(1.0)


def test_resume_is_exact_and_checkpoints_are_not_pickles(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from geoseg.training.loop import train

    cfg = config(split={"by": "stripe", "gap": 8}, loss={"name": "ce_dice",
                                                        "class_weights": "auto"})
    straight = train(cfg, tmp_path / "a", progress=False)
    first = train(cfg, tmp_path / "b", progress=False, stop_after=4)
    assert first.status == "paused"
    meta = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert meta["step"] == 4
    ckpt = tmp_path / "b" / "checkpoint" / "state.safetensors"
    assert ckpt.read_bytes()[:1] != b"\x80"  # not a pickle
    assert any(k.startswith("optim.") for k in load_file(str(ckpt)))
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed.status == "finished"
    wa = load_file(str(straight.last / "weights.safetensors"))
    wb = load_file(str(resumed.last / "weights.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    for ra, rb in zip(ha, hb, strict=True):
        assert ra["val_miou"] == rb["val_miou"] and ra["train_loss"] == pytest.approx(rb["train_loss"])
    again = train(cfg, tmp_path / "b", progress=False)  # finished: nothing more to do
    assert again.status == "finished"
