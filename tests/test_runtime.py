"""Process-level defaults: threads, batch and chunk size follow the machine and the scene."""

from __future__ import annotations

import sys
import threading

import numpy as np
import psutil
import pytest

from geoseg.runtime import auto_chunk, default_batch, plan_threads, release_free_memory


def test_threads_never_oversubscribe_the_cores() -> None:
    assert plan_threads(None, cores=2) == (1, 2)
    assert plan_threads(2, cores=2) == (2, 1)
    assert plan_threads(8, cores=2) == (2, 1)  # never more workers than cores
    assert plan_threads(3, cores=16) == (3, 5)


def test_batch_is_one_tile_on_cpu_and_larger_on_cuda() -> None:
    assert default_batch("cpu") == 1
    assert default_batch("cuda") == default_batch("cuda:1") == 8


@pytest.mark.parametrize(
    ("shape", "tile", "workers", "chunk"),
    [
        ((16384, 16384), 512, 2, 1024),  # large scenes: the largest chunk
        ((4096, 4096), 512, 2, 1024),  # 16 chunks >= 4 per worker
        ((2048, 2048), 512, 2, 512),  # 4 chunks of 1024 would leave a core idle at the end
        ((2048, 2048), 512, 1, 1024),
        ((300, 300), 512, 2, 512),  # never below the tile
        ((2048, 2048), 256, 16, 256),
    ],
)
def test_chunk_shrinks_on_small_scenes_down_to_the_tile(
    shape: tuple[int, int], tile: int, workers: int, chunk: int
) -> None:
    assert auto_chunk(*shape, tile, workers) == chunk


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_by_worker_threads_goes_back_to_the_os() -> None:
    def churn() -> None:
        # 64 KiB blocks come from the thread's arena (below the mmap threshold); the last,
        # kept, block pins the arena's top so free() alone cannot shrink it
        blocks = [np.ones(8192) for _ in range(3200)]  # 200 MiB
        keep.append(np.ones(8192))
        del blocks

    keep: list[np.ndarray] = []
    thread = threading.Thread(target=churn)
    thread.start()
    thread.join()
    before = psutil.Process().memory_info().rss
    release_free_memory()
    assert before - psutil.Process().memory_info().rss > 100 * 2**20
