"""Polygons vectorised while the chunks are computed: the same layer, byte for byte, as
vectorising after the fact; the thread follows the tile store chunk by chunk; a failed run
stops it and leaves no layer behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from geoseg.bundle.untrained import init_bundle
from geoseg.inference.engine import StageTimer
from geoseg.runs.compute import open_store
from geoseg.runs.job import plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runs.polygons import PolygonsAhead
from geoseg.runs.predict import predict, vectorise_during
from geoseg.runs.write import write_polygons
from geoseg.store.tiles import TileStore
from tests.support import rgb_crop


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 256 x 384 scene in 2 x 3 chunks, a model, and a finished run with polygons."""
    d = tmp_path_factory.mktemp("ahead")
    rgb_crop(d / "scene.tif", 150, 200, 384, 256)
    model = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=d / "model")
    opts = PredictOptions(chunk=128, tile=64, overlap=8, vector="parquet", progress=False,
                          tiles_dir=d / "tiles", workers=1, polygons_when="during")  # fmt: skip
    report = predict(d / "scene.tif", model, d / "out", options=opts)
    return {"dir": d, "model": model, "opts": opts, "report": report}


def test_the_layer_equals_one_vectorised_after_the_fact(case: dict, tmp_path: Path) -> None:
    report, opts = case["report"], case["opts"]
    assert report["polygons"] > 0
    timings = report["timings_s"]
    assert {"vectorise", "polygons_wait", "polygons_after_chunks"} <= set(timings)
    run = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path, {}, opts)
    read = open_store(run).reader("classes")
    write_polygons(lambda w: read(w)[0], run.scene, run.card, run.paths, opts, StageTimer(),
                   progress=False)  # fmt: skip
    after = run.paths["vectors"].read_bytes()
    assert after == Path(report["outputs"]["vectors"]).read_bytes()
    # by default the CPU's cores run the model, and the polygons come after it
    cpu = opts.model_copy(update={"polygons_when": "auto", "tiles_dir": tmp_path / "t"})
    assert not vectorise_during(cpu) and vectorise_during(cpu.model_copy(update={"device": "cuda"}))
    report = predict(case["dir"] / "scene.tif", case["model"], tmp_path / "o", options=cpu)
    # after the chunks, beside the COG writes: no chunk to wait for
    assert "vectorise" in report["timings_s"] and "polygons_wait" not in report["timings_s"]
    assert Path(report["outputs"]["vectors"]).read_bytes() == after


def test_the_thread_follows_the_store_and_stops_with_the_run(case: dict, tmp_path: Path) -> None:
    finished = TileStore(Path(case["opts"].tiles_dir) / case["report"]["run"])
    opts = case["opts"].model_copy(update={"tiles_dir": tmp_path / "tiles"})
    run = plan_run(case["dir"] / "scene.tif", case["model"], tmp_path / "o", {}, opts)
    store = open_store(run)
    ahead = PolygonsAhead(run, store, StageTimer(), poll=0.01).start()
    layer = run.paths["vectors"]
    for index, chunk in sorted(run.plan.chunks.items()):  # the chunks arrive one by one
        time.sleep(0.05)
        assert not layer.exists()  # one is missing: the layer is not complete
        classes, conf = (finished.reader(n)(chunk.core)[0] for n in ("classes", "confidence"))
        store.write_chunk(index, chunk.core, classes, conf, None, finished.stored_stats(index))
    ahead.finish()
    assert layer.read_bytes() == Path(case["report"]["outputs"]["vectors"]).read_bytes()
    # a run that fails: the thread, waiting for a chunk that will not come, stops cleanly
    for out in layer.parent.iterdir():
        out.unlink()
    store.remove()
    ahead = PolygonsAhead(run, open_store(run), StageTimer(), poll=0.01).start()
    time.sleep(0.1)
    ahead.cancel()
    ahead.finish()  # nothing raised: the run's own error is the one the user sees
    assert not list(layer.parent.iterdir())  # no layer, no temporary
