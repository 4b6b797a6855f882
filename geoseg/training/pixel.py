"""Training of the ``pixel`` family: a random forest or gradient boosting on labelled pixels.

The classical baseline of remote sensing, inside geoseg: the same catalog, labels, split,
normalisation and spectral-index modalities as every deep recipe; the labelled pixels of the
training area (``gap`` pixels plus the feature window away from validation) are read chunk by
chunk, their features computed by the model's own ONNX feature graph, a seeded sample of at
most ``max_pixels`` is fitted (scikit-learn / LightGBM), the thresholds are snapped to float32
(the ONNX tree ensemble compares float32 features, so the ONNX model then decides exactly as
the fitted one), and the model is converted (skl2onnx / onnxmltools), composed with the
feature graph and written as ``model.onnx`` with its card. Validation scores it on the same
validation tiles as a deep model; ``geoseg predict`` and ``geoseg evaluate`` run it through the
ONNX engine and the tiled predictor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from geoseg import __version__
from geoseg.bundle.card import ModelCard
from geoseg.bundle.pixel_onnx import compose, feature_model, save_pixel_model, session
from geoseg.config import IGNORE, format_validation_error
from geoseg.errors import ConfigError
from geoseg.evaluation.metrics import ConfusionMatrix
from geoseg.geometry.window import PixelWindow
from geoseg.models.pixel import PixelArgs
from geoseg.training.config import TrainConfig
from geoseg.training.model import (
    ignore_indices,
    metrics_summary,
    modality_cards,
    score,
    shown,
)
from geoseg.training.prepare import Prepared, prepare
from geoseg.training.report import RunFacts, run_report, write_history, write_report
from geoseg.training.result import TrainResult
from geoseg.training.sparse import holdout_specs
from geoseg.training.windows import normalise, read_val_tile

log = logging.getLogger("geoseg.training")

MODEL = "model.onnx"
#: pixels read per chunk while collecting training pixels
CHUNK = 512


def pixel_args(cfg: TrainConfig, source: str) -> PixelArgs:
    """The strict arguments of ``model: {architecture: pixel, arguments: ...}``."""
    try:
        return PixelArgs(**cfg.model.arguments)
    except ValidationError as exc:
        msg = format_validation_error(exc, model=PixelArgs, data=cfg.model.arguments)
        raise ConfigError(f"{source}: model.arguments of pixel: {msg}") from None


def config_digest(cfg: TrainConfig) -> str:
    """Identity of a pixel run's settings (a finished run with the same ones is not refitted)."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- pixels


