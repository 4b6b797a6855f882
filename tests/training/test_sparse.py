"""Sparse labels (issue 16): windows around small polygons, the features split and its folds,
per-pixel models as ONNX bundles (identical to the fitted estimator, tiled = whole array), and
``geoseg train --folds --compare`` end to end on a synthetic scene of small polygons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.bundle.formats import read_model_card
from geoseg.bundle.pixel_onnx import TIE_BREAK, compose, feature_model, save_pixel_model, session
from geoseg.geometry.window import PixelWindow
from geoseg.models.pixel import PixelArgs
from geoseg.training.config import SamplingSpec, TrainConfig
from geoseg.training.prepare import Prepared, prepare
from geoseg.training.sampling import WindowSampler, feature_windows, training_candidates
from geoseg.training.split import assign_folds, feature_units
from tests.support import invoke
from tests.training.sparse_support import CLASSES, SIZE, sparse_scene, zones


def config(tmp: Path, **over: object) -> TrainConfig:
    scenes = over.pop("scenes", None) or [sparse_scene(tmp / "data")]
    base = {"classes": CLASSES, "scenes": scenes,
            "model": {"architecture": "tinycnn", "arguments": {"width": 8}},
            "split": {"by": "features", "val_fraction": 0.3, "gap": 4},
            "steps": 4, "batch": 2, "val_every": 2, "device": "cpu", "threads": 1}  # fmt: skip
    base.update(over)
    return TrainConfig.model_validate(base)


def _prepare(cfg: TrainConfig, tmp: Path) -> Prepared:
    return prepare(cfg, lambda p: Path(p).resolve(), None, "test.yaml", tmp / "cache")


WHOLE = PixelWindow(0, SIZE, 0, SIZE)


def test_windows_around_every_small_polygon(tmp_path: Path) -> None:
    scene = sparse_scene(tmp_path / "data")
    scenes = [{**scene, "id": "a"}, {**scene, "id": "b"}]
    cfg = config(tmp_path, scenes=scenes, split={"by": "scene", "val_scenes": ["a"], "gap": 0},
                 sampling={"window": 32})  # fmt: skip
    prep = _prepare(cfg, tmp_path)
    feats = prep.features
    assert feats is not None and feats[1] is not None  # sampling mode "features" by default
    n_a, f = len(feats[0]), feats[1]
    _, offsets, _, _ = feature_windows(prep.cands, feats, [s.shape for s in prep.splits])
    drawable = np.diff(offsets)[n_a:] > 0
    assert drawable[f.pixels > 0].all()  # every polygon of the training scene has windows
    sampler = WindowSampler(prep.cands, prep.splits, "features", 0, seed=0, feats=feats)
    ids = f.read_ids(WHOLE)
    hit = set()
    for step in range(400):
        s, r0, c0, _ = sampler.draw(step, 0, 0)
        assert s == 1
        hit |= set(np.unique(ids[r0:r0 + 32, c0:c0 + 32]).tolist())
    assert hit - {-1} == set(np.flatnonzero(f.pixels > 0).tolist())  # every polygon is drawn
    # the former rule (5 % of the window labelled) left most small polygons without a window
    old = training_candidates(prep.scans, prep.splits, SamplingSpec(window=32, min_labelled=0.05),
                              0, "test")  # fmt: skip
    _, offsets, _, _ = feature_windows(old, feats, [s.shape for s in prep.splits])
    assert (np.diff(offsets)[n_a:] == 0).sum() > len(f) // 2


@pytest.mark.parametrize("groups", [0, 4])
def test_features_split_holds_out_whole_polygons_with_a_buffer(tmp_path: Path, groups: int) -> None:
    scene = sparse_scene(tmp_path / "data", groups=groups)
    split = {"by": "features", "val_fraction": 0.3, "gap": 4, "seed": 2}
    if groups:
        split["group_field"] = "survey"
    cfg = config(tmp_path, scenes=[scene], split=split)
    prep = _prepare(cfg, tmp_path)
    f, sp = prep.features[0], prep.splits[0]
    held = set(sp.val_features)
    ids = f.read_ids(WHOLE)
    assert held and held < set(np.flatnonzero(f.pixels > 0).tolist())
    assert {int(f.klass[i]) for i in held} == {0, 1, 2}  # stratified: every class held out
    near_held = np.isin(ids, sorted(held))
    for i in range(len(prep.cands)):  # no training window comes within gap of a held-out polygon
        assert not near_held[prep.cands.rect(i).grow(4).intersection(WHOLE).slices].any()
    # validation scores the held-out polygons' own pixels only
    val_lab = prep.val_scenes[0].labels.read(WHOLE)
    assert ((val_lab != 255) == near_held).all()
    if groups:  # a survey is held out whole
        for g in set(f.group.tolist()):
            members = set(np.flatnonzero(f.group == g).tolist())
            assert members <= held or not members & held
    rep = prep.split_report(prep.config)
    assert rep["train_windows_touching_validation"] == 0 and rep["val_features"] == len(held)
    assert "whole label features" in rep["statement"]


def test_folds_partition_the_features(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    held = []
    for fold in range(3):
        split = {"by": "features", "folds": 3, "fold": fold, "gap": 4}
        prep = _prepare(config(tmp_path, split=split), tmp_path)
        held.append(set(prep.splits[0].val_features))
    f = prep.features[0]
    everything = set(np.flatnonzero(f.pixels > 0).tolist())
    assert held[0] | held[1] | held[2] == everything
    assert not (held[0] & held[1] or held[0] & held[2] or held[1] & held[2])
    units = feature_units(prep.features)
    fold = assign_folds(units, 3, seed=cfg.split.seed)
    for k in range(3):  # stratified: each class spread evenly over the folds
        per_fold = np.bincount(fold[[u.klass == k for u in units]], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1


def test_feature_balance_weighs_polygons_not_pixels() -> None:
    from geoseg.training.pixel import sample_weights

    # class 0: one polygon of 100 px and ten of 1 px; class 1: one polygon of 5 px
    y = np.array([0] * 110 + [1] * 5)
    keys = np.array([1] * 100 + list(range(2, 12)) + [20] * 5)
    w = sample_weights(y, keys, "features")
    big, small = w[:100].sum(), w[100:110].sum()
    assert big == pytest.approx(small)  # sqrt(100) = 10 x one 1-px polygon
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())  # classes weigh the same


def _pixels(tmp: Path, local: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Normalised image, feature rows of every pixel, labels, card modalities."""
    from geoseg.scene.scene import Scene

    scene = Scene.open({"image": sparse_scene(tmp / "data")["modalities"]["image"]["path"]})
    arrays, valid = scene.read(WHOLE)
    mean, std = [500.0] * 4, [400.0] * 4
    mods = {"image": ModalityCard(bands=["blue", "green", "red", "nir"], mean=mean, std=std)}
    x = {"image": ((arrays["image"] - np.array(mean)[:, None, None])
                   / np.array(std)[:, None, None]).astype(np.float32)}  # fmt: skip
    rows = session(feature_model(["image"], [4], local)).run(None, {"image": x["image"][None]})[0]
    return x, rows, zones().ravel(), valid, mods


