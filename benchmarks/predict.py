"""Predictor benchmark: wall time, Mpx/s, peak RSS, pipeline efficiency, hand-written loop.

Usage: python benchmarks/predict.py [--sizes 2048 4096 8192 16384] [--work DIR]
       python benchmarks/predict.py --table benchmarks/results/predict.json  (markdown table)
Prints a table and writes benchmarks/results/predict.json. Every measured run is a fresh
subprocess so peak RSS is its own. Ratios are taken within one run (machines are noisy).

pipeline efficiency = model-only forward time on exactly the batches the plan runs
                      / end-to-end wall time of `geoseg predict` (COG + vector writing included)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "olinda" / "L7_ETMs.tif"  # real Landsat 7, no nodata
BANDS = "3,2,1"


def child(argv: list[str]) -> None:
    """Run one measurement in this process and print JSON (wall, peak RSS)."""
    kind, *rest = argv
    t0 = time.perf_counter()
    if kind == "geoseg":
        scene, bundle, out, tiles, chunk, workers, batch, outputs = rest
        from geoseg.runs.options import PredictOptions
        from geoseg.runs.predict import predict

        full = outputs == "full"
        report = predict(scene, bundle, out, options=PredictOptions(
            bands=[3, 2, 1], chunk=int(chunk) or None, workers=int(workers), batch=int(batch) or None,
            overwrite=True, progress=False, tiles_dir=Path(tiles),
            vector="gpkg" if full else "none", confidence=full))  # fmt: skip
        extra = {"report": {k: report[k] for k in ("overlap_factor", "chunks", "timings_s")},
                 "chunk": report["settings"]["chunk"], "batch": report["settings"]["batch"]}
    elif kind == "model_only":
        scene, bundle, chunk, batch, workers = rest
        extra = model_only(scene, bundle, int(chunk), int(batch), int(workers))
    elif kind == "handloop":
        scene, bundle, out, threads = rest
        extra = hand_loop(scene, bundle, out, int(threads))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    print(json.dumps({"wall_s": wall, "peak_rss_mib": rss, **extra}))


def model_only(scene: str, bundle: str, chunk: int, batch: int, workers: int) -> dict:
    """Forward time of the model alone on the plan's exact batches (no I/O, no blending),
    with geoseg's worker layout: ``workers`` threads, cores // workers torch threads each."""
    from concurrent.futures import ThreadPoolExecutor

    import rasterio
    import torch

    from geoseg.bundle.bundle import load_bundle, read_card
    from geoseg.runtime import plan_threads
    from geoseg.tiling.plan import TilePlan

    workers, threads = plan_threads(workers)
    torch.set_num_threads(threads)
    card = read_card(bundle)
    model = load_bundle(bundle).model
    with rasterio.open(scene) as ds:
        h, w = ds.shape
    plan = TilePlan(h, w, card.tile_size, min(card.halo, card.tile_size // 4), chunk)
    sizes = [min(batch, len(ch.tiles) - i) for ch in plan.chunks.values()
             for i in range(0, len(ch.tiles), batch)]  # fmt: skip
    x = {m: torch.randn(batch, len(c.bands), plan.tile_h, plan.tile_w)
         for m, c in card.modalities.items()}  # fmt: skip
    def run(n: int) -> None:
        with torch.inference_mode():
            torch.softmax(model({k: v[:n] for k, v in x.items()}), dim=1)

    run(1)  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, sizes))
    dt = time.perf_counter() - t0
    return {"model_s": dt, "tiles": sum(sizes), "overlap_factor": plan.overlap_factor}


