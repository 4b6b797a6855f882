"""Local threads vs dask.distributed (LocalCluster of worker processes) on the same scene.

Usage: python benchmarks/distributed.py [--size 2048] [--tile 256]
Prints wall times and ratios, writes benchmarks/results/distributed.json. Each run is a fresh
`geoseg predict --overwrite` subprocess, so model loading and cluster start-up are included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from landsat import ROOT, landsat_scene, unet


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg.cli.main", *args], check=True,
                   capture_output=True, text=True)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-dist")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    a = ap.parse_args()
    scene, bundle = landsat_scene(a.work, a.size), unet(a.work, a.tile, encoder=None, name="unet")
    base = ["predict", str(scene), "--model", str(bundle), "--bands", "3,2,1", "--chunk",
            str(a.chunk), "--overwrite", "--no-progress", "--tiles-dir", str(a.work / "tiles")]
    rows = {}
    for label, extra in [("threads_w1", ["--workers", "1"]), ("threads_w2", ["--workers", "2"]),
                         ("localcluster_w1", ["--workers", "1", "--scheduler", "local"]),
                         ("localcluster_w2", ["--workers", "2", "--scheduler", "local"])]:
        rows[label] = run([*base, *extra, "--out", str(a.work / label)])
        print(f"{label:16s} {rows[label]:7.1f} s", flush=True)
    result = {
        "size": a.size, "tile": a.tile, "chunk": a.chunk, "wall_s": rows,
        "distributed_over_threads_w1": rows["localcluster_w1"] / rows["threads_w1"],
        "distributed_over_threads_w2": rows["localcluster_w2"] / rows["threads_w2"],
        "speedup_2_over_1_threads": rows["threads_w1"] / rows["threads_w2"],
        "speedup_2_over_1_distributed": rows["localcluster_w1"] / rows["localcluster_w2"],
    }  # fmt: skip
    for k, v in result.items():
        if k not in {"wall_s"}:
            print(f"{k}: {v if isinstance(v, int) else round(v, 3)}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
