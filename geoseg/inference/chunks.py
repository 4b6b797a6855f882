"""Tiled, seamless, resumable prediction of a scene into a tile store, on Dask.

Per output chunk two tasks run: ``accumulate`` (the heavy one: read the chunk's tiles with every
modality, normalise, batch, run the model, softmax, weight by the blend window) and ``finish``
(add the contributions of neighbouring chunks whose tiles reach in, normalise, argmax, write the
chunk to the tile store). Contributions to the next chunk row wait in the tile store, so memory
is O(workers x chunk) whatever the scene size.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.config import NODATA
from geoseg.geometry.area import row_pixel_areas
from geoseg.geometry.window import PixelWindow
from geoseg.inference.cluster import EngineSpec, engine_for, run_threads
from geoseg.inference.engine import Engine, StageTimer
from geoseg.scene.scene import Scene
from geoseg.store.tiles import TileStore
from geoseg.tiling.plan import TilePlan

log = logging.getLogger(__name__)

#: (box in the receiving core, weighted sums, valid); the sums of a hand-over to a later chunk
#: row may be spilled to the tile store: then a path, and valid is None
Piece = tuple[tuple[int, int, int, int], "np.ndarray | Path", "np.ndarray | None"]


@dataclass
class ChunkJob:
    """Everything a chunk task needs; picklable (paths, not handles), except the engine."""

    scene: Scene
    plan: TilePlan
    batch: int
    class_ids: np.ndarray
    probabilities: bool
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
    already done). With a ``store``, the sums handed to chunks of the next chunk row are
    spilled to it.

    Returns ``{"pieces": {receiver: Piece}, "timing": {stage: seconds or count}}``.
    """
    plan, timer = job.plan, StageTimer()
    engine = engine_for(engine)
    ch = plan.chunks[index]
    if ch.region is None:
        return {"pieces": {}, "timing": {}}
    ra0, ra1, ca0, ca1 = ch.region
    with timer.clock("read"):
        arrays, valid = job.scene.read(PixelWindow(ra0, ra1, ca0, ca1))
    k, th, tw = engine.num_classes, plan.tile_h, plan.tile_w
    acc = np.zeros((k + 1, ra1 - ra0, ca1 - ca0), np.float32)
    todo = [(r, c) for r, c in ch.tiles if valid[r - ra0 : r - ra0 + th, c - ca0 : c - ca0 + tw].any()]
    if todo:
        with timer.clock("normalise"):
            norm = engine.normalise(arrays, valid)
        del arrays
        for b0 in range(0, len(todo), job.batch):
            tiles = todo[b0 : b0 + job.batch]
            with timer.clock("cut"):
                x = {
                    name: np.stack([a[:, r - ra0 : r - ra0 + th, c - ca0 : c - ca0 + tw]
                                    for r, c in tiles])
                    for name, a in norm.items()
                }  # fmt: skip
            with timer.clock("model"):
                probs = engine.probabilities(x)
            with timer.clock("blend"):
                for (r, c), p in zip(tiles, probs, strict=True):
                    w = job.window(r, c)
                    sl = (slice(r - ra0, r - ra0 + th), slice(c - ca0, c - ca0 + tw))
                    acc[(slice(0, k), *sl)] += p * w
                    acc[(k, *sl)] += w
        timer.add("tiles", len(todo))
    timer.add("tiles_skipped_nodata", len(ch.tiles) - len(todo))
    pieces: dict[tuple, Piece] = {}
    for dst in receivers(plan, index) if to is None else to:
        r0, r1, c0, c1 = plan.chunks[dst].core
        a0, a1, b0, b1 = max(r0, ra0), min(r1, ra1), max(c0, ca0), min(c1, ca1)
        if a0 >= a1 or b0 >= b1:
            continue
        src = (slice(a0 - ra0, a1 - ra0), slice(b0 - ca0, b1 - ca0))
        # the own piece stays a view (no second copy of the big accumulator); pieces for
        # neighbours are copied so the accumulator is freed once this chunk is finished
        part, v = acc[(slice(None), *src)], valid[src]
        box = (a0 - r0, a1 - r0, b0 - c0, b1 - c0)
        if dst == index:
            pieces[dst] = (box, part, v)
        elif store is not None and dst[0] > index[0]:
            pieces[dst] = (box, store.put_handover(index, dst, part, v), None)
        else:
            pieces[dst] = (box, part.copy(), v.copy())
    return {"pieces": pieces, "timing": dict(timer.seconds)}


