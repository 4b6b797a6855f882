"""Computing the chunks of a run into its tile store: here (threads) or on a Dask cluster."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from geoseg.inference.chunks import ChunkJob, CoreShare
from geoseg.inference.engine import StageTimer, open_engine
from geoseg.inference.graph import build_graph, run_graph, sources
from geoseg.runs.job import RunSetup
from geoseg.runs.options import PredictOptions
from geoseg.runtime import available_cores, gdal_env, plan_threads, release_free_memory
from geoseg.store.tiles import Handovers, Link, TileStore
from geoseg.tiling.plan import TilePlan

log = logging.getLogger(__name__)

#: optional hook ``(stage, chunks done, chunks total)``: stage "chunks" after each finished
#: chunk (and once at the start), "outputs" when writing begins (the service's progress)
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class Computed:
    """What the chunk phase leaves: the store, what was resumed, the threads used, timings."""

    store: TileStore
    done_before: set[tuple[int, int]]
    workers: int
    threads: int
    timer: StageTimer = field(default_factory=StageTimer)
    #: stored chunks found damaged (truncated, corrupt) and computed again
    damaged: list[tuple[int, int]] = field(default_factory=list)
    #: the plan's tiles resumed and run, and why they ran (:func:`tile_account`)
    tiles: dict = field(default_factory=dict)
    #: tiles per model call, as run (measured from free memory on a GPU of this process)
    batch: int | None = None


def open_store(run: RunSetup) -> TileStore:
    """The run's tile store: created, emptied first when the options say so."""
    opts, card = run.opts, run.card
    root = run.store_root
    if opts.overwrite or not opts.resume:
        TileStore(root).remove()
    manifest = {"run": run.rid, "image": str(run.image), "model": str(run.model),
                "digest": run.digest, "tile": run.plan.tile, "overlap": run.plan.overlap,
                "chunk": opts.chunk}  # fmt: skip
    store = TileStore.create(root, run.scene.grid.shape, opts.chunk, card.num_classes,
                             opts.probabilities, manifest)  # fmt: skip
    return store


def compute_chunks(run: RunSetup, progress_callback: ProgressCallback | None = None,
                   store: TileStore | None = None) -> Computed:  # fmt: skip
    """Compute every chunk not finished yet into the tile store.

    A resumed run trusts what it reads back intact: stored chunks and the hand-overs a
    killed run spilled; only the tiles of chunks in flight at the kill (or whose spilled
    pieces were damaged) run again, and of those the tiles a killed run had spilled are read
    back. ``store``: the run's, opened already (``open_store``).
    """
    store, plan, opts = store or open_store(run), run.plan, run.opts
    t_verify = time.perf_counter()
    stored, damaged = store.verify()  # a chunk is trusted only once read back intact
    done_before = set(stored)
    pending = [idx for idx in plan.chunks if idx not in done_before]
    handovers, bad = store.stored_handovers(pending)
    feeds = sources(plan, pending, handovers)
    spilled = store.stored_tiles({t for src in feeds for t in plan.chunks[src].tiles})
    # fewer chunks than workers: give the idle workers' cores to torch instead
    workers, threads = plan_threads(min(opts.workers or available_cores(), max(1, len(pending))))
    torch.set_num_threads(threads)
    out = Computed(store, done_before, workers, threads, damaged=damaged,
                   tiles=tile_account(plan, feeds, bad, spilled))  # fmt: skip
    out.timer.add("verify", time.perf_counter() - t_verify)
    if done_before or handovers or spilled:
        log.info("resuming run %s: %d/%d chunks, %d/%d tiles done", run.rid, len(done_before),
                 len(plan.chunks), out.tiles["resumed"], out.tiles["total"])  # fmt: skip
    log.info("run %s: %d chunks (%d already done), %d tiles of %d px, overlap %d px, "
             "%d worker(s) x %d thread(s)", run.rid, len(plan.chunks), len(done_before),
             plan.n_tiles, plan.tile, plan.overlap, workers, threads)  # fmt: skip
    if not run.card.trained:
        log.warning("model %s has untrained (random) weights: predictions are meaningless",
                    run.model)  # fmt: skip
    t_run = time.perf_counter()
    if progress_callback is not None:
        progress_callback("chunks", len(done_before), len(plan.chunks))
    if pending:
        timings = _run_pending(run, out, pending, handovers, len(feeds), progress_callback)
        out.tiles = tile_account(plan, feeds, bad, counts=_collect(out.timer, feeds, timings))
    out.timer.add("chunks_wall", time.perf_counter() - t_run)
    return out


#: counts an ``accumulate``'s timing holds besides seconds: tiles read back from the store,
#: and spilled tiles found damaged (run again)
TILE_COUNTS = ("tiles_resumed", "tiles_damaged")


def _collect(timer: StageTimer, feeds: dict, timings: list[dict]) -> dict:
    """Add the ``accumulate`` timings (in ``feeds`` order) to ``timer``; return each one's
    tile counts (:data:`TILE_COUNTS`)."""
    counts = {}
    for src, timing in zip(feeds, timings, strict=True):
        counts[src] = {k: int(timing.pop(k, 0)) for k in TILE_COUNTS}
        for stage, sec in timing.items():
            timer.add(stage, sec)
    return counts


