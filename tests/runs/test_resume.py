"""A killed run keeps the work it did: a resumed run reuses stored chunks and the hand-overs the
killed run spilled, runs only the tiles of chunks in flight at the kill, and ends with output
identical to an uninterrupted run; damaged or missing hand-overs are found and their tiles run
again.

The fast tests build the state a kill leaves (a part of the run's own Dask graph computed into
its tile store, then stopped); the slow one kills a real ``geoseg predict`` with SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geoseg.bundle.untrained import init_bundle
from geoseg.inference.chunks import ChunkJob, accumulate
from geoseg.inference.engine import open_engine
from geoseg.inference.graph import build_graph, run_graph, sources
from geoseg.runs.compute import open_store
from geoseg.runs.job import plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runs.predict import predict
from geoseg.store.tiles import TileStore
from geoseg.testing import mosaic_scene
from geoseg.tiling.plan import TilePlan
from tests.support import RGB, rgb_crop, run_cli

#: 256 x 384 px in 4 x 6 chunks of 64 px, tiles of 64 px every 56 px: each reaches 4 chunks
SHAPE, CHUNK = (256, 384), 64


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A scene, a model, the options, and the outputs of an uninterrupted run."""
    d = tmp_path_factory.mktemp("resume")
    rgb_crop(d / "scene.tif", 150, 200, SHAPE[1], SHAPE[0])
    model = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=d / "model")
    opts = PredictOptions(chunk=CHUNK, tile=64, overlap=8, vector="none", progress=False,
                          tiles_dir=d / "tiles-ref", workers=1, probabilities=True)  # fmt: skip
    report = predict(d / "scene.tif", model, d / "ref", options=opts)
    assert report["tiles"] == {"total": 35, "resumed": 0, "run": 35,
                               "why": {"chunk_pending": 35, "handover_damaged": 0,
                                       "handover_missing": 0, "tile_damaged": 0}}  # fmt: skip
    return {"dir": d, "model": model, "opts": opts, "ref": _outputs(d / "ref")}