def collect_pixels(prep: Prepared, cfg: TrainConfig, args: PixelArgs,
                   features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Features, classes and feature keys of the labelled training pixels (a seeded sample of
    at most ``max_pixels``). A pixel qualifies when its ``local`` window, grown by ``gap``,
    touches no validation area. Feature keys: scene·2^32 + feature number (+1; 0 = none)."""
    xs, ys, ks = [], [], []
    for i, (ts, sp, scan) in enumerate(zip(prep.scenes, prep.splits, prep.scans, strict=True)):
        if not sp.train:
            continue
        feats = prep.features[i] if prep.features is not None else None
        for core in ts.scene.grid.chunks(CHUNK):
            c = scan.cell
            if not scan.labelled[core.r0 // c: -(-core.r1 // c), core.c0 // c: -(-core.c1 // c)].any():
                continue
            got = _chunk_pixels(ts, sp, core, args.radius, cfg.split.gap, prep.norm, features)
            if got is None:
                continue
            rows, t, rr, cc = got
            xs.append(rows)
            ys.append(t)
            fid = feats.read_ids(core)[rr, cc] + 1 if feats is not None else np.zeros(rr.size, int)
            ks.append(np.int64(i) << 32 | fid.astype(np.int64))
    if not xs:
        raise ConfigError(f"no labelled training pixel lies {cfg.split.gap} px away from validation; use "
                          "a smaller split.gap or another split")  # fmt: skip
    X, y, k = np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)
    if len(y) > args.max_pixels:
        pick = np.sort(np.random.default_rng([args.seed, 31]).choice(len(y), args.max_pixels,
                                                                     replace=False))  # fmt: skip
        X, y, k = X[pick], y[pick], k[pick]
    return X, y, k


def _chunk_pixels(ts: Any, sp: Any, core: PixelWindow, rad: int, gap: int, norm: Any,
                  features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:  # fmt: skip
    """Feature rows, classes and (row, column) in ``core`` of its labelled pixels whose
    ``local`` window, grown by ``gap``, touches no validation area; None when there are none."""
    H, W = ts.shape
    read = PixelWindow(max(core.r0 - rad, 0), min(core.r1 + rad, H),
                       max(core.c0 - rad, 0), min(core.c1 + rad, W))  # fmt: skip
    arrays, target, valid = ts.read(read)
    sl = core.relative_to(read).slices
    t, v = target[sl], valid[sl]
    rr, cc = np.nonzero((t != IGNORE) & v)
    if not rr.size:
        return None
    ok = sp.allowed(rr + core.r0 - rad, cc + core.c0 - rad, 2 * rad + 1, 2 * rad + 1, gap)
    rr, cc = rr[ok], cc[ok]
    if not rr.size:
        return None
    x = normalise(arrays, valid, norm)
    rows = features.run(None, {n: a[None] for n, a in x.items()})[0]
    rows = rows.reshape(read.height, read.width, -1)[sl]
    return rows[rr, cc], t[rr, cc].astype(np.int64), rr, cc


def sample_weights(y: np.ndarray, keys: np.ndarray, balance: str) -> np.ndarray | None:
    """Per-pixel sample weights: none, classes (each class sums to the same), or features
    (as classes, and within a class each feature's pixels weigh 1/sqrt(its pixels))."""
    if balance == "none":
        return None
    w = np.ones(len(y))
    if balance == "features":
        _, inv, counts = np.unique(keys * 256 + y, return_inverse=True, return_counts=True)
        w = 1.0 / np.sqrt(counts[inv])
    classes = np.unique(y)
    for c in classes:
        m = y == c
        w[m] *= len(y) / (len(classes) * w[m].sum())
    return w


# ---------------------------------------------------------------------------- estimators


def _snap(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 values <= each threshold: for float32 x, ``x <= t`` is then
    exactly ``x <= snapped(t)``, which is what the ONNX tree ensemble computes."""
    f = thresholds.astype(np.float32)
    f = np.where(f.astype(np.float64) > thresholds, np.nextafter(f, np.float32(-np.inf)), f)
    return f.astype(np.float64)


def fit(args: PixelArgs, X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
        threads: int) -> tuple[Any, Any, list[int]]:  # fmt: skip
    """Fit the estimator; returns it, its ONNX conversion and the classes it knows."""
    fitted = _fit_forest if args.estimator == "random_forest" else _fit_lightgbm
    est, onx = fitted(args, X, y, w, threads)
    return est, onx, [int(c) for c in est.classes_]


def _fit_forest(args: PixelArgs, X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                threads: int) -> tuple[Any, Any]:  # fmt: skip
    """A random forest, its split thresholds snapped to float32, and its ONNX conversion."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    est = RandomForestClassifier(
        n_estimators=args.trees, max_depth=args.max_depth,
        min_samples_leaf=args.min_samples_leaf,
        max_features=None if args.max_features == "all" else args.max_features,
        n_jobs=threads, random_state=args.seed)  # fmt: skip
    est.fit(X, y, sample_weight=w)
    for tree in est.estimators_:
        leaf = tree.tree_.children_left < 0
        th = tree.tree_.threshold
        th[~leaf] = _snap(th[~leaf])
    onx = convert_sklearn(est, initial_types=[("x", FloatTensorType([None, X.shape[1]]))],
                          options={id(est): {"zipmap": False}},
                          target_opset={"": 15, "ai.onnx.ml": 1})  # fmt: skip
    return est, onx


def _fit_lightgbm(args: PixelArgs, X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                  threads: int) -> tuple[Any, Any]:  # fmt: skip
    """LightGBM, its split thresholds snapped to float32, and its ONNX conversion."""
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat

    est = lgb.LGBMClassifier(
        n_estimators=args.trees, learning_rate=args.learning_rate, num_leaves=args.num_leaves,
        max_depth=args.max_depth or -1, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
        random_state=args.seed, n_jobs=threads, verbose=-1, force_col_wise=True)  # fmt: skip
    est.fit(X, y, sample_weight=w)
    text = est.booster_.model_to_string()
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # sizes change with the text

    def snap_line(m: re.Match) -> str:
        vals = np.array([float(v) for v in m.group(1).split()], np.float64)
        return "threshold=" + " ".join(repr(float(v)) for v in _snap(vals))

    text = re.sub(r"^threshold=(.*)$", snap_line, text, flags=re.M)
    est._Booster = lgb.Booster(model_str=text)
    onx = convert_lightgbm(est, initial_types=[("x", MLFloat([None, X.shape[1]]))],
                           zipmap=False, target_opset=15)  # fmt: skip
    return est, onx


def check_onnx(est: Any, model: Any, X: np.ndarray, present: Sequence[int]) -> dict[str, Any]:
    """The ONNX classifier against the fitted estimator on (up to 20 000 of) its pixels: the
    same class wherever the estimator's top two probabilities differ by more than 1e-5 (the
    ensembles sum in float32 where the estimators sum in float64)."""
    sub = X[:20_000]
    got = session(model).run(None, {model.graph.input[0].name: sub})
    probs = next(o for o in got if o.ndim == 2)
    ref = est.predict_proba(sub)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.ones((len(ref), 2))
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    differ = int((probs.argmax(1) != ref.argmax(1))[clear].sum())
    if differ:
        raise ConfigError(f"the ONNX conversion of the {type(est).__name__} disagrees on "
                          f"{differ} of {int(clear.sum())} pixels; report this as a bug")
    return {"rows": len(sub), "differing": differ,
            "max_abs_probability_difference": float(np.abs(probs - ref).max())}  # fmt: skip


# ---------------------------------------------------------------------------- the run


def validate_pixel(prep: Prepared, model: Any, ignore: list[int]) -> dict[str, Any]:
    """Metrics of the composed model on the validation tiles (cores only)."""
    sess = session(model, threads=os.cpu_count() or 1)
    cm = ConfusionMatrix(len(prep.classes))
    for tile in prep.val_tiles:
        inputs, target, sl = read_val_tile(prep.val_scenes or prep.scenes, tile, prep.norm)
        probs = sess.run(None, {n: v.numpy() for n, v in inputs.items()})[0][0]
        cm.update(probs.argmax(0)[sl], target)
    return cm.metrics([c.name for c in prep.classes], ignore)


def pixel_card(cfg: TrainConfig, prep: Prepared, args: PixelArgs, metrics: dict[str, Any],
               split: dict[str, Any], source: str, n_pixels: int) -> ModelCard:  # fmt: skip
    """The card of a pixel model (tile 256 unless ``model.tile``; halo = the feature radius)."""
    mods, summary = modality_cards(prep), metrics_summary(metrics)
    return ModelCard(
        architecture="pixel", arguments=args.model_dump(mode="json"), modalities=mods,
        derived=dict(cfg.indices), classes=prep.classes, tile_size=cfg.model.tile or 256,
        halo=args.radius, gsd=prep.gsd, trained=True,
        metrics={"validation": summary, "split": split["statement"],
                 "pixels": metrics.get("pixels")},
        training={"pipeline": shown(source), "estimator": args.estimator,
                  "training_pixels": n_pixels, "scenes": [s.id for s in prep.scenes],
                  "catalog": shown(prep.catalog) if prep.catalog else None,
                  "normalisation": {k: v["how"] for k, v in prep.norm.items()},
                  "seed": args.seed, "date": datetime.now(UTC).isoformat(timespec="seconds")},
        description=cfg.model.description or f"per-pixel {args.estimator} trained by geoseg "
        f"{__version__}",
    )  # fmt: skip


def _finished(out: Path, cfg: TrainConfig) -> TrainResult | None:
    """The result of a finished run of the same settings in ``out``, if there is one."""
    rep_path = out / "train_report.json"
    if not cfg.resume or not (out / MODEL).is_file() or not rep_path.is_file():
        return None
    try:
        rep = json.loads(rep_path.read_text())
    except (OSError, ValueError):
        return None
    if rep.get("config_digest") != config_digest(cfg) or rep.get("status") != "finished":
        return None
    log.info("%s: already trained; set resume: false to train again", out)
    return TrainResult(out, out / MODEL, out / MODEL, rep_path, out / "history.csv",
                       "finished", (rep.get("best") or {}).get("metrics") or {})  # fmt: skip


def train_pixel(cfg: TrainConfig, out: Path, *, resolve: Callable[[str], Path],
                default_catalog: str | None, source: str) -> TrainResult:  # fmt: skip
    """Fit a pixel model into ``out`` (``model.onnx``, report, history)."""
    args = pixel_args(cfg, source)
    done = _finished(out, cfg)
    if done is not None:
        return done
    t0 = time.perf_counter()
    threads = cfg.threads or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg, resolve, default_catalog, source, out / "cache")
    run_cfg = prep.config or cfg
    fitted = _fit_model(prep, run_cfg, args, threads, source)
    ignore = ignore_indices(run_cfg, prep, source)
    metrics = validate_pixel(prep, fitted.model, ignore)
    split = prep.split_report(run_cfg)
    card = pixel_card(run_cfg, prep, args, metrics, split, source, fitted.pixels)
    path = save_pixel_model(fitted.model, card, out / MODEL)
    elapsed = time.perf_counter() - t0
    facts = _run_facts(run_cfg, args, out, source, fitted, metrics, ignore, split, elapsed)
    rep = run_report(run_cfg, prep, facts)
    rep.update(_pixel_report(cfg, prep, out, path, fitted))
    write_history([_history_row(metrics, fitted.pixels, elapsed)], out)
    write_report(rep, out)
    log.info("pixel %s: %d training pixels, fitted in %.1f s; val mIoU %s", args.estimator,
             fitted.pixels, fitted.fit_s, metrics["miou"])  # fmt: skip
    return TrainResult(out, path, path, out / "train_report.json", out / "history.csv",
                       "finished", metrics)  # fmt: skip


@dataclass(frozen=True)
class _Fitted:
    """A fitted estimator, its composed ONNX model and the facts the report gives of the fit."""

    est: Any
    model: Any
    pixels: int
    features: int
    present: list[int]
    check: dict[str, Any]
    fit_s: float


def _fit_model(prep: Prepared, cfg: TrainConfig, args: PixelArgs, threads: int,
               source: str) -> _Fitted:  # fmt: skip
    """Collect the training pixels, fit, check the ONNX conversion and compose the model."""
    names = list(prep.modalities)
    bands = [prep.modalities[n] for n in names]
    fmodel = feature_model(names, bands, args.local)
    X, y, keys = collect_pixels(prep, cfg, args, session(fmodel, threads))
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{source}: the training pixels hold a single class; a classifier "
                          "needs two: add labels of other classes or change the split")
    t_fit = time.perf_counter()
    est, onx, present = fit(args, X, y, sample_weights(y, keys, args.balance), threads)
    fit_s = time.perf_counter() - t_fit
    check = check_onnx(est, onx, X, present)
    model = compose(names, bands, args.local, onx, present, len(prep.classes))
    return _Fitted(est, model, len(y), int(X.shape[1]), present, check, fit_s)