def tile_account(plan: TilePlan, feeds: dict[tuple[int, int], list[tuple[int, int]]],
                 damaged: list[Link], spilled: Collection[tuple[int, int]] = (),
                 counts: dict[tuple[int, int], dict[str, int]] | None = None) -> dict:  # fmt: skip
    """The plan's tiles resumed and run; per reason, the tiles that ran: their own chunk is
    not stored and needs them (``chunk_pending``: in flight at a kill, or not started), a
    piece they hand to a pending chunk was found damaged (``handover_damaged``) or is
    missing (``handover_missing``), or their spilled probabilities were damaged
    (``tile_damaged``). A tile of a chunk that runs is resumed when a killed run spilled it:
    ``counts`` (per chunk, what its ``accumulate`` read back: after the run) or, before
    the run, the ``spilled`` tiles found in the store (not verified yet)."""
    hurt = {src for src, _ in damaged}
    why = {"chunk_pending": 0, "handover_damaged": 0, "handover_missing": 0, "tile_damaged": 0}
    found = set(spilled)
    for src, to in feeds.items():
        tiles = plan.chunks[src].tiles
        if counts is not None:
            c = counts.get(src, {})
            reused, bad = c.get("tiles_resumed", 0), c.get("tiles_damaged", 0)
        else:
            reused, bad = sum(1 for t in tiles if t in found), 0
        reason = ("chunk_pending" if src in to
                  else "handover_damaged" if src in hurt else "handover_missing")  # fmt: skip
        why[reason] += len(tiles) - reused - bad
        why["tile_damaged"] += bad
    run = sum(why.values())
    return {"total": plan.n_tiles, "resumed": plan.n_tiles - run, "run": run, "why": why}


def _run_pending(run: RunSetup, out: Computed, pending: list[tuple[int, int]],
                 handovers: Handovers, tasks: int,
                 progress_callback: ProgressCallback | None = None) -> list[dict]:  # fmt: skip
    """Compute the pending chunks (``tasks``: the chunks whose tiles run, ``sources``); returns
    the timing of each ``accumulate`` (in the order of ``sources``)."""
    job = ChunkJob(scene=run.scene, plan=run.plan, batch=run.opts.batch,
                   class_ids=np.array([c.id for c in run.card.classes], np.uint8),
                   probabilities=run.opts.probabilities)  # fmt: skip
    if not run.opts.scheduler and run.opts.device == "cpu":  # threads of this process
        job.cores = CoreShare(out.workers * out.threads, out.workers, tasks)
    bar = tqdm(total=len(run.plan.chunks), initial=len(out.done_before), unit="chunk",
               desc="predict", disable=not run.opts.progress, leave=False)  # fmt: skip
    if progress_callback is not None:  # every finished chunk also reaches the hook
        update, count = bar.update, [len(out.done_before)]  # (a disabled bar counts nothing)

        def tick(n: float | None = 1) -> bool | None:
            shown = update(n)
            count[0] += int(n or 0)
            progress_callback("chunks", count[0], len(run.plan.chunks))
            return shown

        bar.update = tick  # type: ignore[method-assign]
    with gdal_env(), bar:
        if run.opts.scheduler:
            results = _run_on_cluster(job, out.store, run.model, run.digest, pending, handovers,
                                      run.opts, out.workers, bar)  # fmt: skip
        else:
            results = _run_here(job, out.store, run.model, pending, handovers, run.opts,
                                out.workers, out.threads, bar, out.timer)  # fmt: skip
    out.batch = job.batch
    # every chunk is stored: no hand-over or spilled tile is read again (a recomputed
    # accumulate, its worker died, may even have re-spilled pieces for stored chunks)
    out.store.clear_spills()
    # the workers' freed buffers stay in their malloc arenas, under the vectoriser's peak
    release_free_memory()
    return results[len(pending) :]


def _run_here(job: ChunkJob, store: TileStore, model: str | Path, pending: list,
              handovers: Handovers, opts: PredictOptions, workers: int, threads: int,
              bar: tqdm, timer: StageTimer) -> list:  # fmt: skip
    """Run the chunk graph in this process (threads); the model is released on return."""
    with timer.clock("load_model"):
        engine = open_engine(model, opts.device, threads, opts.amp, compile=opts.compile)
    if job.batch is None:  # a GPU of this process: as many tiles as its free memory holds
        job.batch = engine.fitting_batch(job.plan.tile_h, job.plan.tile_w)
    graph, finals, timings = build_graph(job, engine, pending, store, ahead=2 * workers,
                                         stored=handovers)  # fmt: skip
    return run_graph(graph, finals + timings, workers, on_done=lambda _: bar.update(1))


def _run_on_cluster(job: ChunkJob, store: TileStore, model: str | Path, digest: str,
                    pending: list, handovers: Handovers, opts: PredictOptions, workers: int,
                    bar: tqdm) -> list:  # fmt: skip
    """Run the chunk graph on a dask.distributed cluster (workers share the tile store)."""
    from geoseg.inference.cluster import EngineSpec, open_client, run_distributed

    spec = EngineSpec(str(Path(model).resolve()), digest, opts.device, threads=0, amp=opts.amp,
                      compile=opts.compile)  # fmt: skip
    client = open_client(str(opts.scheduler), workers)
    bar.write(f"dask dashboard: {client.dashboard_link}")
    try:
        graph, finals, timings = build_graph(job, spec, pending, store, ahead=2 * workers,
                                             stored=handovers)  # fmt: skip
        return run_distributed(client, graph, finals + timings, on_done=lambda _: bar.update(1))
    finally:
        cluster = client.cluster if opts.scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()
