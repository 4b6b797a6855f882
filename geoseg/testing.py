"""Large test scenes generated from real imagery (for tests and benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio


def mosaic_scene(source: str | Path, out: str | Path, size: int, block: int = 512) -> Path:
    """Write a ``size`` x ``size`` tiled GeoTIFF by mirroring ``source`` (real pixels) over it.

    The source is tiled with alternating flips so no artificial edges appear; georeferencing
    keeps the source's origin, pixel size and CRS. Written block by block (bounded memory).
    """
    with rasterio.open(source) as src:
        data = src.read()
        profile = src.profile
        nodata = src.nodata
    # flipped copies make a seamless 2h x 2w period
    period = np.concatenate(
        [np.concatenate([data, data[:, :, ::-1]], axis=2),
         np.concatenate([data[:, ::-1], data[:, ::-1, ::-1]], axis=2)], axis=1)  # fmt: skip
    ph, pw = period.shape[1:]
    profile.update(width=size, height=size, tiled=True, blockxsize=block, blockysize=block,
                   compress="deflate", BIGTIFF="IF_SAFER", driver="GTiff")  # fmt: skip
    profile["transform"] = profile["transform"]
    profile.pop("photometric", None)
    profile["nodata"] = nodata
    out = Path(out)
    with rasterio.open(out, "w", **profile) as dst:
        for r0 in range(0, size, block):
            rows = np.arange(r0, min(r0 + block, size)) % ph
            for c0 in range(0, size, block):
                cols = np.arange(c0, min(c0 + block, size)) % pw
                win = rasterio.windows.Window(c0, r0, len(cols), len(rows))
                dst.write(period[:, rows][:, :, cols], window=win)
    return out
