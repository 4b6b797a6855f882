"""Process-level settings: CPU threads and GDAL's block cache, set once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import rasterio

#: GDAL's default cache is 5 % of RAM and fills up with blocks of huge scenes; 256 MB is
#: plenty for windowed reads of tiled GeoTIFFs.
GDAL_CACHE_MB = 256


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return max(1, len(psutil.Process().cpu_affinity()))
    except (AttributeError, NotImplementedError):
        return max(1, os.cpu_count() or 1)


def plan_threads(workers: int | None, cores: int | None = None) -> tuple[int, int]:
    """(workers, torch threads per worker) that never oversubscribe the cores."""
    cores = cores or available_cores()
    workers = max(1, min(workers or 1, cores))
    return workers, max(1, cores // workers)


def default_batch(device: str) -> int:
    """Tiles per model call: 1 on CPU (measured fastest per tile there: activations of one
    512² tile stay in cache, see docs/benchmarks.md), 8 on CUDA."""
    return 1 if str(device).startswith("cpu") else 8


def auto_chunk(height: int, width: int, tile: int, workers: int, largest: int = 1024) -> int:
    """Output chunk size: ``largest`` unless the scene would then have fewer than 4 chunks per
    worker (idle cores at the end of small scenes); halved down to the tile size."""
    chunk = largest
    while chunk // 2 >= tile and -(-height // chunk) * -(-width // chunk) < 4 * workers:
        chunk //= 2
    return chunk


@contextmanager
def gdal_env(cache_mb: int = GDAL_CACHE_MB, **options: object) -> Iterator[None]:
    """GDAL options for geoseg's reads and writes, with the block cache capped."""
    with rasterio.Env(
        GDAL_CACHEMAX=cache_mb * 1024 * 1024,
        GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
        GDAL_NUM_THREADS=1,
        **options,
    ):
        yield