def hand_loop(scene: str, bundle: str, out: str, threads: int) -> dict:
    """What users write by hand: overlapping rasterio windows -> model -> argmax -> centres.

    Batch 1, same tile/overlap and normalisation as geoseg, output a tiled GeoTIFF (no COG,
    no vectors, no nodata handling, no resume).
    """
    import numpy as np
    import rasterio
    import torch
    from rasterio.windows import Window

    from geoseg.bundle.bundle import load_bundle

    torch.set_num_threads(threads)
    b = load_bundle(bundle)
    card, model = b.card, b.model
    mean = np.array(card.modalities["image"].mean, np.float32)[:, None, None]
    std = np.array(card.modalities["image"].std, np.float32)[:, None, None]
    tile = card.tile_size
    ov = min(card.halo, tile // 4)
    step = tile - ov
    tiles = 0
    with rasterio.open(scene) as src:
        h, w = src.shape
        prof = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8",
                "crs": src.crs, "transform": src.transform, "tiled": True, "compress": "deflate",
                "BIGTIFF": "IF_SAFER"}  # fmt: skip
        with rasterio.open(out, "w", **prof) as dst, torch.inference_mode():
            for r in range(0, h, step):
                r = min(r, max(h - tile, 0))
                for c in range(0, w, step):
                    c = min(c, max(w - tile, 0))
                    win = Window(c, r, min(tile, w - c), min(tile, h - r))
                    x = (src.read([3, 2, 1], window=win).astype(np.float32) - mean) / std
                    pred = model({"image": torch.from_numpy(x)[None]}).argmax(1)[0].numpy()
                    tiles += 1
                    top = 0 if r == 0 else ov // 2
                    left = 0 if c == 0 else ov // 2
                    core = pred[top:, left:].astype(np.uint8)
                    dst.write(core[None], window=Window(c + left, r + top, core.shape[1],
                                                        core.shape[0]))  # fmt: skip
                    if c + tile >= w:
                        break
                if r + tile >= h:
                    break
    return {"tiles": tiles}