@pytest.mark.parametrize("estimator,local", [("random_forest", 0), ("lightgbm", 3)])
def test_pixel_models_round_trip_through_onnx_bundles(tmp_path: Path, estimator: str,
                                                      local: int) -> None:  # fmt: skip
    from geoseg.inference.engine import open_engine
    from geoseg.training.pixel import fit

    x, rows, y, _, mods = _pixels(tmp_path, local)
    args = PixelArgs(estimator=estimator, trees=30, local=local)
    train = np.random.default_rng(0).choice(len(y), 3000, replace=False)
    est, onx, present = fit(args, rows[train], y[train], None, threads=1)
    card = ModelCard(architecture="pixel", arguments=args.model_dump(mode="json"), modalities=mods,
                     classes=CLASSES, tile_size=SIZE, halo=args.radius, trained=True)  # fmt: skip
    path = save_pixel_model(compose(["image"], [4], local, onx, present, 3), card, tmp_path / "m.onnx")
    assert path.read_bytes()[:1] != b"\x80"  # ONNX (protobuf), never a pickle
    loaded = read_model_card(path)
    assert loaded.architecture == "pixel" and PixelArgs(**loaded.arguments) == args
    probs = open_engine(path).probabilities({"image": x["image"][None]})[0]
    ref = est.predict_proba(rows)
    got = probs.reshape(3, -1).T
    clear = np.abs(np.diff(np.sort(ref, axis=1)[:, -2:], axis=1))[:, 0] > 1e-5
    assert clear.mean() > 0.9
    assert (got.argmax(1) == ref.argmax(1))[clear].all()  # the same decision everywhere
    tie = TIE_BREAK * np.arange(2, -1, -1)  # the tie rule's offsets (class 0 the largest)
    assert np.abs(got - tie - ref).max() < 1e-5


