"""Process-level settings: CPU threads, GDAL's block cache and the level of GDAL's messages,
set once per run."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import rasterio

#: GDAL's default cache is 5 % of RAM and fills up with blocks of huge scenes. Chunks are read
#: row-major, so little is ever read twice: measured on a 16384² 6-band scene, 64 MB instead of
#: 256 MB read as fast (11.3 s vs 11.2 s in all) with a 59 MB lower peak. COG writes set their own.
GDAL_CACHE_MB = 64


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


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc only; elsewhere nothing happens).

    Worker threads allocate from their own malloc arenas, and glibc keeps what they freed
    mapped: after the chunk phase that memory stayed resident under the vectoriser's peak.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, ...): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


#: Where rasterio logs the messages GDAL signals (``rasterio._env``; ``rasterio._err`` too in
#: some versions).
GDAL_LOGGERS = ("rasterio._env", "rasterio._err")


class _GdalLevel(logging.Filter):
    """rasterio logs the errors GDAL signals at INFO ("GDAL signalled an error: ..."): GDAL
    recovers from most (probing side files, a tag it cannot rewrite), and those it does not
    come back as exceptions that geoseg reports in its own words. Either way they are detail
    for debugging: DEBUG. GDAL's warnings stay at WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


_GDAL_LEVEL = _GdalLevel()


def route_gdal_messages() -> None:
    """Log GDAL's messages at their level (see ``_GdalLevel``); idempotent. The filter sits on
    the loggers that create the records, so every handler sees the same level."""
    for name in GDAL_LOGGERS:
        logger = logging.getLogger(name)
        if _GDAL_LEVEL not in logger.filters:
            logger.addFilter(_GDAL_LEVEL)
