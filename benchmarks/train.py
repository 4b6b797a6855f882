"""Training benchmarks on CPU.

1. Throughput: training windows per second of every seed model (real windows of the vendored
   Alexandria sample, 128 px, batch 4, full training step: read, augment, forward, loss,
   backward, optimiser step), after one warm-up step.
2. Berlin HyMap (../shared/data/enmapbox_berlin, GPL: read from there, never vendored):
   U-Net and DeepTriNet trained for a fixed wall-clock budget each, then the tiled predictor
   over the whole scene, scored on held-out validation blocks (25 % of the labelled 128 px
   blocks, 16 px gap) — beside a per-pixel random forest (scikit-learn) trained on the labelled
   pixels of the same training area.

    python benchmarks/train.py [--budget 10] [--threads 2] [--skip-throughput] [--out DIR]

Writes ``DIR/train_benchmark.json`` and prints Markdown tables (copied to docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ALEX = ROOT / "tests" / "data" / "alexandria"
BERLIN = ROOT.parent / "shared" / "data" / "enmapbox_berlin"
CATALOG = ROOT / "catalogs" / "berlin-hymap.yaml"

SMALL = {"encoder": "resnet18"}
THROUGHPUT_MODELS: dict[str, dict[str, Any]] = {
    "tinycnn": {},
    "unet": SMALL,
    "deeptrinet": {**SMALL, "decoder_channels": 64},
    "farseg": {**SMALL, "fpn_channels": 128, "decoder_channels": 64},
    "hpclnet": {**SMALL, "decoder_channels": 64, "queue_size": 1024, "warmup_steps": 0},
    "timf": {},
}


def _alex_scene(model: str) -> dict[str, Any]:
    mods = {"dsm": str(ALEX / "dsm.tif"), "height": str(ALEX / "hag.tif")}
    if model == "timf":  # the DSM stands in for the image stream
        mods = {"image": str(ALEX / "dsm.tif"), "height": str(ALEX / "hag.tif")}
    if model == "hpclnet":
        mods = {"image": str(ALEX / "dsm.tif"), "dem": str(ALEX / "dtm.tif")}
    return {"id": "alexandria", "modalities": mods,
            "labels": {"path": str(ALEX / "buildings.geojson"), "class_value": 1}}


def throughput(threads: int, steps: int = 6) -> list[dict[str, Any]]:
    from geoseg.training.config import TrainConfig
    from geoseg.training.loop import Trainer

    rows = []
    for name, args in THROUGHPUT_MODELS.items():
        cfg = TrainConfig.model_validate({
            "classes": [{"id": 0, "name": "background"}, {"id": 1, "name": "building"}],
            "scenes": [_alex_scene(name)], "vector_labels": {"background": 0, "extent": "labels"},
            "model": {"architecture": name, "arguments": args},
            "split": {"by": "stripe", "gap": 8}, "sampling": {"window": 128},
            "steps": steps + 1, "batch": 4, "device": "cpu", "threads": threads})  # fmt: skip
        out = Path("/tmp") / f"geoseg-bench-{name}"
        tr = Trainer(cfg, out, lambda p: Path(p).resolve(), None, "benchmark", progress=False)
        net = tr.module
        batches = iter(tr._loader(0, steps + 1))
        inputs, target = next(batches)
        tr._train_step(net, inputs, target)  # warm-up
        t0 = time.perf_counter()
        n = 0
        for inputs, target in batches:
            tr._train_step(net, inputs, target)
            n += target.shape[0]
        sec = time.perf_counter() - t0
        params = sum(p.numel() for p in tr.model.inference_state_dict().values())
        rows.append({"model": name, "arguments": args, "windows_per_s": n / sec,
                     "s_per_step": sec / steps, "parameters_M": params / 1e6})  # fmt: skip
        print(f"  {name:10s} {n / sec:6.2f} windows/s ({params / 1e6:.1f} M parameters)")
    return rows


def berlin_config(arch: str, args: dict[str, Any], budget: float, threads: int) -> dict:
    return {"catalog": str(CATALOG), "scenes": ["berlin-raster-labels"],
            "bands": {"image": ["blue", "green", "red", "nir"]},
            "model": {"architecture": arch, "arguments": args, "tile": 256},
            "split": {"by": "blocks", "block": 128, "val_fraction": 0.25, "gap": 16, "seed": 0},
            "sampling": {"window": 96, "mode": "balanced"},
            "augment": {"flip": True, "rotate": True, "brightness": 0.1, "contrast": 0.1},
            "optimizer": {"name": "adam", "lr": 0.001}, "schedule": {"name": "constant"},
            "steps": 100000, "batch": 8, "val_every": 100, "time_limit": budget,
            "device": "cpu", "threads": threads, "resume": False}  # fmt: skip


def deep_run(arch: str, args: dict[str, Any], budget: float, threads: int,
             out: Path) -> dict[str, Any]:  # fmt: skip
    from geoseg.evaluation.evaluate import evaluate, holdout_regions
    from geoseg.runs.options import PredictOptions
    from geoseg.training.config import TrainConfig
    from geoseg.training.loop import train

    cfg = TrainConfig.model_validate(berlin_config(arch, args, budget, threads))
    run = out / f"berlin-{arch}"
    t0 = time.perf_counter()
    res = train(cfg, run, progress=False)
    train_s = time.perf_counter() - t0
    rep = json.loads(res.report.read_text())
    scenes, regions, vl = holdout_regions(res.report)
    opts = PredictOptions(tile=256, chunk=1024, vector="none", progress=False, overwrite=True,
                          tiles_dir=out / "tiles")  # fmt: skip
    t1 = time.perf_counter()
    ev = evaluate(res.best, scenes, run / "eval", opts, vector_labels=vl, regions=regions)
    return {"model": arch, "arguments": args, "steps": rep["steps_done"],
            "windows": rep["samples_seen"], "train_s": round(train_s, 1),
            "best_step": rep["best"]["step"], "predict_eval_s": round(time.perf_counter() - t1, 1),
            "miou": ev["miou"], "miou_present": miou_present(ev),
            "overall_accuracy": ev["overall_accuracy"], "kappa": ev["kappa"],
            "pixels": ev["pixels"],
            "per_class_iou": {n: c["iou"] for n, c in ev["per_class"].items()},
            "split": rep["split"]["statement"], "report": str(res.report)}  # fmt: skip


def random_forest(report: Path, threads: int) -> dict[str, Any]:
    """Per-pixel RF on the labelled pixels of the training area (≥ gap px off validation)."""
    from sklearn.ensemble import RandomForestClassifier

    from geoseg.evaluation.evaluate import holdout_regions
    from geoseg.evaluation.metrics import ConfusionMatrix
    from geoseg.geometry.window import PixelWindow
    from geoseg.scene.classes import ClassInfo
    from geoseg.scene.labels import VectorLabels
    from geoseg.training.data import TrainScene

    rep = json.loads(report.read_text())
    scenes, regions, _ = holdout_regions(report)
    cs = scenes[0]
    classes = [ClassInfo.model_validate(c) for c in rep["classes"]]
    ts = TrainScene.open(cs, ["image"], {"image": ["blue", "green", "red", "nir"]}, classes,
                         VectorLabels())  # fmt: skip
    h, w = ts.shape
    arrays, target, _ = ts.read(PixelWindow.at(0, 0, h, w))  # a 660×494 scene: small enough to hold
    x = arrays["image"].reshape(4, -1).T
    gap = rep["split"]["gap_px"]
    near_val = np.zeros((h, w), bool)
    in_val = np.zeros((h, w), bool)
    for r in regions[cs.id]:
        g = PixelWindow(r.r0, r.r1, r.c0, r.c1).grow(gap)
        near_val[max(g.r0, 0):g.r1, max(g.c0, 0):g.c1] = True
        in_val[r.r0:r.r1, r.c0:r.c1] = True
    t = target.ravel()
    train_px = (t != 255) & ~near_val.ravel()
    test_px = (t != 255) & in_val.ravel()
    rf = RandomForestClassifier(n_estimators=200, n_jobs=threads, random_state=0)
    t0 = time.perf_counter()
    rf.fit(x[train_px], t[train_px])
    fit_s = time.perf_counter() - t0
    pred = rf.predict(x[test_px])
    cm = ConfusionMatrix(len(classes)).update(pred, t[test_px])
    m = cm.metrics([c.name for c in classes])
    return {"model": "random forest (per pixel, 200 trees)", "train_pixels": int(train_px.sum()),
            "train_s": round(fit_s, 1), "miou": m["miou"], "miou_present": miou_present(m),
            "overall_accuracy": m["overall_accuracy"], "kappa": m["kappa"], "pixels": m["pixels"],
            "per_class_iou": {n: c["iou"] for n, c in m["per_class"].items()}}  # fmt: skip


def miou_present(metrics: dict[str, Any]) -> float | None:
    """Mean IoU over the classes present in the reference (a class only predicted is left out:
    with few held-out pixels, one stray prediction of an absent class weighs a whole class)."""
    vals = [c["iou"] for c in metrics["per_class"].values()
            if c["reference_pixels"] > 0 and c["iou"] is not None]  # fmt: skip
    return sum(vals) / len(vals) if vals else None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=10.0, help="minutes of training per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-berlin", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(),
                                          "threads": a.threads, "torch": torch.__version__},
                              "budget_min": a.budget}  # fmt: skip
    if not a.skip_throughput:
        print("training throughput (CPU, 128 px windows, batch 4):")
        result["throughput"] = throughput(a.threads)
    if not a.skip_berlin:
        if not (BERLIN / "hymap_berlin_3.6m_bgrn.tif").exists():
            print(f"{BERLIN} not present: Berlin benchmark skipped")
        else:
            runs = []
            for arch, args in (("unet", SMALL), ("deeptrinet", {**SMALL, "decoder_channels": 64})):
                print(f"Berlin: training {arch} for {a.budget} min ...")
                runs.append(deep_run(arch, args, a.budget, a.threads, out))
                print(f"  {arch}: mIoU {_pct(runs[-1]['miou'])} %")
            runs.append(random_forest(Path(runs[0]["report"]), a.threads))
            print(f"  random forest: mIoU {_pct(runs[-1]['miou'])} %")
            result["berlin"] = runs
    path = out / "train_benchmark.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}\n")
    for row in result.get("throughput", []):
        print(f"| {row['model']} | {row['parameters_M']:.1f} | {row['windows_per_s']:.2f} |")
    for row in result.get("berlin", []):
        names = list(row["per_class_iou"])
        print(f"| {row['model']} | {row.get('steps', '–')} | {_pct(row['miou'])} | "
              f"{_pct(row['miou_present'])} | "
              f"{_pct(row['overall_accuracy'])} | " +
              " | ".join(_pct(row['per_class_iou'][n]) for n in names) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
