"""Predictor benchmark: wall time, Mpx/s, peak RSS, pipeline efficiency, hand loop, peers.

Usage: python benchmarks/predict.py [--sizes 2048 4096 8192 16384] [--work DIR]
       python benchmarks/predict.py --table benchmarks/results/predict.json  (markdown table)
       python benchmarks/predict.py --peers-only --rv-python /work/rvenv/bin/python --sizes 8192
Prints a table and writes benchmarks/results/predict.json. Every measured run is a fresh
subprocess so peak RSS is its own. Ratios are taken within one run (machines are noisy).

pipeline efficiency = model-only forward time on exactly the batches the plan runs
                      / end-to-end wall time of `geoseg predict` (COG + vector writing included)

Peers (issue 17): with ``--rv-python PATH`` (the python of a venv holding Raster Vision 0.31, the
``bench`` extra; it needs pandas < 3, so not geoseg's venv), every U-Net scene is also predicted
by Raster Vision's ``predict_scene_ss`` (benchmarks/peers.py) with the same model, chip (tile) and
stride (tile - overlap), batch 1 and ``--rv-threads`` torch threads, right after geoseg's
classes-only run with 2 workers; both processes' peak RSS is compared with their bare process
(imports + model). ``--peers-only`` runs just these (geoseg classes, geoseg bare, RV) and writes
benchmarks/results/predict_peers.json, keeping the rows of other sizes already there. RV is
skipped where its wall or memory, extrapolated from a smaller size's run, would pass
``--rv-max-wall`` or 80 % of the available memory.

Raster Vision's overlay venv (sees geoseg's torch, smp, rasterio through a .pth file; geoseg
itself through PYTHONPATH, set for the child):
    python3.11 -m venv /work/rvenv
    SITE=/work/rvenv/lib/python3.11/site-packages
    echo "$PWD/.venv/lib/python3.11/site-packages" > $SITE/zz_geoseg_overlay.pth  # appended
    /work/rvenv/bin/pip install "pandas<3" rastervision_core==0.31.1 rastervision_pytorch_learner==0.31.1
    /work/rvenv/bin/python -c "import rastervision.pytorch_learner"  # check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
        scene, bundle, chunk, batch, workers, *tile = rest
        extra = model_only(scene, bundle, int(chunk), int(batch), int(workers), int(*tile or [0]))
    elif kind == "handloop":
        scene, bundle, out, threads = rest
        extra = hand_loop(scene, bundle, out, int(threads))
    elif kind == "geoseg_bare":
        from peers import geoseg_bare

        extra = geoseg_bare(*rest)
    elif kind == "rv":  # run by --rv-python
        from peers import rv_predict

        scene, bundle, out, threads, stride = rest
        extra = rv_predict(scene, bundle, out, int(threads), int(stride))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    # the process tree: the largest child it waited for (0 if none; ldconfig, run by ctypes at
    # import, counts the pages it shared with its parent between fork and exec)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mib": rss, "children_peak_rss_mib": kids, **extra}))


def model_only(scene: str, bundle: str, chunk: int, batch: int, workers: int, tile: int = 0) -> dict:
    """Forward time of the model alone on the plan's exact batches (no I/O, no blending),
    with geoseg's worker layout: ``workers`` threads, cores // workers torch threads each.
    ``tile``: as ``--tile`` (0: the bundle's)."""
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
    tile = tile or card.tile_size
    plan = TilePlan(h, w, tile, min(card.halo, tile // 4), chunk)
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


def measure(*args: str, python: str = sys.executable) -> dict:
    """Run one ``--child`` measurement in a fresh ``python`` process; its JSON line."""
    env = None
    if python != sys.executable:  # a peer's venv: geoseg through PYTHONPATH (no editable finder)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
    proc = subprocess.run([python, __file__, "--child", *args], capture_output=True, text=True,
                          check=False, env=env)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed: {args}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    ap.add_argument("--compare-sizes", type=int, nargs="*", default=[2048, 4096],
                    help="sizes also timed with 1 worker, TinyCNN and the hand loop (none: no value)")
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench")
    ap.add_argument("--chunk", type=int, default=0, help="0: geoseg's default (auto)")
    ap.add_argument("--batch", type=int, default=0, help="0: geoseg's default (1 on CPU)")
    ap.add_argument("--workers", type=int, default=2, help="workers for the non-compared sizes")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/predict.json (predict_peers.json with --peers-only)",
    )
    ap.add_argument(
        "--rv-python",
        default=None,
        help="python of a venv with Raster Vision 0.31: adds it as a peer (default: skipped)",
    )
    ap.add_argument("--rv-threads", type=int, default=2, help="torch threads of the RV process")
    ap.add_argument(
        "--rv-max-wall",
        type=float,
        default=600.0,
        help="skip RV where its extrapolated wall time is longer (s)",
    )
    ap.add_argument(
        "--peers-only",
        action="store_true",
        help="only geoseg classes (2 workers) and the peers, U-Net; needs --rv-python",
    )
    a = ap.parse_args()
    if a.peers_only and not a.rv_python:
        ap.error("--peers-only needs --rv-python")
    name = "predict_peers.json" if a.peers_only else "predict.json"
    a.out = a.out or ROOT / "benchmarks" / "results" / name
    return a


def main() -> None:
    a = args()
    from geoseg.bundle.untrained import init_bundle
    from geoseg.runtime import available_cores

    cores = available_cores()
    a.work.mkdir(parents=True, exist_ok=True)
    bundles = {
        "unet-r18": init_bundle("unet", {"image": 3}, 6, {"encoder": "resnet18"}, seed=0,
                                tile=512, stats_from=SOURCE, stats_bands=[3, 2, 1],
                                output=a.work / "unet-r18"),
        "tinycnn": init_bundle("tinycnn", {"image": 3}, 6, seed=0, tile=512,
                               stats_from=SOURCE, stats_bands=[3, 2, 1], output=a.work / "tinycnn"),
    }  # fmt: skip
    if a.peers_only:
        return peers_only(a, str(bundles["unet-r18"]), cores)
    results: dict = {"cores": cores, "chunk": a.chunk, "batch": a.batch, "runs": []}
    for size in sorted(set(a.sizes) | set(a.compare_sizes)):
        scene = scene_of(a.work, size)
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
            if a.rv_python and mname == "unet-r18":
                run = row.get("classes_w2") or row[best]
                peer = peer_row(a, scene, b, size, run, results.setdefault("peers", []))
                results["peers"].append(peer)
                line += "  " + peer_line(peer)
            results["runs"].append(row)
            print(line, flush=True)
            save(results, a.out)  # after every row: a long run that is cut short keeps its rows
    if results.get("peers"):
        print(peers_table(results["peers"]))
    rss = {r["size"]: r["full"]["peak_rss_mib"] for r in results["runs"] if r["model"] == "unet-r18"}
    if 4096 in rss and max(rss) > 4096:
        results["rss_ratio_largest_vs_4096"] = rss[max(rss)] / rss[4096]
        print(f"peak RSS {max(rss)}² / 4096²: {results['rss_ratio_largest_vs_4096']:.2f}")
    save(results, a.out)
    print(markdown_table(results))
    print(f"wrote {a.out}")


def scene_of(work: Path, size: int) -> Path:
    """The mosaic scene of ``size``² (made once)."""
    from geoseg.testing import mosaic_scene

    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        mosaic_scene(SOURCE, scene, size)
    return scene


def peer_row(a: argparse.Namespace, scene: Path, bundle: str, size: int, run: dict,
             done: list[dict]) -> dict:  # fmt: skip
    """Raster Vision on ``scene`` next to geoseg's classes ``run`` (skipped if it would not fit)."""
    import peers
    import psutil

    from geoseg.bundle.bundle import read_card

    card = read_card(bundle)
    tile = card.tile_size
    stride = tile - min(card.halo, tile // 4)  # geoseg's overlap: the same windows' step
    bare = measure("geoseg_bare", bundle)["bare_rss_mib"]
    g = {**run, "bare_rss_mib": bare, "above_bare_mib": run["peak_rss_mib"] - bare}
    row: dict = {"size": size, "geoseg": g, "chip": tile, "stride": stride, "batch": 1,
                 "load_avg_before": os.getloadavg()}  # fmt: skip
    smaller = [r for r in done if "rv" in r and r["size"] < size]
    if smaller:
        est = peers.rv_estimate(max(smaller, key=lambda r: r["size"]), size, len(card.classes),
                                tile, stride)  # fmt: skip
        row["rv_estimate"] = est
        free = psutil.virtual_memory().available / 2**20
        if est["wall_s"] > a.rv_max_wall or est["peak_rss_mib"] > 0.8 * free:
            row["rv_skipped"] = (f"estimated {est['wall_s']:.0f} s (limit {a.rv_max_wall:.0f}), "
                                 f"{est['peak_rss_mib']:.0f} MiB (available {free:.0f})")  # fmt: skip
            return row
    out = a.work / f"rv_{size}"
    shutil.rmtree(out, ignore_errors=True)
    rv = measure("rv", str(scene), bundle, str(out), str(a.rv_threads), str(stride),
                 python=a.rv_python)  # fmt: skip
    rv["above_bare_mib"] = rv["peak_rss_mib"] - rv["bare_rss_mib"]
    row["rv"] = rv
    row["load_avg_after"] = os.getloadavg()
    classes = a.work / f"out_{size}_unet-r18" / f"{scene.stem}_classes.tif"
    row["agreement"] = peers.agreement(rv["labels"], str(classes))
    row["ratios"] = peers.ratios(row)
    return row


def peer_line(row: dict) -> str:
    """One progress line of a peers row."""
    if "rv" not in row:
        return f"RV skipped: {row['rv_skipped']}"
    rv, q = row["rv"], row["ratios"]
    return (f"RV {rv['wall_s']:.1f}s (x{q['wall_s']:.2f}) rss {rv['peak_rss_mib']:.0f} MiB "
            f"(x{q['peak_rss_mib']:.2f}) above bare {rv['above_bare_mib']:.0f} MiB "
            f"(x{q['above_bare_mib']:.2f}) same class {row['agreement']:.3f}")  # fmt: skip


def peers_only(a: argparse.Namespace, bundle: str, cores: int) -> None:
    """geoseg (classes, 2 workers) and the peers only; rows of other sizes in ``a.out`` are kept."""
    from peers import peers_table

    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    rows = [r for r in old.get("peers", []) if r["size"] not in a.sizes]
    results = {"cores": cores, "peers": rows}
    for size in sorted(a.sizes):
        scene = scene_of(a.work, size)
        out = a.work / f"out_{size}_unet-r18"
        run = measure("geoseg", str(scene), bundle, str(out), str(a.work / "tiles"), str(a.chunk),
                      "2", str(a.batch), "classes")  # fmt: skip
        row = peer_row(a, scene, bundle, size, run, rows)
        row["date"] = time.strftime("%Y-%m-%d %H:%M")
        rows.append(row)
        rows.sort(key=lambda r: r["size"])
        print(f"{size:>6}² geoseg {run['wall_s']:.1f}s rss {run['peak_rss_mib']:.0f} MiB  "
              + peer_line(row), flush=True)  # fmt: skip
        save(results, a.out)
    print(peers_table(rows))
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
        from peers import peers_table

        res = json.loads(Path(sys.argv[2]).read_text())
        print("\n\n".join(([markdown_table(res)] if res.get("runs") else [])
                           + ([peers_table(res["peers"])] if res.get("peers") else [])))  # fmt: skip
    else:
        main()
