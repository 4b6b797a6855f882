"""A damaged tile store is never trusted: chunks are checked against their CRC-32 on resume and
recomputed when truncated, corrupt or missing; hand-overs are checked when read; a store whose
metadata is damaged starts afresh."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.bundle.untrained import init_bundle
from geoseg.errors import OutputError
from geoseg.geometry.window import PixelWindow
from geoseg.runs.options import PredictOptions
from geoseg.runs.predict import predict
from geoseg.store.tiles import TileStore
from tests.support import rgb_crop


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished run of a 256 x 384 scene in 2 x 3 chunks (tinycnn, tile 64)."""
    d = tmp_path_factory.mktemp("resume")
    rgb_crop(d / "scene.tif", 200, 250, 384, 256)
    model = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=d / "model")
    opts = PredictOptions(chunk=128, tile=64, overlap=8, vector="none", progress=False,
                          tiles_dir=d / "tiles", workers=1)  # fmt: skip
    report = predict(d / "scene.tif", model, d / "out", options=opts)
    return {"dir": d, "model": model, "opts": opts, "report": report,
            "store": Path(d / "tiles" / report["run"]), "ref": _outputs(d / "out")}  # fmt: skip


def _outputs(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in ("classes", "confidence"):
        with rasterio.open(out / f"scene_{name}.tif") as ds:
            arrays[name] = ds.read()
    return arrays


def _rerun(run: dict) -> dict:
    (run["dir"] / "out" / "scene_report.json").unlink()  # outputs unfinished: resume the store
    return predict(run["dir"] / "scene.tif", run["model"], run["dir"] / "out", options=run["opts"])


def test_a_truncated_chunk_file_is_recomputed_alone(run: dict) -> None:
    assert run["report"]["chunks"]["total"] == 6
    chunk = run["store"] / "store.zarr" / "classes" / "c" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    report = _rerun(run)
    assert report["chunks"]["recomputed_damaged"] == 1
    assert report["chunks"]["computed"] == 1 and report["chunks"]["resumed"] == 5
    assert "verify" in report["timings_s"]
    got = _outputs(run["dir"] / "out")
    for name, ref in run["ref"].items():
        np.testing.assert_array_equal(got[name], ref)


@pytest.mark.parametrize("damage", ["bit flip", "missing file", "marker"])
def test_corrupt_missing_or_unreadable_chunks_are_recomputed(run: dict, damage: str) -> None:
    chunk = run["store"] / "store.zarr" / "confidence" / "c" / "0" / "2"
    marker = run["store"] / "done" / "0_2.json"
    if damage == "bit flip":  # still decodes: only the checksum tells
        store = TileStore(run["store"])
        arr = store._group()["confidence"]
        block = arr[0:128, 256:384]
        block[5, 5] ^= 1
        arr[0:128, 256:384] = block
    elif damage == "missing file":
        chunk.unlink()
    else:
        marker.write_text("{not json")
    report = _rerun(run)
    assert report["chunks"]["recomputed_damaged"] == 1 and report["chunks"]["computed"] == 1
    got = _outputs(run["dir"] / "out")
    for name, ref in run["ref"].items():
        np.testing.assert_array_equal(got[name], ref)
    assert "check" not in report  # checksums stay in the markers
    assert set(json.loads(marker.read_text())["check"]["crc32"]) == {"classes", "confidence"}


def test_handovers_are_checked_when_read(tmp_path: Path) -> None:
    store = TileStore.create(tmp_path / "s", (64, 64), 32, 2, False, {})
    part = np.random.default_rng(0).random((3, 8, 32), dtype=np.float32)
    path = store.put_handover((0, 0), (1, 0), part, np.ones((8, 32), bool))
    got, valid = store.read_handover(path)
    np.testing.assert_array_equal(got, part)
    assert valid.all()
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="hand-over of the tile store is damaged \\(checksum"):
        store.read_handover(path)
    path.write_bytes(bytes(data[:150]))
    with pytest.raises(OutputError, match=r"damaged.*run the same command again"):
        store.read_handover(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_store_with_damaged_metadata_starts_afresh(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = TileStore.create(tmp_path / "s", (64, 64), 32, 2, False, {})
    store.write_chunk((0, 0), PixelWindow(0, 32, 0, 32), np.zeros((32, 32), np.uint8),
                      np.zeros((32, 32), np.uint8), None, {"valid_pixels": 1})  # fmt: skip
    (tmp_path / "s" / "store.zarr" / "classes" / "zarr.json").write_text("garbage")
    with caplog.at_level("WARNING"):
        store = TileStore.create(tmp_path / "s", (64, 64), 32, 2, False, {})
    assert "damaged" in caplog.text and "afresh" in caplog.text
    assert store.verify() == ({}, [])  # nothing trusted from the damaged store