def _outputs(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("classes", "confidence", "probabilities"):
        with rasterio.open(out / f"scene_{name}.tif") as ds:
            arrays[name] = ds.read()
    return arrays


def _killed(case: dict, tmp: Path, finished: list[tuple[int, int]],
            in_flight: list[tuple[int, int]],
            spill_rate: float = 0.0) -> tuple[PredictOptions, TileStore]:  # fmt: skip
    """The tile store a run leaves when killed after ``finished`` chunks were stored and the
    ``accumulate`` of ``in_flight`` ones had run (their own pieces lost with the process,
    unless they were spilled: ``spill_rate``)."""
    opts = case["opts"].model_copy(update={"tiles_dir": tmp / "tiles"})
    run = plan_run(case["dir"] / "scene.tif", case["model"], tmp / "out", {}, opts)
    store = open_store(run)
    job = ChunkJob(run.scene, run.plan, run.opts.batch, np.arange(3, dtype=np.uint8), True,
                   spill_rate=spill_rate)  # fmt: skip
    graph, _, _ = build_graph(job, open_engine(case["model"]), list(run.plan.chunks), store)
    keys = [("finish", *i) for i in finished] + [("accumulate", *i) for i in in_flight]
    run_graph(graph, keys, 1)
    return opts, store


def _resume(case: dict, tmp: Path, opts: PredictOptions) -> dict:
    report = predict(case["dir"] / "scene.tif", case["model"], tmp / "out", options=opts)
    got = _outputs(tmp / "out")
    for name, ref in case["ref"].items():
        np.testing.assert_array_equal(got[name], ref, err_msg=name)
    assert not list(Path(opts.tiles_dir).glob("*/handover/*"))  # nothing left behind
    assert not list(Path(opts.tiles_dir).glob("*/tile/*"))
    return report


def _spilled(folder: Path) -> list[Path]:
    """The spilled files a kill left in ``folder``, without a killed writer's temporary
    (``.name.XXXX.npy``: the resumed run removes it)."""
    return [p for p in folder.glob("*.npy") if not p.name.startswith(".")]


def _tiles(plan: TilePlan, chunks: Iterable[tuple[int, int]]) -> int:
    return sum(len(plan.chunks[c].tiles) for c in chunks)


ROW0 = [(0, j) for j in range(6)]
POINTS = {
    # killed once the first chunk row was stored, the next row's first accumulate done
    "after the first chunk row": (ROW0, [(1, 0)]),
    # killed mid-row: two accumulates ran whose chunks were not stored yet
    "mid-row": ([*ROW0, (1, 0), (1, 1), (1, 2)], [(1, 3), (1, 4)]),
    # killed while the outputs were written: every chunk stored
    "during the writers": ([(i, j) for i in range(4) for j in range(6)], []),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_resume_runs_only_the_tiles_of_chunks_in_flight(case: dict, tmp_path: Path,
                                                        point: str) -> None:  # fmt: skip
    finished, in_flight = POINTS[point]
    opts, store = _killed(case, tmp_path, finished, in_flight)
    plan = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path / "out", {}, opts).plan
    pending = [c for c in plan.chunks if c not in finished]
    spilled = list((store.root / "handover").glob("*.npy"))
    assert not pending or spilled  # the killed run's hand-overs to pending chunks are there
    report = _resume(case, tmp_path, opts)
    tiles = report["tiles"]
    # the tiles that ran are those of the chunks not stored at the kill, no other
    assert tiles["why"] == {"chunk_pending": _tiles(plan, pending), "handover_damaged": 0,
                            "handover_missing": 0, "tile_damaged": 0}  # fmt: skip
    assert tiles["run"] == report["chunks"]["tiles_run"] == _tiles(plan, pending)
    assert tiles["resumed"] == 35 - tiles["run"]
    # so of the tiles the killed run had computed, only those of the chunks in flight ran
    # again (without the spilled hand-overs, every stored chunk feeding a pending one would)
    ran_before = {src for dst in finished for src in plan.contributors(dst)} | set(in_flight)
    assert _tiles(plan, ran_before & set(pending)) == _tiles(plan, in_flight)
    feeding = {src for dst in pending for src in plan.contributors(dst)} - set(pending)
    assert feeding or point == "during the writers"  # stored chunks that did not run again
    assert report["chunks"]["resumed"] == len(finished)


def test_chunks_whose_own_piece_was_spilled_do_not_run_again(case: dict, tmp_path: Path) -> None:
    # chunks whose tiles take long (CPU) spill their own piece too: a kill between their
    # accumulate and their finish loses nothing
    finished, in_flight = POINTS["mid-row"]
    opts, _ = _killed(case, tmp_path, finished, in_flight, spill_rate=float("inf"))
    plan = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path / "out", {}, opts).plan
    pending = [c for c in plan.chunks if c not in finished]
    report = _resume(case, tmp_path, opts)
    assert report["tiles"]["why"]["chunk_pending"] == _tiles(plan, set(pending) - set(in_flight))
    assert report["tiles"]["run"] == report["chunks"]["tiles_run"]
    assert report["tiles"]["resumed"] == _tiles(plan, [*finished, *in_flight])


class _Killed(Exception):
    """The process dies (SIGKILL) in the middle of a chunk's tiles."""


class _DiesAfter:
    """The real engine, whose process is killed once it has run ``tiles`` tiles."""

    def __init__(self, engine: Any, tiles: int) -> None:
        self.engine, self.left = engine, tiles
        self.num_classes = engine.num_classes

    def normalise(self, arrays: dict, valid: np.ndarray) -> dict:
        return self.engine.normalise(arrays, valid)

    def probabilities(self, batch: dict) -> np.ndarray:
        if self.left == 0:
            raise _Killed
        self.left -= 1
        return self.engine.probabilities(batch)


def _killed_mid_chunk(case: dict, tmp: Path) -> tuple[PredictOptions, TilePlan, int]:
    """A run killed after the first chunk row, while the next chunk with several tiles had
    run all but its last one (tiles spilled as they ran: they took "long")."""
    opts, store = _killed(case, tmp, ROW0, [], spill_rate=float("inf"))
    run = plan_run(case["dir"] / "scene.tif", case["model"], tmp / "out", {}, opts)
    victim = next(c for c, ch in sorted(run.plan.chunks.items())
                  if c not in ROW0 and len(ch.tiles) > 1)  # fmt: skip
    ran = len(run.plan.chunks[victim].tiles) - 1
    job = ChunkJob(run.scene, run.plan, 1, np.arange(3, dtype=np.uint8), True,
                   spill_rate=float("inf"))  # fmt: skip
    with pytest.raises(_Killed):
        accumulate(job, _DiesAfter(open_engine(case["model"]), ran), victim, store)
    assert len(list((store.root / "tile").glob("*.npy"))) == ran
    return opts, run.plan, ran


