"""Accuracy on sparse labels (issue 16): per-pixel baselines vs deep recipes, k-fold by features.

Cases, built from real data in ../shared/data (read from there, never vendored):

- ``berlin``: HyMap B/G/R/NIR 3.6 m (GPL, enmapbox), the Level-2 land-cover polygons cut into
  40 m pieces of which a few dozen per class are kept, scattered (6 classes);
- ``ecuador``: terrain attributes 10 m (slope, cplan, cprof, elev, log10 carea; CC0,
  spDataLarge) and the 350 landslide / stable points, buffered 15 m (2 classes);
- ``spacenet``: WorldView PAN 0.5 m Atlanta (CC BY-SA, solaris), the 43 building footprints
  plus 43 background squares of 8 m drawn away from them (2 classes).

Every case uses ``split.by: features`` with k folds (whole polygons/points held out,
stratified by class, ``gap`` pixels of buffer); the score of a fold is that of its last model
on its held-out features (nothing is selected on them). Reported per case and model: mIoU
(mean ± std over folds), OA, kappa, CPU minutes (process CPU time of all folds: training,
feature extraction, validation).

    python benchmarks/accuracy.py [--quick] [--cases berlin,ecuador,spacenet] [--models ...]
                                  [--folds K] [--out DIR] [--threads 1]

``--quick`` (about 10 CPU minutes on the shared 2-core CPU): 3 folds, the random forest,
LightGBM and the default deep recipe (``recipe: sparse``: SparseCNN, 4 members, TTA) with
200 steps; ``--models`` adds ``sparse:tinycnn`` (the recipe's former model). The full run
(5 folds, 400 steps) adds the recipe with masked pre-training and a U-Net/ResNet-18 (slow on
CPU: ~10 min a fold). A model name may carry a variant suffix, e.g.
``sparse:sparsecnn/members=1,tta=false`` (model arguments, or steps/batch/seed).
Writes ``DIR/accuracy.json`` and ``DIR/accuracy.md`` (the table of docs/benchmarks.md).
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------------------- the cases


def _write(df: Any, path: Path) -> Path:
    import pyogrio

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    pyogrio.write_dataframe(df, path, driver="GPKG")
    return path


def berlin_case(work: Path, per_class: int = 30, piece_m: float = 40.0, seed: int = 0) -> dict:
    """Land-cover polygons cut into ``piece_m`` squares; ``per_class`` pieces kept per class,
    never in neighbouring squares (scattered, as a field survey would be)."""
    import geopandas as gpd
    from shapely.geometry import box

    src = SHARED / "enmapbox_berlin"
    df = gpd.read_file(src / "LandCov_Vec_Berlin_Urban_Gradient_2009_subset.shp")
    x0, y0, x1, y1 = df.total_bounds
    cells = [box(x, y, x + piece_m, y + piece_m)
             for x in np.arange(x0, x1, piece_m) for y in np.arange(y0, y1, piece_m)]  # fmt: skip
    grid = gpd.GeoDataFrame({"cell": range(len(cells))}, geometry=cells, crs=df.crs)
    pieces = gpd.overlay(df[["Level_2_ID", "geometry"]], grid, how="intersection")
    pieces = pieces.explode(index_parts=False)
    pieces = pieces[pieces.area >= 0.3 * piece_m**2].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    ncol = int(np.ceil((y1 - y0) / piece_m))
    used: set[int] = set()
    keep = []
    for cls in sorted(pieces.Level_2_ID.unique()):
        idx = rng.permutation(np.flatnonzero(pieces.Level_2_ID.to_numpy() == cls))
        n = 0
        for i in idx:
            c = int(pieces.cell.iloc[i])
            near = {c + dc + dr * ncol for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
            if n >= per_class or near & used:
                continue
            used.add(c)
            keep.append(i)
            n += 1
    out = pieces.iloc[sorted(keep)][["Level_2_ID", "geometry"]].rename(columns={"Level_2_ID": "cls"})
    labels = _write(out, work / "berlin_pieces.gpkg")
    classes = [{"id": 1, "name": "roof", "color": "#e31a1c"},
               {"id": 2, "name": "pavement", "color": "#969696"},
               {"id": 3, "name": "grass", "color": "#b2df8a"},
               {"id": 4, "name": "tree", "color": "#33a02c"},
               {"id": 5, "name": "soil", "color": "#a6611a"},
               {"id": 6, "name": "other", "color": "#ffff99"}]  # fmt: skip
    scene = {"id": "berlin", "modalities": {"image": {
        "path": str(src / "hymap_berlin_3.6m_bgrn.tif"), "roles": ["blue", "green", "red", "nir"]}},
        "labels": {"path": str(labels), "class_field": "cls"}}  # fmt: skip
    return {"classes": classes, "scenes": [scene], "vector_labels": {}, "gap": 8,
            "about": f"HyMap 4 bands 3.6 m, 660x494 px; {len(out)} polygon pieces of "
                     f"{piece_m:.0f} m ({per_class} per class at most, scattered)"}  # fmt: skip


def ecuador_case(work: Path) -> dict:
    """The 350 landslide / stable points on the terrain attributes, buffered 15 m."""
    import geopandas as gpd

    src = SHARED / "spDataLarge"
    df = gpd.read_file(src / "lsl_landslide_points.geojson")
    df["cls"] = df["lslpts"].astype(bool).astype(int)
    labels = _write(df[["cls", "geometry"]], work / "ecuador_points.gpkg")
    classes = [{"id": 0, "name": "stable", "color": "#1a9641"},
               {"id": 1, "name": "landslide", "color": "#d7191c"}]  # fmt: skip
    scene = {"id": "ecuador", "modalities": {"terrain": {
        "path": str(src / "ta.tif"), "roles": ["slope", "cplan", "cprof", "elev", "carea"]}},
        "labels": {"path": str(labels), "class_field": "cls"}}  # fmt: skip
    return {"classes": classes, "scenes": [scene], "vector_labels": {"buffer": 15.0}, "gap": 4,
            "about": "terrain attributes 5 bands 10 m, 383x415 px; 350 points (175 + 175) "
                     "buffered 15 m"}  # fmt: skip


def spacenet_case(work: Path, seed: int = 0, square_m: float = 8.0) -> dict:
    """The 43 building footprints and as many background squares drawn away from them."""
    import geopandas as gpd
    from shapely.geometry import box

    src = SHARED / "solaris"
    b = gpd.read_file(src / "geotiff_labels.geojson")[["geometry"]]
    b["cls"] = 1
    x0, y0, x1, y1 = b.total_bounds
    rng = np.random.default_rng(seed)
    avoid = b.geometry.buffer(3.0).union_all()
    squares: list[Any] = []
    while len(squares) < len(b):
        x, y = rng.uniform(x0, x1 - square_m), rng.uniform(y0, y1 - square_m)
        sq = box(x, y, x + square_m, y + square_m)
        if not sq.intersects(avoid) and not any(sq.buffer(4.0).intersects(s) for s in squares):
            squares.append(sq)
    bg = gpd.GeoDataFrame({"cls": [0] * len(squares)}, geometry=squares, crs=b.crs)
    labels = _write(gpd.GeoDataFrame(
        {"cls": list(b.cls) + list(bg.cls)}, geometry=list(b.geometry) + squares, crs=b.crs),
        work / "spacenet_labels.gpkg")  # fmt: skip
    classes = [{"id": 0, "name": "background", "color": "#d9d9d9"},
               {"id": 1, "name": "building", "color": "#e31a1c"}]  # fmt: skip
    scene = {"id": "spacenet", "modalities": {"image": {
        "path": str(src / "sample_geotiff.tif"), "roles": ["pan"]}},
        "labels": {"path": str(labels), "class_field": "cls"}}  # fmt: skip
    return {"classes": classes, "scenes": [scene], "vector_labels": {}, "gap": 8,
            "about": f"WorldView PAN 0.5 m, 900x900 px; {len(b)} building footprints + "
                     f"{len(squares)} background squares of {square_m:.0f} m"}  # fmt: skip


CASES = {"berlin": berlin_case, "ecuador": ecuador_case, "spacenet": spacenet_case}


# ---------------------------------------------------------------------------- the models


def models(quick: bool) -> dict[str, dict[str, Any]]:
    """Model settings by name (merged into the case's config)."""
    steps = 200 if quick else 400
    deep = {"recipe": "sparse", "steps": steps, "val_every": steps}
    tiny = {"architecture": "tinycnn", "arguments": {"width": 32}}
    return {
        "random_forest": {"model": {"architecture": "pixel",
                                    "arguments": {"estimator": "random_forest"}}},
        "lightgbm": {"model": {"architecture": "pixel", "arguments": {"estimator": "lightgbm"}}},
        "sparse:sparsecnn": deep,  # the recipe's own model
        "sparse:tinycnn": {**deep, "model": tiny},
        "sparse:sparsecnn+pretrain": {**deep, "pretrain": {"steps": 200}},
        "sparse:unet-r18": {**deep, "model": {"architecture": "unet",
                                              "arguments": {"encoder": "resnet18"}}},
    }  # fmt: skip


QUICK_MODELS = ["random_forest", "lightgbm", "sparse:sparsecnn"]
#: variant keys that are not model arguments (``MODEL/key=value,...`` on the command line)
TOP_KEYS = {"steps", "batch", "seed"}


def model_settings(name: str, quick: bool) -> dict[str, Any]:
    """The settings of ``name``: a model of :func:`models`, optionally with a variant suffix
    ``/key=value,...`` (model arguments, or steps/batch/seed; values read as YAML), e.g.
    ``sparse:sparsecnn/members=1,tta=true``."""
    import yaml

    from geoseg.training.config import deep_merge

    base, _, variant = name.partition("/")
    settings = models(quick)[base]
    for item in filter(None, variant.split(",")):
        key, _, value = item.partition("=")
        v = yaml.safe_load(value)
        over = {key: v} if key in TOP_KEYS else {"model": {"arguments": {key: v}}}
        if key == "steps":
            over["val_every"] = v
        settings = deep_merge(settings, over)
    return settings


def case_config(case: dict, model: dict, folds: int, threads: int) -> Any:
    from geoseg.training.config import TrainConfig, deep_merge

    base = {"classes": case["classes"], "scenes": case["scenes"],
            "vector_labels": case["vector_labels"],
            "split": {"by": "features", "folds": folds, "gap": case["gap"], "seed": 0},
            "device": "cpu", "threads": threads, "seed": 0, "resume": True}  # fmt: skip
    return TrainConfig.model_validate(deep_merge(base, model))


def run_case(name: str, case: dict, names: list[str], folds: int, quick: bool, out: Path,
             threads: int) -> dict[str, Any]:  # fmt: skip
    from geoseg.training.crossval import run_model, summarise
    from geoseg.training.loop import train

    rows: dict[str, Any] = {}
    for m in names:
        cfg = case_config(case, model_settings(m, quick), folds, threads)
        c0, w0 = time.process_time(), time.perf_counter()
        scores, _ = run_model(cfg, out / name / m.replace(":", "-").replace("/", "_"), folds,
                              lambda c, o, m=m: train(c, o, source=f"{name}:{m}", progress=False),
                              f"{name}:{m}")  # fmt: skip
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rows[m] = {"summary": summarise(scores), "runs": scores, "cpu_min": cpu / 60,
                   "wall_min": wall / 60}  # fmt: skip
        s = rows[m]["summary"]["miou"]
        print(f"{name:9s} {m:24s} mIoU {100 * (s['mean'] or 0):5.1f} ± {100 * (s['std'] or 0):4.1f}"
              f"  cpu {cpu / 60:5.2f} min  wall {wall / 60:5.2f} min  folds "
              + " ".join(f"{100 * (r['miou'] or 0):.1f}" for r in scores), flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ["| case | model | mIoU | OA | kappa | val px / fold | CPU min |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for case, rows in results["cases"].items():
        best = max(rows, key=lambda m: rows[m]["summary"]["miou"]["mean"] or -1)
        for m, r in rows.items():
            s = r["summary"]

            def pm(k: str, f: float = 100.0, d: int = 1, s: dict = s) -> str:
                v = s[k]
                if v["mean"] is None:
                    return "–"
                return f"{f * v['mean']:.{d}f} ± {f * (v['std'] or 0):.{d}f}"

            px = [p for p in s["val_pixels"] if p is not None]
            name = f"**{m}**" if m == best else m
            lines.append(f"| {case} | {name} | {pm('miou')} | {pm('overall_accuracy')} | "
                         f"{pm('kappa', 1.0, 3)} | {int(np.mean(px)) if px else '–'} | "
                         f"{r['cpu_min']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="berlin,ecuador,spacenet")
    ap.add_argument("--models", default=None, help="comma-separated (default: quick or all)")
    ap.add_argument("--folds", type=int, default=None, help="default 3 (quick) or 5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "accuracy"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(a.threads)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the cases need ../shared/data")
    folds = a.folds or (3 if a.quick else 5)
    names = a.models.split(",") if a.models else (QUICK_MODELS if a.quick else list(models(False)))
    out = Path(a.out)
    results: dict[str, Any] = {"quick": a.quick, "folds": folds, "threads": a.threads,
                               "machine": platform.processor() or platform.machine(),
                               "cases": {}, "about": {}}  # fmt: skip
    t0 = time.perf_counter()
    for name in a.cases.split(","):
        case = CASES[name](out / "data")
        results["about"][name] = case["about"]
        results["cases"][name] = run_case(name, case, names, folds, a.quick, out / "runs",
                                          a.threads)  # fmt: skip
    results["wall_min"] = (time.perf_counter() - t0) / 60
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "accuracy.md").write_text(markdown(results))
    print(markdown(results))
    print(f"total {results['wall_min']:.1f} min; {out / 'accuracy.json'}")


if __name__ == "__main__":
    main()