def test_tiled_pixel_prediction_equals_the_whole_array(tmp_path: Path) -> None:
    from geoseg.inference.chunks import ChunkJob
    from geoseg.inference.engine import open_engine
    from geoseg.inference.graph import build_graph, run_graph
    from geoseg.scene.scene import Scene
    from geoseg.store.tiles import TileStore
    from geoseg.tiling.plan import TilePlan
    from geoseg.training.pixel import fit

    x, rows, y, _, mods = _pixels(tmp_path, 0)
    args = PixelArgs(estimator="random_forest", trees=20)
    train = np.random.default_rng(1).choice(len(y), 2000, replace=False)
    _, onx, present = fit(args, rows[train], y[train], None, threads=1)
    card = ModelCard(architecture="pixel", arguments=args.model_dump(mode="json"), modalities=mods,
                     classes=CLASSES, tile_size=48, halo=0, trained=True)  # fmt: skip
    path = save_pixel_model(compose(["image"], [4], 0, onx, present, 3), card, tmp_path / "m.onnx")
    import onnxruntime as ort

    engine = open_engine(path, threads=2)  # tiles of 48 px; ties do not depend on threads
    whole = ort.InferenceSession(str(path)).run(None, {"image": x["image"][None]})[0][0].argmax(0)
    scene = Scene.open({"image": sparse_scene(tmp_path / "data")["modalities"]["image"]["path"]})
    ids = np.array([c["id"] for c in CLASSES], np.uint8)
    for tile, overlap, chunk in [(48, 0, 64), (48, 12, 40)]:
        plan = TilePlan(SIZE, SIZE, tile, overlap, chunk)
        root = tmp_path / f"store-{overlap}"
        store = TileStore.create(root, (SIZE, SIZE), chunk, 3, True, {})
        graph, finals, timings = build_graph(ChunkJob(scene, plan, 4, ids, True), engine,
                                             list(plan.chunks), store)  # fmt: skip
        run_graph(graph, finals + timings, 2)
        tiled = store.reader("classes")(WHOLE)[0]
        assert np.array_equal(tiled, ids[whole])  # exactly, blending or not


def sparse_pipeline(tmp_path: Path, scene: object, name: str, *lines: str) -> Path:
    """A one-step train pipeline on the sparse scene (tinycnn width 8, features split), plus
    the step's ``lines``."""
    extra = "".join(f"    {line}\n" for line in lines)
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(f"""version: 1
name: {name}
workdir: {tmp_path / 'work'}
steps:
  - type: train
    classes: {json.dumps(CLASSES)}
    scenes: [{json.dumps(scene)}]
    model: {{architecture: tinycnn, arguments: {{width: 8}}}}
    split: {{by: features, gap: 4}}
{extra}    batch: 2
    val_every: 2
    device: cpu
    threads: 1
""")
    return pipe


