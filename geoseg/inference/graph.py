"""The one Dask graph of a prediction, used by the batch run and the lazy accessor alike.

Per chunk that contributes to the wanted chunks, one ``accumulate`` task; per wanted chunk,
one task that collects the pieces its contributors hand over and either ``finish``es it into
the tile store (batch run) or ``blend``s it in memory (lazy dask arrays). The graph is the
same either way: only the final task and, for the store, the ordering gate differ.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from geoseg.geometry.window import PixelWindow
from geoseg.inference import chunks
from geoseg.inference.chunks import ChunkJob, Piece, accumulate, blend, finish, receivers
from geoseg.inference.cluster import EngineSpec, run_threads
from geoseg.inference.engine import Engine
from geoseg.store.tiles import Handovers, TileStore
from geoseg.tiling.plan import TilePlan


def build_graph(
    job: ChunkJob,
    engine: Engine | EngineSpec,
    pending: list[tuple[int, int]],
    store: TileStore | None = None,
    ahead: int = 4,
    prefix: str = "",
    suffix: str = "",
    stored: Handovers | None = None,
) -> tuple[dict, list, list]:
    """Dask graph computing the ``pending`` chunks.

    ``stored``: hand-overs a killed run spilled (``TileStore.stored_handovers``); a finish
    reads them instead of waiting for their source's ``accumulate``, and a chunk runs its
    tiles only when some pending chunk still needs a piece of them (see :func:`sources`).

    With a ``store``, every pending chunk is finished into it, in row-major order, at most
    ``ahead`` pending chunks beyond the last finished one: each ``accumulate`` also waits for
    the ``finish`` of the pending chunk ``ahead`` places before it. Without this gate Dask's
    ordering runs almost every ``accumulate`` before the first ``finish`` (they are all ready
    at once), holding the blend sums of the whole scene: peak memory grew with the scene
    (measured: 3.2 GB at 16384², 1.7 GB at 4096²). The gate is acyclic: a chunk's
    contributors all precede it in row-major order. Without a store (lazy arrays), the final
    task of a chunk is its ``blend`` (classes, confidence, probabilities) and nothing is gated,
    so a selection computes only the chunks it reaches.

    Keys are ``(prefix + kind + suffix, i, j[, ...])`` with kind ``accumulate``,
    ``accumulate-piece``, ``finish`` or ``timing`` (a lazy array needs unique names: a token).

    Returns the graph, the final keys (one per pending chunk: its statistics, or its blend)
    and the timing keys (seconds per stage, one per accumulate task).
    """
    kinds = ("job", "engine", "store", "accumulate", "accumulate-piece", "stored-piece",
             "finish", "timing")  # fmt: skip
    names = {k: f"{prefix}{k}{suffix}" for k in kinds}
    stored = stored or {}
    # job, engine and store appear once in the graph (shipped once per worker, not per task)
    graph: dict = {names["job"]: job, names["engine"]: engine, names["store"]: store}
    timings = _accumulate_tasks(graph, names, sources(job.plan, pending, stored), pending,
                                gated=store is not None, ahead=ahead)  # fmt: skip
    finals = []
    for dst in pending:
        parts = []
        for src in job.plan.contributors(dst):
            if (src, dst) in stored:
                key = (names["stored-piece"], *src, *dst)
                graph[key] = (_stored_piece, chunks.piece_box(job.plan, src, dst), stored[(src, dst)])
            else:
                key = (names["accumulate-piece"], *src, *dst)
                graph[key] = (_piece, (names["accumulate"], *src), dst)
            parts.append(key)
        final = (finish, names["job"], names["store"]) if store is not None else (blend, names["job"])
        graph[(names["finish"], *dst)] = (*final, dst, *parts)
        finals.append((names["finish"], *dst))
    return graph, finals, timings


def sources(plan: TilePlan, pending: list[tuple[int, int]],
            stored: Handovers | None = None) -> dict[tuple[int, int], list[tuple[int, int]]]:  # fmt: skip
    """The chunks whose tiles must run for ``pending``, each with the pending chunks it feeds.

    A chunk runs when some pending chunk needs a piece of its tiles that is not ``stored``:
    a pending chunk its own (unless it was spilled: see ``ChunkJob.spill_rate``), a
    finished chunk only a spilled piece that is missing or was found damaged.
    """
    wanted, stored = set(pending), stored or {}
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for src in sorted({src for dst in pending for src in plan.contributors(dst)}):
        to = [dst for dst in receivers(plan, src) if dst in wanted and (src, dst) not in stored]
        if to:
            out[src] = to
    return out


def _accumulate_tasks(graph: dict, names: dict[str, str],
                      feeds: dict[tuple[int, int], list[tuple[int, int]]],
                      pending: list[tuple[int, int]], gated: bool, ahead: int) -> list:  # fmt: skip
    """Add one ``accumulate`` (and its ``timing``) per chunk whose tiles run (``feeds``)."""
    order = sorted(pending)
    timings = []
    for src, to in feeds.items():
        after = None
        if gated and (gate := bisect.bisect_left(order, src) - max(1, ahead)) >= 0:
            after = (names["finish"], *order[gate])
        graph[(names["accumulate"], *src)] = (_gated, names["job"], names["engine"],
                                              names["store"], src, to, after)  # fmt: skip
        graph[(names["timing"], *src)] = (_timing, (names["accumulate"], *src))
        timings.append((names["timing"], *src))
    return timings


def _gated(job: ChunkJob, engine: Engine | EngineSpec, store: TileStore | None,
           index: tuple[int, int], to: list[tuple[int, int]], _after: Any) -> dict[str, Any]:  # fmt: skip
    """``accumulate``, scheduled after the task whose result is ``_after`` (ignored)."""
    return accumulate(job, engine, index, store, to)


def _piece(result: dict[str, Any], dst: tuple[int, int]) -> Piece | None:
    return result["pieces"].get(dst)


def _stored_piece(box: PixelWindow, path: Any) -> Piece:
    """A hand-over a killed run spilled, as a piece (``finish`` reads and checks it)."""
    return (box, path, None)


def _timing(result: dict[str, Any]) -> dict[str, float]:
    return result["timing"]


def run_graph(graph: dict, keys: list, workers: int,
              on_done: Callable[[Any], None] | None = None) -> list:  # fmt: skip
    """Run in this process with Dask's threaded scheduler (see geoseg.inference.cluster for others)."""
    return run_threads(graph, keys, workers, on_done)


__all__ = ["build_graph", "run_graph", "sources"]