def measure(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {args}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--compare-sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench")
    ap.add_argument("--chunk", type=int, default=0, help="0: geoseg's default (auto)")
    ap.add_argument("--batch", type=int, default=0, help="0: geoseg's default (1 on CPU)")
    ap.add_argument("--workers", type=int, default=2, help="workers for the non-compared sizes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    a = ap.parse_args()
    from geoseg.bundle.untrained import init_bundle
    from geoseg.runtime import available_cores
    from geoseg.testing import mosaic_scene

    cores = available_cores()
    a.work.mkdir(parents=True, exist_ok=True)
    bundles = {
        "unet-r18": init_bundle("unet", {"image": 3}, 6, {"encoder": "resnet18"}, seed=0,
                                tile=512, stats_from=SOURCE, stats_bands=[3, 2, 1],
                                output=a.work / "unet-r18"),
        "tinycnn": init_bundle("tinycnn", {"image": 3}, 6, seed=0, tile=512,
                               stats_from=SOURCE, stats_bands=[3, 2, 1], output=a.work / "tinycnn"),
    }  # fmt: skip
    results: dict = {"cores": cores, "chunk": a.chunk, "batch": a.batch, "runs": []}
    for size in sorted(set(a.sizes) | set(a.compare_sizes)):
        scene = a.work / f"scene_{size}.tif"
        if not scene.exists():
            mosaic_scene(SOURCE, scene, size)
        compare = size in a.compare_sizes
        for mname in ["unet-r18"] + (["tinycnn"] if compare else []):
            b = str(bundles[mname])
            row: dict = {"size": size, "model": mname, "mpx": size * size / 1e6}

            common = [str(scene), b, str(a.work / f"out_{size}_{mname}"), str(a.work / "tiles"),
                      str(a.chunk)]

            def geoseg(workers: int, outputs: str, common: list[str] = common) -> dict:
                return measure("geoseg", *common, str(workers), str(a.batch), outputs)

            # classes COG only: the same work as the hand-written loop (compared sizes only)
            for w in (1, 2) if compare else (a.workers,):
                row[f"classes_w{w}"] = geoseg(w, "classes")
            best = min((k for k in row if k.startswith("classes_w")), key=lambda k: row[k]["wall_s"])
            w = int(best.split("_w")[1])
            row["best_workers"] = w
            row["full"] = geoseg(w, "full")  # + confidence COG, polygons, quicklook, styles
            # the model alone on exactly the batches of the plan geoseg resolved (chunk, batch)
            full = row["full"]
            m = measure("model_only", str(scene), b, str(full["chunk"]), str(full["batch"]), str(w))
            row["model_only"] = m
            g = row[best]
            row["efficiency_full"] = m["model_s"] / row["full"]["wall_s"]
            row["mpx_per_s_full"] = row["mpx"] / row["full"]["wall_s"]
            line = (f"{size:>6}² {mname:9s} full {row['full']['wall_s']:7.1f}s (w{w}) "
                    f"{row['mpx_per_s_full']:5.2f} Mpx/s  rss {row['full']['peak_rss_mib']:6.0f} MiB  "
                    f"eff(full) {row['efficiency_full']:.2f}  overlap {m['overlap_factor']:.3f}")  # fmt: skip
            row["efficiency_classes"] = m["model_s"] / g["wall_s"]
            line += f"  classes {g['wall_s']:.1f}s eff {row['efficiency_classes']:.2f}"
            if compare:
                hl = measure("handloop", str(scene), b, str(a.work / f"hand_{size}.tif"),
                             str(cores))  # fmt: skip
                row["hand_loop"] = hl
                row["speedup_vs_hand_loop"] = hl["wall_s"] / g["wall_s"]
                line += f"  hand-loop {hl['wall_s']:.1f}s (x{row['speedup_vs_hand_loop']:.2f})"
            results["runs"].append(row)
            print(line, flush=True)
            save(results, a.out)  # after every row: a long run that is cut short keeps its rows
    rss = {r["size"]: r["full"]["peak_rss_mib"] for r in results["runs"] if r["model"] == "unet-r18"}
    if 4096 in rss and max(rss) > 4096:
        results["rss_ratio_largest_vs_4096"] = rss[max(rss)] / rss[4096]
        print(f"peak RSS {max(rss)}² / 4096²: {results['rss_ratio_largest_vs_4096']:.2f}")
    save(results, a.out)
    print(markdown_table(results))
    print(f"wrote {a.out}")


def markdown_table(results: dict) -> str:
    """The docs/benchmarks.md table of a results JSON (``--table FILE`` prints it again)."""
    head = ("| scene | model | classes wall | Mpx/s | efficiency classes | full wall | efficiency "
            "full | peak RSS full | overlap factor | chunk / batch / workers | hand loop | "
            "speed-up vs hand loop |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results["runs"]:
        c = r[f"classes_w{r['best_workers']}"]
        hl = r.get("hand_loop")
        lines.append(
            f"| {r['size']}² | {r['model']} | {c['wall_s']:.1f} s | {r['mpx'] / c['wall_s']:.2f} | "
            f"{r['efficiency_classes']:.2f} | {r['full']['wall_s']:.1f} s | "
            f"{r['efficiency_full']:.2f} | {r['full']['peak_rss_mib']:.0f} MiB | "
            f"{r['model_only']['overlap_factor']:.3f} | {c['chunk']} / {c['batch']} / "
            f"{r['best_workers']} | " + (f"{hl['wall_s']:.1f} s | ×{r['speedup_vs_hand_loop']:.2f} |"
                                         if hl else "– | – |"))  # fmt: skip
    if "rss_ratio_largest_vs_4096" in results:
        lines.append(f"\npeak RSS ratio largest / 4096²: {results['rss_ratio_largest_vs_4096']:.2f}")
    return "\n".join(lines)


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    elif len(sys.argv) > 2 and sys.argv[1] == "--table":
        print(markdown_table(json.loads(Path(sys.argv[2]).read_text())))
    else:
        main()
