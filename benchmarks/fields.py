"""Field benchmark: per-field statistics (fields/s, peak RSS as fields grow) and field
polygonisation time as a share of the predict run that made its raster.

Usage: python benchmarks/fields.py [--size 16384] [--fields 50000 100000 200000]
                                   [--predict-size 2048] [--work DIR] [--out JSON]
       python benchmarks/fields.py --quick      (a minute: 2048² raster, 20k/50k fields)
Writes benchmarks/results/fields.json and prints a table. Every measurement is a fresh
subprocess, so its peak RSS (ru_maxrss) is its own.

Data (generated): a 3-class raster of blocky fields (random class per 32 px cell, 1-2 px
boundary lines between cells) and a grid of square fields over it, in UTM 33N at 10 m. The
predict part runs an untrained FTW-shaped 3-class U-Net (two 4-band windows) on a Sentinel-2
like image cut from ../shared/data/ftw (tiled to --predict-size), then delineates its classes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FTW = ROOT.parent / "shared" / "data" / "ftw" / "inference-img.tif"
CRS, X0, Y0, PX = "EPSG:32633", 500000.0, 5800000.0, 10.0


def make_classes(path: Path, size: int) -> None:
    """Blocky 3-class raster written block by block (bounded memory)."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
               "crs": CRS, "transform": Affine(PX, 0, X0, 0, -PX, Y0), "nodata": 255,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, 1024):
            for c0 in range(0, size, 1024):
                h, w = min(1024, size - r0), min(1024, size - c0)
                cells = rng.integers(0, 3, (h // 32 + 1, w // 32 + 1)).astype(np.uint8)
                block = np.kron(cells, np.ones((32, 32), np.uint8))[:h, :w]
                block[::32, :] = 2
                block[:, ::32] = 2
                ds.write(block, 1, window=rasterio.windows.Window(c0, r0, w, h))


def make_fields(path: Path, size: int, n: int) -> None:
    """A grid of about ``n`` square fields covering the raster (GeoPackage)."""
    import pyarrow as pa
    import pyogrio
    import shapely

    side = round(n**0.5)
    step = size * PX / side
    i, j = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side)))
    x, y = X0 + i * step, Y0 - (j + 1) * step
    geoms = shapely.box(x + 1, y + 1, x + step - 1, y + step - 1)
    table = pa.table({"field": np.arange(len(geoms)), "geometry": shapely.to_wkb(geoms)})
    pyogrio.write_arrow(table, path, geometry_name="geometry", geometry_type="Polygon", crs=CRS,
                        driver="GPKG")  # fmt: skip


def child(argv: list[str]) -> None:
    """One measurement in this process; prints JSON."""
    kind, *rest = argv
    t0 = time.perf_counter()
    extra: dict = {}
    if kind == "stats":
        from geoseg.fields.raster import open_class_raster
        from geoseg.fields.stats import StatsOptions, field_stats

        raster, fields, out = rest
        res = field_stats(fields, open_class_raster(raster), out, options=StatsOptions())
        extra = {"fields": res["fields"], "fields_per_s": res["fields_per_s"]}
    elif kind == "polygons":
        from geoseg.fields.delineate import Delineation, delineate_fields
        from geoseg.fields.raster import open_class_raster

        raster, out = rest
        res = delineate_fields(open_class_raster(raster), out, Delineation(chunk=1024))
        extra = {"fields": res["fields"], "timings_s": res["timings_s"]}
    elif kind == "predict":
        from geoseg.runs.options import PredictOptions
        from geoseg.runs.predict import predict

        image, bundle, out, tiles = rest
        report = predict(image, bundle, out, {"window_b": image}, PredictOptions(
            bands=[1, 2, 3, 4], modality_bands={"window_b": [5, 6, 7, 8]}, vector="none",
            overwrite=True, progress=False, tiles_dir=Path(tiles)))  # fmt: skip
        extra = {"timings_s": report["timings_s"]}
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mib": rss, **extra}))


def run_child(*args: object) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_image(path: Path, size: int) -> None:
    """The FTW sample tiled to ``size``² (a Sentinel-2 like 8-band image)."""
    import rasterio
    from affine import Affine

    with rasterio.open(FTW) as src:
        tile = src.read()
    reps = (1, -(-size // tile.shape[1]), -(-size // tile.shape[2]))
    data = np.tile(tile, reps)[:, :size, :size]
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=8, dtype="uint16",
                       crs=CRS, transform=Affine(PX, 0, X0, 0, -PX, Y0), tiled=True,
                       compress="deflate") as ds:  # fmt: skip
        ds.write(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--fields", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    ap.add_argument("--predict-size", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/geoseg-bench-fields")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/"
                    "fields.json, fields-quick.json with --quick)")
    ap.add_argument("--child", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.size, args.fields, args.predict_size = 2048, [20_000, 50_000], 512
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    raster = work / f"classes_{args.size}.tif"
    if not raster.exists():
        make_classes(raster, args.size)
    results: dict = {"size": args.size, "stats": [], "polygons": None, "predict": None}
    for n in args.fields:
        fields = work / f"fields_{args.size}_{n}.gpkg"
        if not fields.exists():
            make_fields(fields, args.size, n)
        r = run_child("stats", raster, fields, work / f"stats_{n}.parquet")
        results["stats"].append(r)
        print(f"stats  {r['fields']:>8,d} fields  {r['wall_s']:7.1f} s  {r['fields_per_s']:8,.0f} "
              f"fields/s  peak RSS {r['peak_rss_mib']:6.0f} MiB", flush=True)  # fmt: skip
    r = run_child("polygons", raster, work / "fields.parquet")
    results["polygons"] = r
    print(f"polygons {args.size}²: {r['fields']:,d} fields  {r['wall_s']:.1f} s  peak RSS "
          f"{r['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
    if FTW.exists():
        image = work / f"s2_{args.predict_size}.tif"
        if not image.exists():
            make_image(image, args.predict_size)
        bundle = work / "ftw-untrained"
        if not bundle.exists():
            from geoseg.bundle.untrained import init_bundle

            init_bundle("unet", {"image": 4, "window_b": 4}, 3, tile=256, output=bundle,
                        roles={"image": ["red", "green", "blue", "nir"],
                               "window_b": ["red", "green", "blue", "nir"]})  # fmt: skip
        p = run_child("predict", image, bundle, work / "pred", work / "tiles")
        classes = next((work / "pred").glob("*_classes.tif"))
        d = run_child("polygons", classes, work / "pred_fields.parquet")
        share = d["wall_s"] / (p["wall_s"] + d["wall_s"])
        results["predict"] = {"size": args.predict_size, "predict": p, "polygons": d, "share": share}
        print(f"predict {args.predict_size}²: {p['wall_s']:.1f} s; field polygons "
              f"{d['wall_s']:.1f} s ({d['fields']:,d} fields) = {100 * share:.1f} % of the run")
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results" / ("fields-quick.json" if args.quick else "fields.json"))
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
