"""Streaming Cloud-Optimized GeoTIFF writer: bounded memory whatever the scene's size.

Blocks are pulled one at a time from a ``read_block(r0, r1, c0, c1)`` callable and written into
a temporary tiled GeoTIFF; GDAL's COG driver then adds overviews and lays the file out as a COG.
No whole-scene array exists at any point, and GDAL's block cache is capped during both steps.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from geoseg._files import remove_quietly, temp_sibling, writable_folder, write_failed
from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox

BlockReader = Callable[[int, int, int, int], "np.ndarray | None"]

#: Overview resampling names accepted by ``write_cog`` (GDAL names in upper case).
RESAMPLING = {
    "mode": "MODE",
    "nearest": "NEAREST",
    "average": "AVERAGE",
    "bilinear": "BILINEAR",
    "cubic": "CUBIC",
}
#: Categorical resamplings: a predictor would only blur class boundaries into noise.
_CATEGORICAL = {"mode", "nearest"}
#: Bounds of GDAL's block cache during a write, MiB. The default cache is 5 % of RAM: on a
#: huge scene it fills up and alone breaks the memory target. Overview building reads strips
#: of one block row across the whole width, so the cap follows the width (two strips),
#: within these bounds (measured at 131072 px wide: a 32 MB cache doubled the time).
CACHE_MB_MIN, CACHE_MB_MAX = 64, 512


def write_cog(
    path: str | os.PathLike[str],
    grid: GridBox,
    read_block: BlockReader,
    *,
    count: int,
    dtype: str,
    nodata: float | None,
    block: int = 512,
    colormap: Mapping[int, tuple[int, ...]] | None = None,
    descriptions: Sequence[str] | None = None,
    overview_resampling: str = "mode",
    compress: str = "deflate",
    progress: bool = False,
    tags: Mapping[str, str] | None = None,
    cache_mb: int | None = None,
    threads: int | str = "ALL_CPUS",
) -> Path:
    """Write a COG of ``grid`` whose pixels come from ``read_block``, block by block.

    Args:
        path: destination ``.tif``; written as a hidden temporary file, renamed when complete.
        grid: output geometry (shape, transform, CRS are kept exactly).
        read_block: ``f(r0, r1, c0, c1)`` -> ``(count, h, w)`` array (``(h, w)`` when
            ``count == 1``; cast to ``dtype``), or ``None`` when the window is entirely
            nodata. Its exceptions propagate unchanged.
        count, dtype, nodata: band count, data type and nodata value of the output.
        block: internal tile size (multiple of 16), also the streaming window size.
        colormap: ``{value: (r, g, b[, a])}`` colour table of a single-band uint8/uint16 raster.
        descriptions: one description per band.
        overview_resampling: ``mode``/``nearest`` for class ids, ``average`` etc. for scores.
        compress: GDAL compression (deflate, lzw, zstd, ...).
        progress: show a progress bar over the blocks.
        tags: dataset metadata items.
        cache_mb: GDAL block cache cap during the write, MiB (default: two block rows of the
            raster, within 64-512 MiB).
        threads: compression threads of the COG step (GDAL ``NUM_THREADS``).

    Returns:
        The final path.

    Raises:
        OutputError: the destination cannot be written (nothing is left behind).
        ValueError: inconsistent arguments or a block of the wrong shape.
    """
    path = Path(path)
    _check_args(count, dtype, block, colormap, descriptions, overview_resampling)
    folder = writable_folder(path)
    stream, partial = temp_sibling(path, ".stream.tif"), temp_sibling(path, ".partial.tif")
    if cache_mb is None:
        strip = grid.width * block * count * np.dtype(dtype).itemsize / 2**20
        cache_mb = int(np.clip(2 * strip, CACHE_MB_MIN, CACHE_MB_MAX))
    try:
        # rasterio hands an integer GDAL_CACHEMAX straight to GDALSetCacheMax64, i.e. in
        # *bytes* (GDAL's own parsing would read small numbers as MB; rasterio refuses strings),
        # and restores the previous cap on exit
        with rasterio.Env(GDAL_CACHEMAX=int(cache_mb) * 1024 * 1024):
            with _gdal_errors(path, folder):
                dst = rasterio.open(
                    stream, "w", **_stream_profile(grid, count, dtype, nodata, block)
                )
            try:
                _stream_blocks(dst, grid, read_block, count, dtype, block, path, folder, progress)
                with _gdal_errors(path, folder):
                    _set_metadata(dst, colormap, descriptions, tags, nodata)
            finally:
                with _gdal_errors(path, folder):  # closing flushes the last blocks: may fail
                    dst.close()
            with _gdal_errors(path, folder):
                rasterio.shutil.copy(
                    stream,
                    partial,
                    driver="COG",
                    **_cog_options(block, compress, overview_resampling, threads),
                )
        with _gdal_errors(path, folder):
            os.replace(partial, path)
    finally:
        # GDAL may leave side files (.aux.xml, .ovr.tmp) beside the temporaries
        remove_quietly(
            stream,
            partial,
            *folder.glob(f"{glob.escape(stream.name)}.*"),
            *folder.glob(f"{glob.escape(partial.name)}.*"),
        )
    return path


def _check_args(
    count: int,
    dtype: str,
    block: int,
    colormap: Mapping | None,
    descriptions: Sequence[str] | None,
    resampling: str,
) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if block < 16 or block % 16:
        raise ValueError(f"block must be a multiple of 16 (TIFF tiles), got {block}")
    if resampling not in RESAMPLING:
        raise ValueError(f"overview_resampling {resampling!r}: use one of {sorted(RESAMPLING)}")
    if colormap and (count != 1 or np.dtype(dtype) not in (np.uint8, np.uint16)):
        raise ValueError("a colour table needs a single-band uint8 or uint16 raster")
    if descriptions is not None and len(descriptions) != count:
        raise ValueError(f"{len(descriptions)} band descriptions for {count} bands")


def _stream_profile(
    grid: GridBox, count: int, dtype: str, nodata: float | None, block: int
) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "pixel",
        # the temporary file is read once: fast compression keeps its disk use down at little
        # cost; BIGTIFF only when the classic 4 GB limit could be hit
        "compress": "deflate",
        "zlevel": 1,
        "BIGTIFF": "IF_SAFER",
        # blocks reported as all-nodata are never written; GDAL reads them back as nodata
        "SPARSE_OK": True,
    }


def _stream_blocks(
    dst: Any,
    grid: GridBox,
    read_block: BlockReader,
    count: int,
    dtype: str,
    block: int,
    path: Path,
    folder: Path,
    progress: bool,
) -> None:
    windows = list(grid.chunks(block))
    for r0, r1, c0, c1 in tqdm(
        windows, desc=path.name, unit="block", disable=not progress, leave=False
    ):
        data = read_block(r0, r1, c0, c1)  # caller's errors propagate unchanged
        if data is None:
            continue
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.shape != (count, r1 - r0, c1 - c0):
            raise ValueError(
                f"read_block({r0}, {r1}, {c0}, {c1}) returned shape {data.shape}, "
                f"expected {(count, r1 - r0, c1 - c0)}"
            )
        with _gdal_errors(path, folder):
            dst.write(data.astype(dtype, copy=False), window=Window(c0, r0, c1 - c0, r1 - r0))


def _set_metadata(
    dst: Any,
    colormap: Mapping[int, tuple[int, ...]] | None,
    descriptions: Sequence[str] | None,
    tags: Mapping[str, str] | None,
    nodata: float | None,
) -> None:
    if colormap:
        table = {int(k): tuple(int(v) for v in rgb) for k, rgb in colormap.items()}
        # nodata shows as transparent even in viewers that ignore the nodata tag
        if nodata is not None and float(nodata).is_integer() and int(nodata) not in table:
            table[int(nodata)] = (0, 0, 0, 0)
        dst.write_colormap(1, table)
    for i, text in enumerate(descriptions or (), start=1):
        dst.set_band_description(i, text)
    if tags:
        dst.update_tags(**{str(k): str(v) for k, v in tags.items()})


def _cog_options(block: int, compress: str, resampling: str, threads: int | str) -> dict[str, Any]:
    opts = {
        "COMPRESS": compress.upper(),
        "BLOCKSIZE": block,
        "BIGTIFF": "IF_SAFER",
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": RESAMPLING[resampling],
        "NUM_THREADS": str(threads),
    }
    if compress.lower() in ("deflate", "lzw", "zstd") and resampling not in _CATEGORICAL:
        # continuous values (scores, probabilities) compress better after differencing;
        # class ids do not (neighbouring ids are unrelated numbers)
        opts["PREDICTOR"] = "YES"
    return opts


@contextlib.contextmanager
def _gdal_errors(path: Path, folder: Path) -> Iterator[None]:
    """Turn GDAL/OS write failures into one-line OutputErrors naming the file and the fix."""
    try:
        yield
    except (RasterioError, OSError) as err:
        if isinstance(err, OutputError):
            raise
        raise write_failed(path, folder, err) from err


def cog_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a written COG holds, with rio-cogeo's verdict: for tests and run reports."""
    from rio_cogeo.cogeo import cog_validate

    valid, errors, warnings = cog_validate(str(path), quiet=True)
    with rasterio.open(path) as ds:
        try:
            ds.colormap(1)
            has_colormap = True
        except ValueError:
            has_colormap = False
        return {
            "is_valid": valid,
            "errors": errors,
            "warnings": warnings,
            "shape": (ds.height, ds.width),
            "count": ds.count,
            "dtype": ds.dtypes[0],
            "crs": ds.crs,
            "transform": ds.transform,
            "nodata": ds.nodata,
            "overviews": ds.overviews(1),
            "colormap": has_colormap,
            "blocksize": ds.block_shapes[0],
            "compression": ds.compression.value if ds.compression else None,
            "descriptions": list(ds.descriptions),
            "tags": ds.tags(),
        }
