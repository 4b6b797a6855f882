"""Resume benchmark: what a killed `geoseg predict` keeps.

Usage: python benchmarks/resume.py [--size 4096] [--chunks 512 1024] [--fractions 0.25 0.5 0.75]
                                   [--baseline REV] [--repeat N]
Per chunk size: one uninterrupted run (its wall time W, start-up included), the same command
again with every chunk stored (the floor F of any re-run: start-up, verification, outputs), then
per fraction f a fresh run killed with SIGKILL after f x W and the same command run again.
Reports the re-run's wall / W against the target re-run <= (1 - f) + 0.1 (of W), f read two
ways: the fraction of W at the kill (the killed run's start-up counts as work done), and the
fraction of the plan's tiles the re-run found done; the tiles it ran / the plan's tiles, and
(re-run - F) / (W - F): the share of the tiles' time it spent.
The re-run's class raster must equal the uninterrupted run's. ``--baseline REV`` measures a
git revision the same way in the same run (its checkout first on PYTHONPATH), for a before/after.
``--repeat N`` (odd): W is the median of N full runs, and each fraction's row the median of N kills.
Writes benchmarks/results/resume.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from landsat import ROOT, landsat_scene, unet, write_result


def command(scene: Path, bundle: Path, out: Path, tiles: Path, chunk: int) -> list[str]:
    return [sys.executable, "-m", "geoseg", "predict", str(scene), "--model", str(bundle),
            "--bands", "3,2,1", "--chunk", str(chunk), "--vector", "none", "--no-progress",
            "--workers", "2", "--out", str(out), "--tiles-dir", str(tiles)]  # fmt: skip


def timed(cmd: list[str], env: dict[str, str], kill_after: float | None = None) -> float:
    """Wall seconds of ``cmd``; killed (SIGKILL, whole process group) after ``kill_after``."""
    t0 = time.perf_counter()
    # `python -m` puts the working directory first on sys.path: a baseline runs in its checkout
    proc = subprocess.Popen(cmd, env=env, cwd=env.get("PYTHONPATH", ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"geoseg predict failed:\n{err.decode()[-3000:]}")
    return time.perf_counter() - t0


def classes(out: Path, scene: Path) -> np.ndarray:
    with rasterio.open(out / f"{scene.stem}_classes.tif") as ds:
        return ds.read(1)


def measure(scene: Path, bundle: Path, work: Path, chunk: int, fractions: list[float],
            env: dict[str, str], repeat: int = 1) -> dict:  # fmt: skip
    """Uninterrupted runs (W: their median), then per fraction ``repeat`` kills and re-runs."""
    shutil.rmtree(work, ignore_errors=True)
    full_cmd = command(scene, bundle, work / "full", work / "tiles-full", chunk)
    walls = []
    for _ in range(repeat):
        shutil.rmtree(work / "tiles-full", ignore_errors=True)
        (work / "full" / f"{scene.stem}_report.json").unlink(missing_ok=True)
        walls.append(timed(full_cmd, env))
    full_wall = statistics.median(walls)
    ref = classes(work / "full", scene)
    # the floor of any re-run: start-up, verifying the stored chunks, writing the outputs
    (work / "full" / f"{scene.stem}_report.json").unlink()
    floor = timed(full_cmd, env)
    rows = []
    for f in fractions:
        tries = [kill_and_rerun(scene, bundle, work / f"try{i}", chunk, f, full_wall, floor, ref, env)
                 for i in range(repeat)]  # fmt: skip
        row = sorted(tries, key=lambda r: r["rerun_over_full"])[(len(tries) - 1) // 2]
        rows.append({**row, "tries_rerun_over_full": [r["rerun_over_full"] for r in tries]})
    return {"chunk": chunk, "full_s": round(full_wall, 2), "full_s_tries": [round(w, 2) for w in walls],
            "floor_s": round(floor, 2), "kills": rows}  # fmt: skip


def kill_and_rerun(scene: Path, bundle: Path, work: Path, chunk: int, f: float, full_wall: float,
                   floor: float, ref: np.ndarray, env: dict[str, str]) -> dict:  # fmt: skip
    """A fresh run killed with SIGKILL after ``f`` x W, then the same command again."""
    out, tiles = work / f"out-{f}", work / f"tiles-{f}"
    shutil.rmtree(work, ignore_errors=True)
    cmd = command(scene, bundle, out, tiles, chunk)
    timed(cmd, env, kill_after=f * full_wall)
    stored = sum(1 for _ in tiles.glob("*/done/*.json"))
    wall = timed(cmd, env)
    report = json.loads((out / f"{scene.stem}_report.json").read_text())
    run, total = report["tiles"]["run"], report["tiles"]["total"]
    identical = bool(np.array_equal(classes(out, scene), ref))
    # of the tiles' share of a full run, the share the re-run spent (vs tiles run / tiles)
    model_share = (wall - floor) / (full_wall - floor)
    done = 1 - run / total  # the work done at the kill: the tiles the re-run found finished
    row = {"fraction": f, "chunks_stored_at_kill": stored, "rerun_tiles_share": round(model_share, 3),
           "chunks": report["chunks"]["total"], "rerun_s": round(wall, 2),
           "rerun_over_full": round(wall / full_wall, 3), "tiles_run": run, "tiles": total,
           "target": round(1 - f + 0.1, 3), "met": wall / full_wall <= 1 - f + 0.1,
           "tiles_done_at_kill": round(done, 3), "target_by_work": round(1.1 - done, 3),
           "met_by_work": wall / full_wall <= 1.1 - done, "identical": identical}  # fmt: skip
    print(f"  chunk {chunk}, killed at {f:.0%}: {stored}/{row['chunks']} chunks stored; "
          f"re-run {wall:.1f} s = {wall / full_wall:.2f} of a full run (target by time "
          f"<= {1 - f + 0.1:.2f}, by the tiles done {1.1 - done:.2f}), tiles run "
          f"{run}/{total} (time share {model_share:.2f}), identical: {identical}", flush=True)
    return row


def baseline_env(rev: str, work: Path) -> dict[str, str]:
    """An environment whose ``geoseg`` is the checkout of ``rev`` (a detached worktree; the
    child runs in it)."""
    tree = work / f"src-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                       check=True, capture_output=True)  # fmt: skip
    return {**os.environ, "PYTHONPATH": str(tree)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--chunks", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--baseline", help="a git revision to measure too (before/after)")
    ap.add_argument("--repeat", type=int, default=1, help="full runs and kills per fraction "
                    "(medians reported: these machines are noisy)")
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-resume")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "resume.json")
    a = ap.parse_args()
    scene, bundle = landsat_scene(a.work, a.size), unet(a.work)
    versions = {"this": dict(os.environ)}
    if a.baseline:
        versions[a.baseline] = baseline_env(a.baseline, a.work)
    result: dict = {"size": a.size, "model": "unet-r18 (tile 512, overlap 64), untrained",
                    "loadavg_before": os.getloadavg()[0], "runs": []}  # fmt: skip
    for chunk in a.chunks:
        for name, env in versions.items():
            print(f"{name}:", flush=True)
            row = measure(scene, bundle, a.work / f"{name}-{chunk}", chunk, a.fractions, env,
                          a.repeat)  # fmt: skip
            result["runs"].append({"version": name, **row})
    write_result(a.out, result)


if __name__ == "__main__":
    main()
