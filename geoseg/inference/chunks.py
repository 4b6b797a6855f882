"""The chunk tasks of a prediction: ``accumulate`` a chunk's tiles, ``finish`` (or ``blend``) a chunk.

Per output chunk two tasks run: ``accumulate`` (the heavy one: read the chunk's tiles with every
modality, normalise, batch, run the model, softmax, weight by the blend window) and ``finish``
(add the contributions of neighbouring chunks whose tiles reach in, normalise, argmax, write the
chunk to the tile store). Contributions to neighbouring chunks wait in the tile store, so memory
is O(workers x chunk) whatever the scene size, and a killed run keeps them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.config import NODATA
from geoseg.geometry.area import row_pixel_areas
from geoseg.geometry.window import PixelWindow
from geoseg.inference.cluster import EngineSpec, engine_for
from geoseg.inference.engine import Engine, StageTimer
from geoseg.inference.sums import DeviceSums, open_sums
from geoseg.scene.scene import Scene
from geoseg.store.tiles import TileStore
from geoseg.tiling.plan import TilePlan

log = logging.getLogger(__name__)

#: (box in the receiving core, weighted sums, valid); the sums of a hand-over to a later chunk
#: row may be spilled to the tile store: then a path, and valid is None
Piece = tuple[PixelWindow, "np.ndarray | Path", "np.ndarray | None"]


class CoreShare:
    """The cores of a run in this process, shared by its workers as chunks run out.

    Each worker runs its tiles on one share of the cores; once fewer ``accumulate`` tasks
    remain than there are workers, the idle workers' cores go to those still running (the
    run's tail: the last chunk on 2 threads instead of 1 ran its tiles 1.76x faster here).
    Tasks waiting for a gate count as remaining, so a worker never takes cores another will
    need. Threaded runs only: a Dask cluster's workers are other processes.
    """

    def __init__(self, cores: int, workers: int, tasks: int) -> None:
        self.cores, self.workers, self.remaining = cores, workers, tasks
        self._lock = threading.Lock()

    def threads(self) -> int:
        """Torch threads for the calling worker's next model call."""
        with self._lock:
            busy = min(self.workers, max(1, self.remaining))
        return max(1, self.cores // busy)

    def done(self) -> None:
        """One ``accumulate`` has run its tiles."""
        with self._lock:
            self.remaining -= 1


@dataclass
class ChunkJob:
    """Everything a chunk task needs; picklable (paths, not handles), except the engine."""

    scene: Scene
    plan: TilePlan
    batch: int | None  # None: measured on the GPU once the engine is loaded
    class_ids: np.ndarray
    probabilities: bool
    #: with a tile store, results are spilled to it when they hold at most this many bytes per
    #: second of the tile time that made them: a tile's probabilities as soon as it ran, and a
    #: chunk's own piece with the pieces it hands on, so a kill loses only the tiles in flight,
    #: for a write and read-back of at most ~4 % of the tiles' time (measured 1 GB/s write,
    #: 2 GB/s read here); tiles that run fast (a GPU) keep their results in memory
    spill_rate: float = 25e6
    #: cores shared by the workers of this process (None: a worker keeps its threads)
    cores: CoreShare | None = None
    windows: dict[tuple[bool, bool, bool, bool], np.ndarray] = field(default_factory=dict)

    def window(self, r: int, c: int) -> np.ndarray:
        p = self.plan
        key = (r == 0, r + p.tile_h >= p.height, c == 0, c + p.tile_w >= p.width)
        if key not in self.windows:
            self.windows[key] = p.window(r, c)
        return self.windows[key]


def accumulate(
    job: ChunkJob, engine: Engine | EngineSpec, index: tuple[int, int],
    store: TileStore | None = None, to: Collection[tuple[int, int]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run the tiles owned by chunk ``index``; split the weighted sums per receiving chunk.

    ``to``: the receivers that want their piece (default: all; a resumed run skips the chunks
    already done and the pieces already stored). With a ``store``, the sums handed to other
    chunks are spilled to it.

    Returns ``{"pieces": {receiver: Piece}, "timing": {stage: seconds or count}}``.
    """
    plan, timer = job.plan, StageTimer()
    engine = engine_for(engine)
    region = plan.chunks[index].region
    if region is None:
        if job.cores is not None:
            job.cores.done()
        return {"pieces": {}, "timing": {}}
    with timer.clock("read"):
        arrays, valid = job.scene.read(region)
    t0 = time.perf_counter()
    try:
        acc = _weighted_sums(job, engine, index, arrays, valid, timer, store)
    finally:
        if job.cores is not None:
            job.cores.done()
    keep_own = store is not None and acc.nbytes <= job.spill_rate * (time.perf_counter() - t0)
    to = receivers(plan, index) if to is None else to
    pieces = _split_pieces(job.plan, index, acc, valid, store, to, keep_own)
    if store is not None and (keep_own or index not in to):  # every piece is stored
        store.drop_tiles(plan.chunks[index].tiles)
    return {"pieces": pieces, "timing": dict(timer.seconds)}


def _weighted_sums(job: ChunkJob, engine: Engine, index: tuple[int, int],
                   arrays: dict[str, np.ndarray], valid: np.ndarray, timer: StageTimer,
                   store: TileStore | None = None) -> np.ndarray:  # fmt: skip
    """Σ w·p (one plane per class) and Σ w (last plane) of the chunk's tiles over its region.

    Tiles are added in the plan's order whether they run or come back from the ``store``
    (spilled by a killed run), so the sums are the same bit for bit.
    """
    plan, ch = job.plan, job.plan.chunks[index]
    region = ch.region
    assert region is not None
    boxes = {t: PixelWindow.at(*t, plan.tile_h, plan.tile_w).relative_to(region).slices
             for t in ch.tiles}  # fmt: skip
    todo = [t for t in ch.tiles if valid[boxes[t]].any()]
    timer.add("tiles_skipped_nodata", len(ch.tiles) - len(todo))
    sums = open_sums(job.window, engine, region.shape)
    source = _TileSource(job, engine, arrays, valid, boxes, timer, store,
                         on_device=isinstance(sums, DeviceSums))  # fmt: skip
    del arrays
    for t, p in source.probabilities(todo):
        with timer.clock("blend"):
            sums.add(t, boxes[t], p)
    return sums.result()


class _TileSource:
    """The probabilities of a chunk's tiles, in order: read back from the tile store where a
    killed run spilled them, else run in batches (and spilled when that is cheap)."""

    def __init__(self, job: ChunkJob, engine: Engine, arrays: dict[str, np.ndarray],
                 valid: np.ndarray, boxes: dict[tuple[int, int], tuple[slice, slice]],
                 timer: StageTimer, store: TileStore | None, on_device: bool = False) -> None:  # fmt: skip
        self.job, self.engine, self.boxes, self.timer, self.store = job, engine, boxes, timer, store
        self.on_device = on_device  # probabilities left on the GPU (``sums.DeviceSums``)
        self.arrays, self.valid = arrays, valid
        self.norm: dict[str, np.ndarray] | None = None  # normalised on the first tile that runs
        self.shape = (engine.num_classes, job.plan.tile_h, job.plan.tile_w)

    def probabilities(self, tiles: list[tuple[int, int]]):
        """Yield ``(tile, (K, h, w) probabilities)`` for ``tiles``, in their order."""
        batch: list[tuple[int, int]] = []
        for t in tiles:
            p = self._stored(t)
            if p is None:
                batch.append(t)
                if len(batch) < self.job.batch:
                    continue
            yield from self._run(batch)
            batch = []
            if p is not None:
                yield t, p
        yield from self._run(batch)

    def _stored(self, t: tuple[int, int]) -> np.ndarray | None:
        if self.store is None:
            return None
        with self.timer.clock("read_spilled"):
            p, damaged = self.store.stored_tile(t, self.shape)
        if p is not None or damaged:
            self.timer.add("tiles_resumed" if p is not None else "tiles_damaged", 1)
        return p

    def _run(self, tiles: list[tuple[int, int]]):
        if not tiles:
            return
        if self.norm is None:
            with self.timer.clock("normalise"):
                self.norm = self.engine.normalise(self.arrays, self.valid)
            self.arrays = {}
        with self.timer.clock("cut"):
            x = {name: np.stack([a[(slice(None), *self.boxes[t])] for t in tiles])
                 for name, a in self.norm.items()}  # fmt: skip
        if self.on_device:  # "model": handing the batch over (the GPU runs asynchronously)
            with self.timer.clock("model"):
                probs = self.engine.gpu.device_probabilities(x)
            self.timer.add("tiles", len(tiles))
            yield from zip(tiles, probs, strict=True)
            return
        if self.job.cores is not None:
            torch.set_num_threads(self.job.cores.threads())  # this thread's own count
        t0 = time.perf_counter()
        with self.timer.clock("model"):
            probs = self.engine.probabilities(x)
        self.timer.add("tiles", len(tiles))
        if self.store is not None:
            each = (time.perf_counter() - t0) / len(tiles)
            for t, p in zip(tiles, probs, strict=True):
                if p.nbytes <= self.job.spill_rate * each:
                    with self.timer.clock("spill"):
                        self.store.put_tile(t, p)
        yield from zip(tiles, probs, strict=True)


def _split_pieces(
    plan: TilePlan, index: tuple[int, int], acc: np.ndarray, valid: np.ndarray,
    store: TileStore | None, to: Collection[tuple[int, int]], keep_own: bool = False,
) -> dict[tuple, Piece]:  # fmt: skip
    """The part of the accumulator each receiving chunk's core overlaps, in that core's pixels.

    The own piece stays a view (no second copy of the big accumulator), unless ``keep_own``.
    Pieces for neighbours are spilled to the ``store`` when there is one (they survive a
    kill: a resumed run reuses them instead of running these tiles again), else copied so
    the accumulator is freed once this chunk is finished.
    """
    region = plan.chunks[index].region
    assert region is not None
    pieces: dict[tuple, Piece] = {}
    for dst in to:
        box = piece_box(plan, index, dst)
        if box is None:
            continue
        core = plan.chunks[dst].core
        src = box.shift(core.r0, core.c0).relative_to(region).slices
        part, v = acc[(slice(None), *src)], valid[src]
        if dst == index and not keep_own:
            pieces[dst] = (box, part, v)
        elif store is not None:
            pieces[dst] = (box, store.put_handover(index, dst, part, v), None)
        else:
            pieces[dst] = (box, part.copy(), v.copy())
    return pieces


def piece_box(plan: TilePlan, src: tuple[int, int], dst: tuple[int, int]) -> PixelWindow | None:
    """Where the tiles of chunk ``src`` reach into the core of chunk ``dst``, in that core's
    pixels (None: they do not)."""
    region, core = plan.chunks[src].region, plan.chunks[dst].core
    both = core.intersection(region) if region is not None else None
    return None if both is None else both.relative_to(core)


def receivers(plan: TilePlan, index: tuple[int, int]) -> list[tuple[int, int]]:
    """Chunks whose cores the tiles of chunk ``index`` reach (itself included)."""
    region = plan.chunks[index].region
    if region is None:
        return []
    c = plan.chunk
    return [
        (i, j)
        for i in range(region.r0 // c, (region.r1 - 1) // c + 1)
        for j in range(region.c0 // c, (region.c1 - 1) // c + 1)
    ]


def blend(
    job: ChunkJob, index: tuple[int, int], *pieces: Piece | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Blend the contributions to chunk ``index``: class ids, confidence, probabilities (uint8).

    Confidence and probabilities are quantised as round(p x 254); 255 marks nodata everywhere.
    """
    core = job.plan.chunks[index].core
    k = len(job.class_ids)
    acc = np.zeros((k + 1, *core.shape), np.float32)
    valid = np.zeros(core.shape, bool)
    for box, part, v in filter(None, pieces):
        acc[(slice(None), *box.slices)] += part
        valid[box.slices] = v
    weight = acc[k]
    valid &= weight > 0
    probs = acc[:k]
    probs /= np.where(weight > 0, weight, 1.0)  # in place: no second (k, h, w) array
    best, top = argmax_first_axis(probs)
    classes = np.where(valid, job.class_ids[best], NODATA).astype(np.uint8)
    conf = np.where(valid, np.rint(top * 254), NODATA).astype(np.uint8)
    qprobs = None
    if job.probabilities:
        qprobs = np.where(valid[None], np.rint(probs * 254), NODATA).astype(np.uint8)
    return classes, conf, qprobs


def argmax_first_axis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, max) over axis 0 of a (k, h, w) array, first index on ties like np.argmax.

    One contiguous pass per class: several times faster than ``argmax(axis=0)``, whose
    reduction strides across planes.
    """
    best = np.zeros(x.shape[1:], np.uint8)
    top = x[0].copy()
    for i in range(1, x.shape[0]):
        better = x[i] > top
        best[better] = i
        np.maximum(top, x[i], out=top)
    return best, top


def finish(
    job: ChunkJob, store: TileStore, index: tuple[int, int], *pieces: Piece | None
) -> dict[str, Any]:
    """Blend chunk ``index``, persist it in the tile store; return its statistics.

    Idempotent: Dask reruns a ``finish`` whose worker died during or after it (its result
    is lost with the worker); a chunk already stored is not blended again.
    """
    if store.is_done(index):
        return store.stored_stats(index)
    spilled = {k: p[1] for k, p in enumerate(pieces) if p is not None and isinstance(p[1], Path)}
    pieces = tuple(
        (p[0], *store.read_handover(spilled[k])) if k in spilled else p
        for k, p in enumerate(pieces)
    )
    classes, conf, qprobs = blend(job, index, *pieces)
    stats = chunk_stats(job, index, classes)
    store.write_chunk(index, job.plan.chunks[index].core, classes, conf, qprobs, stats)
    store.drop_handovers(spilled.values())
    store.drop_tiles(job.plan.chunks[index].tiles)  # its own piece is stored with it
    return stats


def chunk_stats(job: ChunkJob, index: tuple[int, int], classes: np.ndarray) -> dict[str, Any]:
    """Per-class pixel counts and ground areas (m²) of one finished chunk."""
    core = job.plan.chunks[index].core
    valid = classes != NODATA
    out: dict[str, Any] = {"valid_pixels": int(valid.sum()), "pixels": {}, "area_m2": {}}
    if not valid.any():
        return out
    areas = row_pixel_areas(job.scene.grid.window(core))
    for cid in np.unique(classes[valid]):
        per_row = (classes == cid).sum(axis=1)
        out["pixels"][str(int(cid))] = int(per_row.sum())
        out["area_m2"][str(int(cid))] = float(per_row @ areas)
    return out


__all__ = ["ChunkJob", "CoreShare", "Piece", "accumulate", "blend", "finish", "piece_box", "receivers"]
