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
    """(workers, torch threads per worker) that never oversubscribe the cores.

    The same on CUDA, where it means one worker per GPU: a run in this process opens one
    engine (one model on the GPU) that every worker shares, and the workers are CPU threads
    that read, normalise, cut and blend their chunks and feed it batches
    (``geoseg.inference.gpu``: pinned buffers, copies on a side stream, one forward pass
    launched at a time); torch's threads per worker then only serve those CPU steps. Several
    GPUs: a Dask cluster with a worker process per GPU (dask-cuda's ``LocalCUDACluster``,
    ``--scheduler tcp://...``), each loading its own engine once.
    """
    cores = cores or available_cores()
    workers = max(1, min(workers or 1, cores))
    return workers, max(1, cores // workers)


def default_batch(device: str) -> int:
    """Tiles per model call: 1 on CPU (measured fastest per tile there: activations of one
    512² tile stay in cache, see docs/benchmarks.md); 8 on CUDA where the GPU's memory is not
    measured (a remote cluster's GPUs; a local GPU: :func:`auto_batch`)."""
    return 1 if str(device).startswith("cpu") else 8


#: the largest batch chosen from free GPU memory (32 tiles of 512² are 8.4 Mpx a call); a
#: guess until a GPU is lent (docs/benchmarks.md, "GPU"); a call never holds more tiles than
#: its chunk owns (about 5 to 9 at the default 1024 px chunk and 512 px tiles)
BATCH_CAP = 32


def auto_batch(free_bytes: int, per_tile_bytes: int, cap: int = BATCH_CAP,
               margin: float = 0.75) -> int:  # fmt: skip
    """Tiles per model call that fit in ``margin`` of ``free_bytes`` of GPU memory at
    ``per_tile_bytes`` each, between 1 and ``cap``.

    ``per_tile_bytes`` is the peak of a trial batch of one tile, fixed workspaces included,
    so it overestimates a tile's share of a larger batch; the margin leaves room for the
    caching allocator's fragmentation, the next batch's inputs being copied in and results
    waiting to be copied out.
    """
    if per_tile_bytes <= 0:
        raise ValueError(f"per_tile_bytes={per_tile_bytes} must be positive")
    return max(1, min(cap, int(free_bytes * margin) // per_tile_bytes))


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
