"""Cost of the tile store's chunk checksums (issue 18): CRC-32 when a chunk is stored, and
``TileStore.verify`` reading every stored chunk back when a run resumes.

Usage: python benchmarks/verify.py [--size 8192] [--chunk 1024] [--classes 6] [--work DIR]

Builds a store of ``size``² pixels from a class map shaped like a real prediction (smooth
regions, noisy confidence), with and without the probability array, then times: the CRC-32 of
each chunk's arrays at write time, the whole ``verify`` (open, read, decompress, CRC-32) and,
for scale, the predictor's wall time at that size from docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from geoseg.geometry.window import PixelWindow
from geoseg.store.tiles import TileStore, crc32

#: predictor wall time (s) of a U-Net/R18 "classes" run, docs/benchmarks.md (quiet machine)
UNET_WALL = {2048: 9.4, 4096: 22.4, 8192: 85.9, 16384: 306.5}


def chunk_arrays(rng: np.random.Generator, c: int, k: int) -> tuple[np.ndarray, ...]:
    """Classes in smooth regions, a noisy confidence, quantised probabilities."""
    coarse = rng.random((k, c // 64 + 1, c // 64 + 1), dtype=np.float32)
    field = np.repeat(np.repeat(coarse, 64, axis=1), 64, axis=2)[:, :c, :c]
    field += 0.2 * rng.random((k, c, c), dtype=np.float32)
    probs = field / field.sum(axis=0, keepdims=True)
    classes = probs.argmax(axis=0).astype(np.uint8)
    conf = np.rint(probs.max(axis=0) * 254).astype(np.uint8)
    return classes, conf, np.rint(probs * 254).astype(np.uint8)


def measure(root: Path, size: int, c: int, k: int, probabilities: bool) -> dict[str, float]:
    rng = np.random.default_rng(0)
    store = TileStore.create(root, (size, size), c, k, probabilities, {})
    n = size // c
    crc_s = write_s = 0.0
    bytes_raw = 0
    for i in range(n):
        for j in range(n):
            classes, conf, probs = chunk_arrays(rng, c, k)
            probs = probs if probabilities else None
            arrays = [a for a in (classes, conf, probs) if a is not None]
            t = time.perf_counter()
            for a in arrays:
                crc32(a)
            crc_s += time.perf_counter() - t
            bytes_raw += sum(a.nbytes for a in arrays)
            t = time.perf_counter()
            store.write_chunk((i, j), PixelWindow(i * c, (i + 1) * c, j * c, (j + 1) * c),
                              classes, conf, probs, {"valid_pixels": c * c})  # fmt: skip
            write_s += time.perf_counter() - t
    t = time.perf_counter()
    good, bad = store.verify()
    verify_s = time.perf_counter() - t
    assert len(good) == n * n and not bad
    on_disk = sum(p.stat().st_size for p in (root / "store.zarr").rglob("*") if p.is_file())
    shutil.rmtree(root)
    return {"size": size, "chunk": c, "classes": k, "probabilities": probabilities,
            "chunks": n * n, "raw_mb": round(bytes_raw / 1e6, 1),
            "on_disk_mb": round(on_disk / 1e6, 1), "crc_at_write_s": round(crc_s, 3),
            "write_s": round(write_s, 3), "verify_s": round(verify_s, 3),
            "verify_mb_per_s": round(bytes_raw / 1e6 / verify_s, 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "verify.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-verify-", dir=args.work))
    rows = [measure(work / f"s{p}", args.size, args.chunk, args.classes, p) for p in (False, True)]
    shutil.rmtree(work, ignore_errors=True)
    ref = UNET_WALL.get(args.size)
    for r in rows:
        r["share_of_unet_run"] = round(r["verify_s"] / ref, 4) if ref else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print("| scene | arrays | chunks | raw MB | on disk MB | CRC at write | verify (read back) "
          "| verify MB/s | verify / U-Net run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        arrays = "classes, confidence" + (f", {r['classes']} probabilities" if r["probabilities"]
                                          else "")  # fmt: skip
        share = f"{100 * r['share_of_unet_run']:.1f} %" if r["share_of_unet_run"] else "–"
        print(f"| {r['size']}² | {arrays} | {r['chunks']} | {r['raw_mb']} | {r['on_disk_mb']} | "
              f"{r['crc_at_write_s']} s | {r['verify_s']} s | {r['verify_mb_per_s']} | {share} |")


if __name__ == "__main__":
    main()
