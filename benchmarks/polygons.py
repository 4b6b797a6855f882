"""Polygon stage on a trained model's map (issue 17): its share of a full `geoseg predict`.

Usage: python benchmarks/polygons.py [--size 8192] [--tile 512] [--when after during]
The bundled demo model (models/demo: buildings from nDSM + DSM, trained on the Alexandria
LiDAR sample) predicts the sample mirrored to ``size`` x ``size`` (both modalities mirrored
alike: real pixels, a real model's map, not the salt-and-pepper of random weights), with every
output (class and confidence COGs, polygons as GeoPackage, quicklook). Each run is a fresh
`geoseg predict` process; reports its wall time, the polygon stage (``vectorise``: after the
chunks; ``polygons_after_chunks``: what is left of it once the chunks are done when polygons
are made during inference), the polygon count, and their shares of the wall time; and the
pipeline efficiency with these full outputs (benchmarks/predict.py's: the model alone on the
plan's exact tiles and worker layout, in a fresh process / the run's wall).
Writes benchmarks/results/polygons.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from landsat import ROOT, write_result
from predict import measure

SAMPLE = ROOT / "tests" / "data" / "alexandria"


def scenes(work: Path, size: int) -> tuple[Path, Path]:
    """The sample's nDSM and DSM mirrored to ``size`` x ``size`` (made once)."""
    from geoseg.testing import mosaic_scene

    work.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("hag", "dsm"):
        path = work / f"{name}_{size}.tif"
        if not path.exists():
            mosaic_scene(SAMPLE / f"{name}.tif", path, size)
        out.append(path)
    return out[0], out[1]


def run(hag: Path, dsm: Path, out: Path, tile: int, when: str) -> dict:
    cmd = [sys.executable, "-m", "geoseg", "predict", str(hag), "--modality", f"dsm={dsm}",
           "--model", str(ROOT / "models" / "demo"), "--tile", str(tile), "--vector", "gpkg",
           "--polygons-when", when, "--overwrite", "--no-progress", "--out", str(out),
           "--tiles-dir", str(out.parent / f"tiles-{when}")]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"geoseg predict failed:\n{proc.stderr[-3000:]}")
    report = json.loads((out / f"{hag.stem}_report.json").read_text())
    t = report["timings_s"]
    stage = t.get("polygons_after_chunks", t.get("vectorise", 0.0)) if when == "during" \
        else t.get("vectorise", 0.0)  # fmt: skip
    return {"when": when, "wall_s": round(wall, 2), "chunks_s": t.get("chunks_wall"),
            "polygon_stage_s": stage, "vectorise_s": t.get("vectorise"),
            "polygons": report["polygons"], "polygon_share": round(stage / wall, 3),
            "settings": {k: report["settings"][k] for k in ("chunk", "batch", "workers")},
            "timings_s": t}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--when", nargs="+", default=["after", "during"])
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-polygons")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "polygons.json")
    a = ap.parse_args()
    hag, dsm = scenes(a.work, a.size)
    result = {"size": a.size, "tile": a.tile, "model": "models/demo (trained, buildings)",
              "loadavg_before": os.getloadavg()[0], "runs": []}  # fmt: skip
    for when in a.when:
        row = run(hag, dsm, a.work / f"out-{when}", a.tile, when)
        result["runs"].append(row)
        print(f"polygons {when}: wall {row['wall_s']:.1f} s, chunks {row['chunks_s']:.1f} s, "
              f"polygon stage {row['polygon_stage_s']:.1f} s = {row['polygon_share']:.1%} of wall "
              f"(target <= 10 %), {row['polygons']} polygons", flush=True)
    settings = result["runs"][0]["settings"]
    alone = measure("model_only", str(hag), str(ROOT / "models" / "demo"), str(settings["chunk"]),
                    str(settings["batch"]), str(settings["workers"]), str(a.tile))  # fmt: skip
    result["model_only"] = alone
    for row in result["runs"]:
        row["efficiency_full"] = round(alone["model_s"] / row["wall_s"], 3)
        print(f"efficiency with full outputs, polygons {row['when']}: {row['efficiency_full']:.2f} "
              f"(model alone {alone['model_s']:.1f} s; target >= 0.85)", flush=True)
    write_result(a.out, result)


if __name__ == "__main__":
    main()