def test_train_folds_and_compare_through_the_cli(tmp_path: Path) -> None:
    scene = sparse_scene(tmp_path / "data")
    pipe = sparse_pipeline(tmp_path, scene, "sparse", "loss: {balance: features}", "steps: 4")
    code, out, err = invoke("train", pipe, "--folds", "2", "--compare", "--no-progress")
    assert code == 0, err
    assert "random_forest mIoU" in out and "compare.md" in out
    run = tmp_path / "work" / "train"
    rep = json.loads((run / "compare.json").read_text())
    assert set(rep["models"]) == {"tinycnn", "random_forest", "lightgbm"}
    for m in rep["models"].values():
        assert len(m["runs"]) == 2 and m["summary"]["miou"]["std"] is not None
    table = (run / "compare.md").read_text()
    assert "| random_forest |" in table and "± " in table
    # the pixel model of fold 0 predicts and scores through `geoseg evaluate --holdout`
    fold = run / "random_forest" / "fold-0"
    code, _, err = invoke("evaluate", "--holdout", fold / "train_report.json", "--model",
                            fold / "model.onnx", "--out", tmp_path / "eval", "--tile", "64")  # fmt: skip
    assert code == 0, err
    ev = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    val = rep["models"]["random_forest"]["runs"][0]
    assert ev["miou"] == pytest.approx(val["miou"]) and ev["pixels"] == val["val_pixels"]


def test_pretraining_initialises_the_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from geoseg.bundle.folder import read_card
    from geoseg.training.loop import train

    scene = sparse_scene(tmp_path / "data")
    pipe = sparse_pipeline(tmp_path, scene, "pre", "pretrain: {steps: 3, batch: 2}", "steps: 2")
    code, out, err = invoke("pretrain", pipe, "--steps", "2", "--no-progress")
    assert code == 0, err
    assert "pre-trained bundle" in out
    run = tmp_path / "work" / "train"
    card = read_card(run / "pretrain")
    assert [c.name for c in card.classes] == ["image:blue", "image:green", "image:red", "image:nir"]
    assert card.metrics["pretraining"]["steps"] == 2  # --steps wins over the pipeline's 3
    caplog.set_level(logging.INFO, logger="geoseg.training")
    cfg = config(tmp_path, scenes=[scene], pretrain={"steps": 3, "batch": 2}, steps=2)
    train(cfg, run, progress=False)  # reuses <run>/pretrain
    assert "initialised 14/16 tensors" in caplog.text  # all but the class head


# ---------------------------------------------------------------------------- the sparse model


def _sparse_model(**args: object):
    import torch

    from geoseg.models import create

    torch.manual_seed(0)
    return create("sparsecnn", {"image": 4}, 3, **{"width": 8, **args})


def test_sparse_model_averages_its_members_probabilities() -> None:
    import torch

    model = _sparse_model(members=3, tta=False).eval()
    x = {"image": torch.randn(2, 4, 20, 24, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        got = model(x).softmax(1)
        members = [m(torch.asinh(x["image"])).softmax(1) for m in model.members]
    assert len({round(float(p[0, 0, 0, 0]), 6) for p in members}) == 3  # members differ
    torch.testing.assert_close(got, torch.stack(members).mean(0), rtol=1e-5, atol=1e-6)


def test_sparse_model_tta_is_the_mean_over_flips_and_rotations() -> None:
    import torch

    model = _sparse_model(members=2, tta=True).eval()
    x = {"image": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))}
    plain = _sparse_model(members=2, tta=False).eval()
    views = []
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                t = torch.rot90(x["image"].flip(-1) if flip else x["image"], k, (-2, -1))
                p = torch.rot90(plain({"image": t}).softmax(1), -k, (-2, -1))
                views.append(p.flip(-1) if flip else p)
        got = model(x).softmax(1)
    assert not torch.allclose(views[0], views[5], atol=1e-4)  # the views differ
    torch.testing.assert_close(got, torch.stack(views).mean(0), rtol=1e-5, atol=1e-6)


