"""Streaming Cloud-Optimized GeoTIFF writer: bounded memory whatever the scene's size.

Blocks are pulled one at a time from a ``read_block(window)`` callable and written into
a temporary tiled GeoTIFF; GDAL's COG driver then adds overviews and lays the file out as a COG
(:func:`copy_to_cog`, also the last step of mosaics). No whole-scene array exists at any point,
and GDAL's block cache is capped during both steps. Files are written under temporary names and
renamed when complete (``geoseg._files``); GDAL/OS failures become OutputErrors naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from tqdm.auto import tqdm

from geoseg._files import atomic_path, remove_quietly, temp_sibling, writable_folder, write_failed
from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import BlockReader

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
        read_block: ``f(window: PixelWindow)`` -> ``(count, h, w)`` array (``(h, w)`` when
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
    job = _StreamJob(
        path, writable_folder(path), grid, count, dtype, nodata, block, colormap, descriptions, tags, progress
    )
    if cache_mb is None:
        cache_mb = _default_cache_mb(grid, block, count, dtype)
    # rasterio hands an integer GDAL_CACHEMAX straight to GDALSetCacheMax64, i.e. in *bytes*
    # (GDAL's own parsing would read small numbers as MB; rasterio refuses strings), and
    # restores the previous cap on exit
    with rasterio.Env(GDAL_CACHEMAX=int(cache_mb) * 1024 * 1024), _scratch(path, ".stream.tif") as stream:
        _stream_gtiff(stream, job, read_block)
        copy_to_cog(
            stream,
            path,
            job.folder,
            block=block,
            compress=compress,
            resampling=overview_resampling,
            threads=threads,
        )
    return path


def copy_to_cog(
    src: str | os.PathLike[str],
    path: Path,
    folder: Path,
    *,
    block: int,
    compress: str = "deflate",
    resampling: str = "mode",
    threads: int | str = "ALL_CPUS",
) -> None:
    """Lay the raster ``src`` (a streamed GeoTIFF, a VRT) out as a COG at ``path``: tiles of
    ``block``, ``resampling`` overviews, ``compress`` (with a predictor for continuous values).

    Written under a temporary name and renamed when complete; GDAL/OS failures become an
    OutputError naming ``path`` and the fix (``folder``), and nothing is left behind.
    """
    options = _cog_options(block, compress, resampling, threads)
    need = _cog_bytes(src)
    with _gdal_errors(path, folder, need), atomic_path(path, ".partial.tif") as partial:
        rasterio.shutil.copy(src, partial, driver="COG", **options)


@dataclass(frozen=True)
class _StreamJob:
    """The streamed GeoTIFF of one ``write_cog`` call: its destination (named in errors),
    layout and metadata."""

    path: Path
    folder: Path
    grid: GridBox
    count: int
    dtype: str
    nodata: float | None
    block: int
    colormap: Mapping[int, tuple[int, ...]] | None
    descriptions: Sequence[str] | None
    tags: Mapping[str, str] | None
    progress: bool

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """GDAL/OS write failures -> OutputError naming the destination (and, for a full
        disk, the space needed: the streamed file and the COG, uncompressed at most)."""
        size = self.grid.height * self.grid.width * self.count * np.dtype(self.dtype).itemsize
        return _gdal_errors(self.path, self.folder, int(size * (1 + 4 / 3)))


def _default_cache_mb(grid: GridBox, block: int, count: int, dtype: str) -> int:
    """Two block rows of the raster, within ``CACHE_MB_MIN``-``CACHE_MB_MAX`` MiB."""
    strip = grid.width * block * count * np.dtype(dtype).itemsize / 2**20
    return int(np.clip(2 * strip, CACHE_MB_MIN, CACHE_MB_MAX))


@contextlib.contextmanager
def _scratch(path: Path, suffix: str) -> Iterator[Path]:
    """A temporary sibling of ``path`` used as a work file: removed on exit with the side files
    GDAL may leave beside it (.aux.xml, .ovr.tmp)."""
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
    finally:
        remove_quietly(tmp, *tmp.parent.glob(f"{glob.escape(tmp.name)}*"))


def _stream_gtiff(tmp: Path, job: _StreamJob, read_block: BlockReader) -> None:
    """Write the blocks of ``read_block`` and the metadata into a tiled GeoTIFF ``tmp``."""
    with job.errors():
        dst = rasterio.open(tmp, "w", **_stream_profile(job))
    try:
        with job.errors():
            _set_colormap(dst, job)
        _stream_blocks(dst, job, read_block)
        with job.errors():
            _set_metadata(dst, job)
    finally:
        with job.errors():  # closing flushes the last blocks: may fail
            dst.close()


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


def _stream_profile(job: _StreamJob) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": job.grid.width,
        "height": job.grid.height,
        "count": job.count,
        "dtype": job.dtype,
        "crs": job.grid.crs,
        "transform": job.grid.transform,
        "nodata": job.nodata,
        "tiled": True,
        "blockxsize": job.block,
        "blockysize": job.block,
        "interleave": "pixel",
        # the temporary file is read once, by GDAL: fast compression keeps its disk use down
        # at little cost; BIGTIFF only when the classic 4 GB limit could be hit
        **scratch_codec(),  # a copy: the cached dict stays as it is
        "BIGTIFF": "IF_SAFER",
        # blocks reported as all-nodata are never written; GDAL reads them back as nodata
        "SPARSE_OK": True,
    }


@functools.cache  # the codecs of the GDAL this process linked do not change: probe once
def scratch_codec() -> dict[str, Any]:
    """Creation options of a GeoTIFF read once by GDAL: ZSTD level 1 where this GDAL has the
    codec (an 8192² confidence COG in 0.90 s, against 1.53 s with DEFLATE level 1 and 0.79 s
    uncompressed), else DEFLATE level 1."""
    probe = "/vsimem/geoseg-zstd-probe.tif"
    try:
        with warnings.catch_warnings(), rasterio.Env(CPL_LOG="OFF"):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(probe, "w", driver="GTiff", width=16, height=16, count=1,
                               dtype="uint8", compress="zstd"):  # fmt: skip
                pass
        return {"compress": "zstd", "zstd_level": 1}
    except RasterioError:
        return {"compress": "deflate", "zlevel": 1}
    finally:
        with contextlib.suppress(RasterioError, OSError):
            rasterio.shutil.delete(probe)


def _stream_blocks(dst: Any, job: _StreamJob, read_block: BlockReader) -> None:
    """Pull every block from ``read_block`` (its errors propagate unchanged) and write it;
    windows it reports as all-nodata (``None``) are skipped."""
    windows = list(job.grid.chunks(job.block))
    for win in tqdm(windows, desc=job.path.name, unit="block", disable=not job.progress, leave=False):
        data = read_block(win)  # caller's errors propagate unchanged
        if data is None:
            continue
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.shape != (job.count, *win.shape):
            raise ValueError(f"read_block({win}) returned shape {data.shape}, "
                             f"expected {(job.count, *win.shape)}")  # fmt: skip
        with job.errors():
            dst.write(data.astype(job.dtype, copy=False),
                      window=Window(win.c0, win.r0, win.width, win.height))  # fmt: skip


def _set_colormap(dst: Any, job: _StreamJob) -> None:
    """The colour table, set on the new file before any block is written: it makes the TIFF's
    photometric interpretation "palette", a tag libtiff can no longer change once blocks
    are written (GDAL then logged 'Cannot modify tag "PhotometricInterpretation"')."""
    colormap, nodata = job.colormap, job.nodata
    if not colormap:
        return
    table = {int(k): tuple(int(v) for v in rgb) for k, rgb in colormap.items()}
    # nodata shows as transparent even in viewers that ignore the nodata tag
    if nodata is not None and float(nodata).is_integer() and int(nodata) not in table:
        table[int(nodata)] = (0, 0, 0, 0)
    dst.write_colormap(1, table)


def _set_metadata(dst: Any, job: _StreamJob) -> None:
    descriptions, tags = job.descriptions, job.tags
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


def _cog_bytes(src: str | os.PathLike[str]) -> int | None:
    """Uncompressed size of ``src`` with its overviews (+1/3): what its COG needs at most."""
    try:
        with rasterio.open(src) as ds:
            return int(ds.width * ds.height * ds.count * np.dtype(ds.dtypes[0]).itemsize * 4 / 3)
    except (RasterioError, OSError):
        return None


@contextlib.contextmanager
def _gdal_errors(path: Path, folder: Path, need: int | None = None) -> Iterator[None]:
    """Turn GDAL/OS write failures into one-line OutputErrors naming the file and the fix
    (for a full disk, the space ``need``ed in bytes and the space free)."""
    try:
        yield
    except (RasterioError, OSError) as err:
        if isinstance(err, OutputError):
            raise
        raise write_failed(path, folder, err, need) from err


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