def receivers(plan: TilePlan, index: tuple[int, int]) -> list[tuple[int, int]]:
    """Chunks whose cores the tiles of chunk ``index`` reach (itself included)."""
    ch = plan.chunks[index]
    if ch.region is None:
        return []
    ra0, ra1, ca0, ca1 = ch.region
    c = plan.chunk
    return [
        (i, j)
        for i in range(ra0 // c, (ra1 - 1) // c + 1)
        for j in range(ca0 // c, (ca1 - 1) // c + 1)
    ]


def blend(
    job: ChunkJob, index: tuple[int, int], *pieces: Piece | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Blend the contributions to chunk ``index``: class ids, confidence, probabilities (uint8).

    Confidence and probabilities are quantised as round(p x 254); 255 marks nodata everywhere.
    """
    r0, r1, c0, c1 = job.plan.chunks[index].core
    k = len(job.class_ids)
    acc = np.zeros((k + 1, r1 - r0, c1 - c0), np.float32)
    valid = np.zeros((r1 - r0, c1 - c0), bool)
    for (a0, a1, b0, b1), part, v in filter(None, pieces):
        acc[:, a0:a1, b0:b1] += part
        valid[a0:a1, b0:b1] = v
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
    return stats


def chunk_stats(job: ChunkJob, index: tuple[int, int], classes: np.ndarray) -> dict[str, Any]:
    """Per-class pixel counts and ground areas (m²) of one finished chunk."""
    r0, r1, c0, c1 = job.plan.chunks[index].core
    valid = classes != NODATA
    out: dict[str, Any] = {"valid_pixels": int(valid.sum()), "pixels": {}, "area_m2": {}}
    if not valid.any():
        return out
    areas = row_pixel_areas(job.scene.grid.window(r0, r1, c0, c1))
    for cid in np.unique(classes[valid]):
        per_row = (classes == cid).sum(axis=1)
        out["pixels"][str(int(cid))] = int(per_row.sum())
        out["area_m2"][str(int(cid))] = float(per_row @ areas)
    return out


def build_graph(
    job: ChunkJob,
    engine: Engine | EngineSpec,
    store: TileStore,
    pending: list[tuple[int, int]],
    ahead: int = 4,
) -> tuple[dict, list]:
    """Dask graph computing the ``pending`` chunks.

    Chunks go in row-major order, at most ``ahead`` pending chunks beyond the last finished
    one: each ``accumulate`` also waits for the ``finish`` of the pending chunk ``ahead``
    places before it. Without this gate Dask's ordering runs almost every ``accumulate``
    before the first ``finish`` (they are all ready at once), holding the blend sums of
    the whole scene: peak memory grew with the scene (measured: 3.2 GB at 16384², 1.7 GB at
    4096²). The gate is acyclic: a chunk's contributors all precede it in row-major order.

    Returns the graph and its output keys: one ``finish`` per pending chunk (its statistics),
    then one ``timing`` per accumulate task (seconds per stage).
    """
    plan = job.plan
    needed = sorted({src for dst in pending for src in plan.contributors(dst)})
    done_in_order = sorted(pending)
    wanted = set(pending)
    # job, engine and store appear once in the graph (shipped once per worker, not per task)
    graph: dict = {"geoseg-job": job, "geoseg-engine": engine, "geoseg-store": store}
    timings = []
    for src in needed:
        gate = bisect.bisect_left(done_in_order, src) - max(1, ahead)
        after = ("finish", *done_in_order[gate]) if gate >= 0 else None
        to = [dst for dst in receivers(plan, src) if dst in wanted]
        graph[("accumulate", *src)] = (_gated, "geoseg-job", "geoseg-engine", "geoseg-store",
                                       src, to, after)  # fmt: skip
        graph[("timing", *src)] = (_timing, ("accumulate", *src))
        timings.append(("timing", *src))
    finals = []
    for dst in pending:
        parts = []
        for src in plan.contributors(dst):
            key = ("piece", *src, *dst)
            graph[key] = (_piece, ("accumulate", *src), dst)
            parts.append(key)
        graph[("finish", *dst)] = (finish, "geoseg-job", "geoseg-store", dst, *parts)
        finals.append(("finish", *dst))
    return graph, finals + timings


def _gated(job: ChunkJob, engine: Engine | EngineSpec, store: TileStore,
           index: tuple[int, int], to: list[tuple[int, int]], _after: Any) -> dict[str, Any]:  # fmt: skip
    """``accumulate``, scheduled after the task whose result is ``_after`` (ignored)."""
    return accumulate(job, engine, index, store, to)


def _piece(result: dict[str, Any], dst: tuple[int, int]) -> Piece | None:
    return result["pieces"].get(dst)


def _timing(result: dict[str, Any]) -> dict[str, float]:
    return result["timing"]


def run_graph(graph: dict, keys: list, workers: int,
              on_done: Callable[[Any], None] | None = None) -> list:  # fmt: skip
    """Run in this process with Dask's threaded scheduler (see geoseg.inference.cluster for others)."""
    return run_threads(graph, keys, workers, on_done)


__all__ = ["ChunkJob", "accumulate", "build_graph", "finish", "run_graph"]
