"""One run at a time per tile store: two identical runs started together never compute a chunk
twice, a run refuses (naming the running process and the lock) or waits, a dead process's
lock is taken over, and batches go through the same lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.bundle.formats import read_model_card
from geoseg.bundle.untrained import init_bundle
from geoseg.catalog.loader import load_catalog
from geoseg.runs.batch import predict_catalog, scene_inputs
from geoseg.runs.job import plan_run
from geoseg.runs.options import PredictOptions
from geoseg.store.lock import store_lock
from geoseg.store.tiles import TileStore
from tests.support import RGB, invoke

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("concurrent")
    with rasterio.open(RGB) as ds:
        win = Window(150, 100, 512, 512)  # 16 chunks: run A holds its lock for a second or two
        prof = ds.profile | {"width": 512, "height": 512, "transform": ds.window_transform(win)}
        with rasterio.open(d / "scene.tif", "w", **prof) as out:
            out.write(ds.read(window=win))
    model = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=d / "model")
    return {"dir": d, "scene": d / "scene.tif", "model": model}


def _args(s: dict, out: Path, tiles: Path, *extra: str) -> list[str]:
    return ["predict", str(s["scene"]), "--model", str(s["model"]), "--out", str(out),
            "--tiles-dir", str(tiles), "--chunk", "128", "--tile", "64", "--vector", "none",
            "--no-progress", "--workers", "1", *extra]  # fmt: skip


def _classes(out: Path) -> np.ndarray:
    with rasterio.open(out / "scene_classes.tif") as ds:
        return ds.read()


def test_two_identical_runs_at_once(setup: dict) -> None:
    """Run A in another process; while it holds the run, the same command here refuses
    (naming A and the lock), then waits for A with --wait and resumes what A stored."""
    d, tiles = setup["dir"], setup["dir"] / "tiles"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen([sys.executable, "-m", "geoseg", *_args(setup, d / "a", tiles)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=ROOT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(tiles.glob("*.lock")) and a.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.poll() is None, a.communicate()
        code, _, err = invoke(*_args(setup, d / "b", tiles))
        last = err.strip().splitlines()[-1]
        assert code == 2 and f"is already running: process {a.pid} on " in last, err
        assert f"holds {next(tiles.glob('*.lock'))}" in last
        code, _, err = invoke(*_args(setup, d / "b", tiles, "--wait"))
        assert code == 0, err
    finally:
        _, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err
    reports = [json.loads((d / o / "scene_report.json").read_text()) for o in ("a", "b")]
    assert reports[0]["run"] == reports[1]["run"]
    total = reports[0]["chunks"]["total"]
    # every chunk computed once, by A; B resumed them all
    assert [r["chunks"]["computed"] for r in reports] == [total, 0]
    np.testing.assert_array_equal(_classes(d / "a"), _classes(d / "b"))
    # the same as a single run on its own
    code, _, _ = invoke(*_args(setup, d / "single", d / "tiles-single"))
    assert code == 0
    np.testing.assert_array_equal(_classes(d / "a"), _classes(d / "single"))
    store = TileStore(tiles / reports[0]["run"])  # intact: every chunk verifies
    good, bad = store.verify()
    assert len(good) == total and bad == []
    assert not list(tiles.glob("*.lock")) and not list(tiles.glob("*/handover/*"))


def test_a_running_process_is_named_and_its_dead_lock_taken_over(setup: dict) -> None:
    d = setup["dir"]
    out, tiles = d / "held", d / "tiles-held"
    opts = PredictOptions(tiles_dir=tiles, chunk=128, tile=64, vector="none", progress=False,
                          workers=1)  # fmt: skip
    root = plan_run(setup["scene"], setup["model"], out, {}, opts).store_root
    with store_lock(root) as lock:  # this (live) process runs it
        owner = dict(lock.owner.__dict__)
        code, _, err = invoke(*_args(setup, out, tiles))
        last = err.strip().splitlines()[-1]
        assert code == 2 and f"run {root.name} is already running: process {os.getpid()}" in last
        assert f"holds {lock.path}" in last and "--wait" in last
        assert not [p for p in out.rglob("*") if p.is_file()]
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.path.write_text(json.dumps({**owner, "pid": dead.pid, "started": None}))
    code, _, err = invoke(*_args(setup, out, tiles))  # a dead process's lock: taken over
    assert code == 0, err
    assert not lock.path.exists()


def test_a_batch_scene_whose_run_is_held_elsewhere_fails_alone(setup: dict) -> None:
    d = setup["dir"]
    (d / "other.tif").write_bytes(setup["scene"].read_bytes())  # another file: another run
    (d / "c.yaml").write_text("scenes:\n  - {id: one, modalities: {image: scene.tif}}\n"
                              "  - {id: two, modalities: {image: other.tif}}\n")  # fmt: skip
    cat = load_catalog(d / "c.yaml")
    opts = PredictOptions(tiles_dir=d / "tiles-batch", chunk=128, tile=64, vector="none",
                          progress=False, workers=1)  # fmt: skip
    image, extra, sopts = scene_inputs(cat.scene("one"), read_model_card(setup["model"]), opts)
    root = plan_run(image, setup["model"], d / "batch" / "one", extra, sopts, name="one").store_root
    with store_lock(root):
        report = predict_catalog(cat, setup["model"], d / "batch", opts)
    status = {s.id: s for s in report.scenes}
    assert status["one"].status == "failed" and "is already running: process" in status["one"].error
    assert status["two"].status == "done"  # the batch went on
