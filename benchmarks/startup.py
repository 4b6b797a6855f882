"""Start-up: wall time of the commands that must answer at once (issue 17's first target).

Usage: python benchmarks/startup.py [--repeat 5]
Runs each command as a fresh process (as a user does), ``--repeat`` times, and reports the
median wall time against the target of 1.0 s, plus the heavy packages each one imported
(``python -X importtime``). Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
HEAVY = ("torch", "dask", "distributed", "xarray", "zarr", "geopandas", "torchgeo")
TARGET_S = 1.0


def commands(tmp: Path) -> dict[str, list[str]]:
    """The commands of the target: errors about arguments/inputs, info, help, quick checks."""
    bad_card = tmp / "bad-bundle"
    bad_card.mkdir(exist_ok=True)
    (bad_card / "card.json").write_text("{not json")
    (bad_card / "weights.safetensors").write_bytes(b"")
    return {
        "--help": ["--help"],
        "predict --help": ["predict", "--help"],
        "info missing.tif": ["info", str(tmp / "missing.tif")],
        "info raster": ["info", str(DATA / "RGB.byte.tif")],
        "info bundle": ["info", str(ROOT / "models" / "demo")],
        "model list": ["model", "list"],
        "catalog validate --quick": ["catalog", "validate", "--quick",
                                     str(ROOT / "catalogs" / "vendored.yaml")],
        "predict missing image": ["predict", str(tmp / "missing.tif"), "--model",
                                  str(ROOT / "models" / "demo"), "--out", str(tmp / "o")],
        "predict corrupt bundle": ["predict", str(DATA / "RGB.byte.tif"), "--model", str(bad_card),
                                   "--out", str(tmp / "o")],
        "predict bad --tile": ["predict", str(DATA / "alexandria" / "hag.tif"), "--modality",
                               f"dsm={DATA / 'alexandria' / 'dsm.tif'}", "--model",
                               str(ROOT / "models" / "demo"), "--out", str(tmp / "o"), "--tile", "8"],
        "unknown option": ["predict", "--tiel", "8"],
    }


def timed(args: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "geoseg", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    return time.perf_counter() - t0, proc.returncode


def heavy_imports(args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "geoseg", *args],
                          capture_output=True, text=True)  # fmt: skip
    seen = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return [m for m in HEAVY if m in seen]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(Path(tmp)).items():
            runs = [timed(cmd) for _ in range(args.repeat)]
            wall = statistics.median(t for t, _ in runs)
            row = {"command": name, "median_s": round(wall, 3), "exit": runs[0][1],
                   "heavy_imports": heavy_imports(cmd), "met": wall < TARGET_S}  # fmt: skip
            rows.append(row)
            print(f"{name:28s} {wall:6.2f} s  exit {row['exit']}  "
                  f"{'ok' if row['met'] else 'SLOW'}  {','.join(row['heavy_imports']) or '-'}")
    result = {"target_s": TARGET_S, "load_average": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