def test_a_kill_mid_chunk_loses_only_the_tile_in_flight(case: dict, tmp_path: Path) -> None:
    opts, plan, ran = _killed_mid_chunk(case, tmp_path)
    pending = [c for c in plan.chunks if c not in ROW0]
    report = _resume(case, tmp_path, opts)
    tiles = report["tiles"]
    assert tiles["run"] == report["chunks"]["tiles_run"] == _tiles(plan, pending) - ran
    assert tiles["resumed"] == _tiles(plan, ROW0) + ran
    assert tiles["why"]["chunk_pending"] == tiles["run"] and tiles["why"]["tile_damaged"] == 0


def test_a_damaged_spilled_tile_runs_again(case: dict, tmp_path: Path) -> None:
    opts, plan, ran = _killed_mid_chunk(case, tmp_path)
    bad = sorted(Path(opts.tiles_dir).glob("*/tile/*.npy"))[0]
    bad.write_bytes(bad.read_bytes()[:-20])
    pending = [c for c in plan.chunks if c not in ROW0]
    report = _resume(case, tmp_path, opts)  # output identical all the same
    tiles = report["tiles"]
    assert tiles["why"]["tile_damaged"] == 1
    assert tiles["run"] == report["chunks"]["tiles_run"] == _tiles(plan, pending) - ran + 1


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "missing"])
def test_a_damaged_or_missing_handover_runs_its_tiles_again(case: dict, tmp_path: Path,
                                                            damage: str) -> None:  # fmt: skip
    finished, in_flight = POINTS["mid-row"]
    opts, store = _killed(case, tmp_path, finished, in_flight)
    # a hand-over from the stored chunk (0, 2) to the pending (1, 3)
    path = store.root / "handover" / "0_2-1_3.npy"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bit flip":
        path.write_bytes(data[:200] + bytes([data[200] ^ 1]) + data[201:])
    else:
        path.unlink()
    plan = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path / "out", {}, opts).plan
    pending = [c for c in plan.chunks if c not in finished]
    report = _resume(case, tmp_path, opts)
    why = report["tiles"]["why"]
    reason = "handover_missing" if damage == "missing" else "handover_damaged"
    assert why[reason] == _tiles(plan, [(0, 2)])  # the stored chunk (0, 2) ran its tiles again
    assert why["chunk_pending"] == _tiles(plan, pending)
    assert sum(why.values()) == report["tiles"]["run"] == report["chunks"]["tiles_run"]


def test_stored_handovers_keeps_only_intact_pieces_for_pending_chunks(tmp_path: Path) -> None:
    store = TileStore.create(tmp_path / "s", (64, 64), 32, 2, False, {})
    part, valid = np.ones((3, 8, 32), np.float32), np.ones((8, 32), bool)
    for src, dst in [((0, 0), (1, 0)), ((0, 0), (0, 1)), ((0, 1), (1, 1)), ((1, 0), (1, 1))]:
        store.put_handover(src, dst, part, valid)
    folder = store.root / "handover"
    (folder / ".0_0-1_0.npy.tmp123").write_bytes(b"half")  # a killed writer's temporary
    (folder / "notes.npy").write_bytes(b"?")
    bad = folder / "1_0-1_1.npy"
    bad.write_bytes(bad.read_bytes()[:-9])
    good, damaged = store.stored_handovers([(1, 0), (1, 1)])  # (0, 1) is stored
    assert good == {((0, 0), (1, 0)): folder / "0_0-1_0.npy",
                    ((0, 1), (1, 1)): folder / "0_1-1_1.npy"}  # fmt: skip
    assert damaged == [((1, 0), (1, 1))]
    assert sorted(p.name for p in folder.iterdir()) == ["0_0-1_0.npy", "0_1-1_1.npy"]