def test_each_member_is_trained_on_its_own_loss() -> None:
    import torch
    import torch.nn.functional as F

    from geoseg.training.config import LossSpec
    from geoseg.training.criterion import TrainModule

    model = _sparse_model(members=3).train()
    g = torch.Generator().manual_seed(2)
    x = {"image": torch.randn(2, 4, 12, 12, generator=g)}
    target = torch.randint(0, 3, (2, 12, 12), generator=g)
    target[:, :6] = 255
    out = TrainModule(model, LossSpec(name="ce"), None)(x, target)
    each = [F.cross_entropy(o, target, ignore_index=255) for o in model.member_logits(x)]
    torch.testing.assert_close(out["loss"], torch.stack(each).mean())
    # not the loss of the averaged prediction (that would train one wide model)
    with torch.no_grad():
        mixed = F.nll_loss(model.eval()(x), target, ignore_index=255)
    assert abs(float(mixed) - float(out["loss"].detach())) > 1e-3


def test_the_sparse_recipe_defaults_to_the_sparse_model(tmp_path: Path) -> None:
    scene = sparse_scene(tmp_path / "data")
    cfg = TrainConfig.model_validate({"recipe": "sparse", "classes": CLASSES, "scenes": [scene]})
    assert cfg.model.architecture == "sparsecnn" and cfg.model.arguments == {}
    # a pipeline's own model wins
    own = TrainConfig.model_validate({"recipe": "sparse", "classes": CLASSES, "scenes": [scene],
                                      "model": {"architecture": "unet"}})  # fmt: skip
    assert own.model.architecture == "unet"


def test_tiled_sparse_model_prediction_equals_the_whole_array(tmp_path: Path) -> None:
    import torch

    from geoseg.bundle.bundle import load_bundle, save_bundle
    from geoseg.inference.chunks import ChunkJob
    from geoseg.inference.engine import Engine
    from geoseg.inference.graph import build_graph, run_graph
    from geoseg.scene.scene import Scene
    from geoseg.store.tiles import TileStore
    from geoseg.tiling.plan import TilePlan

    model = _sparse_model(members=2, tta=True)
    with torch.no_grad():  # make classes compete so the argmax is not constant
        for m in model.members:
            m.context[-1].weight.mul_(8)
    mods = {"image": ModalityCard(bands=["blue", "green", "red", "nir"], mean=[500.0] * 4,
                                  std=[400.0] * 4)}  # fmt: skip
    card = ModelCard(architecture="sparsecnn", arguments=model.args.model_dump(mode="json"),
                     modalities=mods, classes=CLASSES, tile_size=48, halo=model.halo)  # fmt: skip
    engine = Engine(load_bundle(save_bundle(model.eval(), card, tmp_path / "model")))
    scene = Scene.open({"image": sparse_scene(tmp_path / "data")["modalities"]["image"]["path"]})
    arrays, valid = scene.read(WHOLE)
    x = engine.normalise(arrays, valid)
    ref = engine.probabilities({k: v[None] for k, v in x.items()})[0]
    assert len(np.unique(ref.argmax(0)[valid])) == 3
    ids = np.array([c["id"] for c in CLASSES], np.uint8)
    for tile, overlap, chunk in [(48, 16, 64), (40, 8, 100)]:
        plan = TilePlan(SIZE, SIZE, tile, overlap, chunk)
        store = TileStore.create(tmp_path / f"s{tile}", (SIZE, SIZE), chunk, 3, True, {})
        graph, finals, timings = build_graph(ChunkJob(scene, plan, 4, ids, True), engine,
                                             list(plan.chunks), store)  # fmt: skip
        run_graph(graph, finals + timings, 1)
        cls = store.reader("classes")(WHOLE)[0]
        probs = store.reader("probabilities")(WHOLE)
        # the same class wherever it is not a near-tie (probabilities are stored as x/254)
        top = np.sort(ref, 0)
        clear = valid & (top[-1] - top[-2] > 0.02)
        assert clear.mean() > 0.9 and (cls[clear] == ids[ref.argmax(0)][clear]).all()
        assert np.abs(probs[:, valid].astype(float) / 254 - ref[:, valid]).max() < 0.02