def _run_facts(cfg: TrainConfig, args: PixelArgs, out: Path, source: str, fitted: _Fitted,
               metrics: dict[str, Any], ignore: list[int], split: dict[str, Any],
               elapsed: float) -> RunFacts:  # fmt: skip
    """The facts of a finished pixel run, for :func:`run_report`."""
    value = score(metrics, cfg.best_metric, source)
    best = {"score": value, "step": None, "metrics": metrics}
    return RunFacts(
        source=source, out=out, checkpoint=out / MODEL, status="finished", step=1,
        resumed_from=None, samples=fitted.pixels, elapsed=elapsed, device="cpu", world=1,
        model_arguments=args.model_dump(mode="json"),
        inference_parameters=int(_nodes(fitted.est)), loss_name=f"{args.estimator} (per pixel)",
        amp=False, ignore=ignore, split=split, best=best)  # fmt: skip


def _pixel_report(cfg: TrainConfig, prep: Prepared, out: Path, path: Path,
                  fitted: _Fitted) -> dict[str, Any]:  # fmt: skip
    """The report entries of a pixel run beyond :func:`run_report`'s."""
    return {
        "outputs": {"model": str(path), "best": str(path), "last": str(path),
                    "history_csv": str(out / "history.csv")},
        "config_digest": config_digest(cfg),
        "pixel": {"training_pixels": fitted.pixels, "features": fitted.features,
                  "fit_s": round(fitted.fit_s, 2), "classes_trained": fitted.present,
                  "onnx_check": fitted.check},
        "holdout_scene_specs": holdout_specs(out, prep.catalog_scenes, prep.splits, prep.features),
    }  # fmt: skip


def _history_row(metrics: dict[str, Any], pixels: int, elapsed: float) -> dict[str, Any]:
    """The one row of a pixel run's history."""
    return {"step": 1, "samples": pixels, "val_miou": metrics["miou"],
            "val_overall_accuracy": metrics["overall_accuracy"], "val_kappa": metrics["kappa"],
            **{f"val_iou_{n}": c["iou"] for n, c in metrics["per_class"].items()},
            "elapsed_s": round(elapsed, 2)}  # fmt: skip


def _nodes(est: Any) -> int:
    """Tree nodes of the ensemble (its size, in the report's parameter count)."""
    if hasattr(est, "estimators_"):
        return sum(t.tree_.node_count for t in est.estimators_)
    return int(sum(2 * t["num_leaves"] - 1 for t in est.booster_.dump_model()["tree_info"]))