def test_sources_run_a_stored_chunk_only_for_pieces_that_are_missing(case: dict,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    opts = case["opts"].model_copy(update={"tiles_dir": tmp_path})
    plan = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path / "o", {}, opts).plan
    everything = sources(plan, list(plan.chunks))
    assert set(everything) == {c for c, ch in plan.chunks.items() if ch.tiles}
    pending = [(1, 1), (1, 2)]
    feeds = sources(plan, pending)  # nothing stored: every contributor runs
    assert set(feeds) == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)}
    stored = {(src, dst): Path("x") for src in feeds for dst in feeds[src] if src != dst}
    assert sources(plan, pending, stored) == {(1, 1): [(1, 1)], (1, 2): [(1, 2)]}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(unet_rgb: Path, tmp_path: Path) -> None:
    """A real ``geoseg predict`` killed with SIGKILL in its second chunk row, then run again."""
    scene = mosaic_scene(RGB, tmp_path / "big.tif", 1536)
    args = ["predict", scene, "--model", unet_rgb, "--chunk", "128", "--tile", "128",
            "--overlap", "16", "--no-progress", "--vector", "none"]  # fmt: skip
    run_cli(*args, "--out", tmp_path / "ref", "--tiles-dir", tmp_path / "tref")
    cmd = [sys.executable, "-m", "geoseg.cli.main", *map(str, args), "--out", str(tmp_path / "res"),
           "--tiles-dir", str(tmp_path / "tiles")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, root = time.time() + 300, None
    while time.time() < deadline and root is None:
        found = list((tmp_path / "tiles").glob("*/done"))
        if found and len(list(found[0].glob("[0-9]*_*.json"))) >= 14:  # row 0 (12 chunks), two more
            root = found[0].parent
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert root is not None
    # the store's markers: a writer killed mid-write leaves a hidden temporary beside them
    done = set(TileStore(root).done_stats())
    assert len(done) < 144, "the run finished before it could be killed; make it longer"
    # chunks whose accumulate had run: stored, or with a spilled hand-over
    ran = done | {tuple(map(int, p.stem.split("-")[0].split("_")))
                  for p in _spilled(root / "handover")}  # fmt: skip
    plan = TilePlan(1536, 1536, 128, 16, 128)
    owner = {t: c for c, ch in plan.chunks.items() for t in ch.tiles}
    tiles_spilled = [owner[tuple(map(int, p.stem.split("_")))] for p in _spilled(root / "tile")]
    ran |= set(tiles_spilled)
    in_flight = ran - done
    # in flight, but its own piece was spilled (its tiles took long): nothing to run again
    kept = {(i, j) for i, j in in_flight if (root / "handover" / f"{i}_{j}-{i}_{j}.npy").exists()}
    copy = shutil.copytree(root, tmp_path / "as-killed")  # for a look when this fails
    out = run_cli(*args, "--out", tmp_path / "res", "--tiles-dir", tmp_path / "tiles")
    assert f"resuming run {root.name}: {len(done)}/144 chunks" in out.stderr
    report = json.loads((tmp_path / "res" / "big_report.json").read_text())
    tiles, chunks = report["tiles"], report["chunks"]
    assert chunks["resumed"] == len(done) and chunks["computed"] == 144 - len(done)
    assert tiles["why"]["handover_damaged"] == tiles["why"]["handover_missing"] == 0
    ran_now = chunks["tiles_run"] + chunks["tiles_skipped_nodata"]  # (the scene has a collar)
    assert tiles["run"] == tiles["why"]["chunk_pending"] == ran_now
    # tiles computed twice: those of the chunks in flight at the kill (a few: chunks run at
    # most 2 x workers ahead of the last stored one), no more
    # (without the kept hand-overs, stored chunks feeding pending ones would run again too)
    assert tiles["why"]["tile_damaged"] == 0
    # and of the in-flight chunks, the tiles that had run were spilled: only those being
    # computed at the kill ran again
    to_run = set(plan.chunks) - done - kept
    assert tiles["run"] == _tiles(plan, to_run) - sum(c in to_run for c in tiles_spilled)
    assert len(in_flight) <= 8
    with rasterio.open(tmp_path / "res" / "big_classes.tif") as a, \
            rasterio.open(tmp_path / "ref" / "big_classes.tif") as b:  # fmt: skip
        np.testing.assert_array_equal(a.read(), b.read())
    assert not list((tmp_path / "tiles").glob("*/handover/*"))
    shutil.rmtree(copy)
