"""Batch prediction over a catalog of real scenes with bad ones among them.

Scenes: two adjacent halves of the vendored Landsat scene (EPSG:32618, mosaicked back
together), the Olinda Landsat scene (EPSG:31985, 6 bands -> 3), plus, when ../shared/data is
present, three airborne/UAV scenes in three more UTM zones; a truncated copy of a real GeoTIFF
(opens, fails while reading pixels) and a scene without the modality the model needs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.bundle.untrained import init_bundle
from geoseg.catalog.loader import load_catalog
from geoseg.runs.batch import scene_inputs
from geoseg.runs.options import PredictOptions
from geoseg.scene.classes import default_classes
from tests.support import DATA, RGB, SHARED, invoke

OLINDA = DATA / "olinda" / "L7_ETMs.tif"
SHARED_SCENES = {"osbs-029": "deepforest/OSBS_029.tif",
                 "sjer-477": "deepforest/2018_SJER_3_252000_4107000_image_477.tif",
                 "australia-uav": "deepforest/australia.tif"}  # fmt: skip


def _crop(src: Path, dst: Path, window: Window) -> Path:
    with rasterio.open(src) as ds:
        prof = ds.profile | {"width": window.width, "height": window.height,
                             "transform": ds.window_transform(window)}  # fmt: skip
        with rasterio.open(dst, "w", **prof) as out:
            out.write(ds.read(window=window))
    return dst


def _truncated(src: Path, dst: Path) -> Path:
    """A tiled GeoTIFF cut in half: its header opens, half of its tiles are gone."""
    full = dst.with_name("full_" + dst.name)
    with rasterio.open(src) as ds:
        prof = ds.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128,
                             "compress": "deflate"}  # fmt: skip
        with rasterio.open(full, "w", **prof) as out:
            out.write(ds.read())
    data = full.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return full


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("campaign")
    model = init_bundle("tinycnn", {"image": 3}, 4, tile=128, output=d / "model")
    west = _crop(RGB, d / "rgb_west.tif", Window(0, 0, 400, 718))
    east = _crop(RGB, d / "rgb_east.tif", Window(400, 0, 391, 718))
    full = _truncated(OLINDA, d / "corrupt.tif")
    good = {"rgb-west": {"image": str(west)}, "rgb-east": {"image": str(east)},
            "olinda": {"image": {"path": str(OLINDA), "bands": [3, 2, 1],
                                 "roles": ["red", "green", "blue"]}}}  # fmt: skip
    for sid, rel in SHARED_SCENES.items():
        if (SHARED / rel).exists():
            good[sid] = {"image": str(SHARED / rel)}
    scenes = [{"id": k, "modalities": v} for k, v in good.items()]
    scenes.insert(2, {"id": "corrupt", "modalities": {"image": {"path": "corrupt.tif",
                                                                "bands": [3, 2, 1]}}})
    scenes.append({"id": "no-image", "modalities": {"dem": str(DATA / "olinda" /
                                                               "olinda_dem_utm25s.tif")}})
    (d / "campaign.yaml").write_text(json.dumps({"name": "campaign", "scenes": scenes}))
    (d / "pipe.yaml").write_text(
        "name: campaign\ncatalog: campaign.yaml\nworkdir: work\nsteps:\n"
        "  - type: predict\n    model: model\n    tile: 128\n    min_area: 0\n"
        "    merge_vectors: true\n    mosaic: true\n")
    t = time.perf_counter()
    code, out, err = invoke("run", d / "pipe.yaml")
    return {"dir": d, "model": model, "good": list(good), "full": full, "code": code,
            "out": out, "err": err, "seconds": time.perf_counter() - t,
            "work": d / "work" / "predict"}  # fmt: skip


def _report(work: Path) -> dict:
    return json.loads((work / "batch_report.json").read_text())


def test_failures_do_not_stop_the_batch(campaign: dict) -> None:
    assert campaign["code"] == 1, campaign["err"]  # some scenes failed
    rep = _report(campaign["work"])
    status = {s["id"]: s for s in rep["scenes"]}
    assert len(campaign["good"]) >= 3 and (len(campaign["good"]) >= 6 or not SHARED.exists())
    for sid in campaign["good"]:
        s = status[sid]
        assert s["status"] == "done", s
        assert s["valid_pixels"] > 0 and s["classes"]
        assert sum(c["area_m2"] for c in s["classes"].values()) > 0
        assert Path(s["outputs"]["classes"]).parent == campaign["work"] / sid  # named per scene
    corrupt, missing = status["corrupt"], status["no-image"]
    assert corrupt["status"] == "failed" and "corrupt.tif" in corrupt["error"]
    # in geoseg's words (as `catalog validate`): the file, the window, the cause, the fix; not
    # GDAL's "RasterioIOError: Read failed. See previous exception for details."
    assert "corrupt.tif: pixels cannot be read in window rows " in corrupt["error"]
    assert "the file is corrupt or truncated: re-download or replace it" in corrupt["error"]
    assert "gdal_translate" in corrupt["error"]
    assert "previous exception" not in corrupt["error"]
    assert not corrupt["error"].startswith(("RasterioIOError", "InputError"))
    assert missing["status"] == "failed"
    assert "no modality 'image', which the model needs" in missing["error"]
    assert rep["counts"] == {"done": len(campaign["good"]), "skipped": 0, "failed": 2}
    # the scene after the corrupt one ran: order kept, batch went on
    assert [s["id"] for s in rep["scenes"]].index("corrupt") == 2
    assert "PARTIAL" in campaign["out"] and "finished with failures" in campaign["err"]
    assert "scenes" in campaign["err"]  # the progress display over scenes


def test_reports_and_log(campaign: dict) -> None:
    work = campaign["work"]
    md = (work / "batch_report.md").read_text()
    assert "| corrupt | - | failed |" in md and "| olinda | - | done |" in md
    assert "class_0 area" in md and " km² |" in md
    log = Path(_report(work)["log_file"])
    assert log.parent == work / "logs"
    text = log.read_text()
    assert "scene corrupt failed" in text and "Traceback" in text and "scene olinda: done" in text


def test_merged_polygons_carry_scene_and_class(campaign: dict) -> None:
    rep = _report(campaign["work"])
    merged = Path(rep["merged_vectors"])
    assert merged.name == "campaign_polygons.gpkg"
    gdf = gpd.read_file(merged, layer=merged.stem)
    assert {"scene_id", "class_id", "class_name", "area_m2"} <= set(gdf.columns)
    assert set(gdf.scene_id) == set(campaign["good"])
    assert gdf.crs.to_epsg() == 4326  # scenes in several CRSs: merged in WGS84
    per_scene = 0
    for s in rep["scenes"]:
        if s["status"] == "done":
            path = Path(s["outputs"]["vectors"])
            per_scene += len(gpd.read_file(path, layer=path.stem))
    assert len(gdf) == per_scene


def test_adjacent_scenes_are_mosaicked(campaign: dict) -> None:
    from rio_cogeo.cogeo import cog_validate

    rep = _report(campaign["work"])
    assert len(rep["mosaics"]) == 1  # only the two halves share a CRS and touch
    mosaic = Path(rep["mosaics"][0])
    valid, errors, _ = cog_validate(str(mosaic))
    assert valid, errors
    out = {s["id"]: s["outputs"]["classes"] for s in rep["scenes"] if s["status"] == "done"}
    with rasterio.open(out["rgb-west"]) as w, rasterio.open(out["rgb-east"]) as e, \
            rasterio.open(mosaic) as m:  # fmt: skip
        assert (m.width, m.height) == (791, 718) and m.crs == w.crs and m.nodata == 255
        assert np.array_equal(m.read(1), np.concatenate([w.read(1), e.read(1)], axis=1))
        assert m.colormap(1)[1] == w.colormap(1)[1]  # colour table kept
        assert m.overviews(1)


def test_rerun_skips_finished_scenes_and_retries_failed(campaign: dict) -> None:
    d, work = campaign["dir"], campaign["work"]
    mtime = (work / "rgb-west" / "rgb-west_classes.tif").stat().st_mtime_ns
    code, _, _ = invoke("run", d / "pipe.yaml", "--no-progress")
    assert code == 1
    status = {s["id"]: s["status"] for s in _report(work)["scenes"]}
    assert all(status[s] == "skipped" for s in campaign["good"])
    assert status["corrupt"] == "failed"
    assert (work / "rgb-west" / "rgb-west_classes.tif").stat().st_mtime_ns == mtime
    # the corrupt file is replaced by a good copy: only that scene is computed
    (d / "corrupt.tif").write_bytes(campaign["full"].read_bytes())
    code, _, _ = invoke("run", d / "pipe.yaml", "--no-progress")
    status = {s["id"]: s["status"] for s in _report(work)["scenes"]}
    assert status["corrupt"] == "done" and status["no-image"] == "failed" and code == 1
    assert all(status[s] == "skipped" for s in campaign["good"])
    # without the scene lacking its modality, the batch succeeds: exit code 0
    (d / "ok.yaml").write_text((d / "pipe.yaml").read_text() + "    split: null\n    scenes: ["
                               + ", ".join(campaign["good"]) + "]\n")  # fmt: skip
    code, out, _ = invoke("run", d / "ok.yaml", "--no-progress")
    assert code == 0 and "0 failed" in out


def test_scene_inputs_match_band_roles() -> None:
    cat = load_catalog(Path(__file__).resolve().parents[2] / "catalogs" / "vendored.yaml",
                       allow_outside=True)  # its data lies in ../tests/data
    card = ModelCard(architecture="tinycnn", classes=default_classes(2), modalities={
        "image": ModalityCard(bands=["blue", "green", "red"], mean=[0] * 3, std=[1] * 3)})
    image, extra, opts = scene_inputs(cat.scene("olinda"), card, PredictOptions())
    assert image.endswith("L7_ETMs.tif") and extra == {}
    assert opts.bands == [1, 2, 3]  # the file's blue, green, red (catalog roles of 3,2,1)
    _, _, opts = scene_inputs(cat.scene("olinda"), card, PredictOptions(bands=[4, 3, 2]))
    assert opts.bands == [4, 3, 2]  # explicit options win
    two = card.model_copy(update={"modalities": {**card.modalities, "dem": ModalityCard(
        bands=["elevation"], mean=[0], std=[1])}})  # fmt: skip
    _, extra, opts = scene_inputs(cat.scene("olinda"), two, PredictOptions())
    assert list(extra) == ["dem"] and "dem" not in opts.modality_bands
