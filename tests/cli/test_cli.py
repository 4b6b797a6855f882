"""`geoseg predict` end to end through the CLI: outputs, georeferencing, bad input."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from rio_cogeo.cogeo import cog_validate

from geoseg.bundle.untrained import init_bundle
from tests.support import DATA, RGB, invoke, run_cli, shared
from tests.support import write_geotiff as write


@pytest.fixture(scope="module")
def rgb_run(unet_rgb: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rgb")
    run_cli("predict", RGB, "--model", unet_rgb, "--out", out / "res", "--chunk", "300",
            "--probabilities", "--tiles-dir", out / "tiles", "--no-progress")  # fmt: skip
    return out / "res", json.loads((out / "res" / "RGB.byte_report.json").read_text())


def test_outputs_keep_the_grid_and_are_valid_cogs(rgb_run: tuple[Path, dict]) -> None:
    res, report = rgb_run
    with rasterio.open(RGB) as src:
        for name in ("classes", "confidence", "probabilities"):
            path = res / f"RGB.byte_{name}.tif"
            assert cog_validate(path)[0], path
            with rasterio.open(path) as ds:
                assert ds.crs == src.crs and ds.transform == src.transform
                assert ds.shape == src.shape and ds.nodata == 255
                assert ds.overviews(1), "overviews present"
        with rasterio.open(res / "RGB.byte_classes.tif") as ds:
            cmap = ds.colormap(1)
            assert cmap[0][:3] != cmap[1][:3]
            assert ds.tags(1) or True
    assert report["overlap_factor"] > 1 and report["chunks"]["computed"] == 9


def test_nodata_collar_in_every_output_and_no_polygons_over_it(rgb_run: tuple[Path, dict]) -> None:
    res, _ = rgb_run
    with rasterio.open(RGB) as src:
        invalid = src.dataset_mask() == 0
    for name in ("classes", "confidence", "probabilities"):
        with rasterio.open(res / f"RGB.byte_{name}.tif") as ds:
            data = ds.read()
        assert (data[:, invalid] == 255).all() and (data[:, ~invalid] != 255).all()
    gdf = gpd.read_file(res / "RGB.byte_polygons.gpkg", layer="RGB.byte_polygons")
    with rasterio.open(RGB) as src:
        burned = rasterize(((g, 1) for g in gdf.geometry), out_shape=src.shape,
                           transform=src.transform, fill=0, dtype="uint8")  # fmt: skip
    assert not burned[invalid].any()


def test_vectors_rasterised_back_match_the_class_raster(rgb_run: tuple[Path, dict]) -> None:
    res, report = rgb_run
    gdf = gpd.read_file(res / "RGB.byte_polygons.gpkg", layer="RGB.byte_polygons")
    assert {"class_id", "class_name", "area_m2"} <= set(gdf.columns)
    with rasterio.open(res / "RGB.byte_classes.tif") as ds:
        classes = ds.read(1)
        burned = rasterize(zip(gdf.geometry, gdf.class_id, strict=True), out_shape=ds.shape,
                           transform=ds.transform, fill=255, dtype="uint8")  # fmt: skip
    assert (burned == classes).mean() > 0.999
    # areas in the report (pixels x geodesic pixel area) agree with the polygons' areas
    for name, entry in report["classes"].items():
        poly_area = gdf.loc[gdf.class_id == entry["id"], "area_m2"].sum()
        assert poly_area == pytest.approx(entry["area_m2"], rel=2e-3), name


def test_geographic_crs_gives_correct_areas(unet_rgb: Path, tmp_path: Path) -> None:
    src = shared("opengeos_data/landsat/2020.tif")  # EPSG:4326, 697x377
    bundle = init_bundle("unet", {"image": 3}, 4, seed=0, tile=256, stats_from=src,
                         output=tmp_path / "b")  # fmt: skip
    run_cli("predict", src, "--model", bundle, "--bands", "1,2,3", "--out", tmp_path / "o",
            "--tiles-dir", tmp_path / "t", "--no-progress")  # fmt: skip
    report = json.loads((tmp_path / "o" / "2020_report.json").read_text())
    total = sum(c["area_m2"] for c in report["classes"].values())
    from pyproj import Geod

    with rasterio.open(src) as ds:
        valid = ds.dataset_mask() > 0
        left, bottom, right, top = ds.bounds
        full = abs(Geod(ellps="WGS84").polygon_area_perimeter(
            [left, right, right, left], [bottom, bottom, top, top])[0])  # fmt: skip
    assert total == pytest.approx(full * valid.mean(), rel=5e-3)
    gdf = gpd.read_file(tmp_path / "o" / "2020_polygons.gpkg", layer="2020_polygons")
    assert gdf.area_m2.sum() == pytest.approx(total, rel=5e-3)


def test_scene_smaller_than_one_tile_works(unet_rgb: Path, tmp_path: Path) -> None:
    with rasterio.open(RGB) as ds:
        data = ds.read(window=((300, 340), (300, 333)))
        profile = ds.profile | {"height": 40, "width": 33,
                                "transform": ds.window_transform(((300, 340), (300, 333)))}
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", **profile) as ds:
        ds.write(data)
    run_cli("predict", small, "--model", unet_rgb, "--out", tmp_path / "o", "--tiles-dir",
            tmp_path / "t", "--no-progress")  # fmt: skip
    with rasterio.open(tmp_path / "o" / "small_classes.tif") as ds:
        assert ds.shape == (40, 33) and (ds.read(1) != 255).all()


def expect_error(tmp_path: Path, *args: object, match: str) -> None:
    out = tmp_path / "out"
    # in-process: the same command and error translation as ``geoseg`` (an unexpected
    # exception propagates and fails the test); one subprocess test proves the exit code
    code, _, err = invoke("predict", *args, "--out", out, "--tiles-dir", tmp_path / "t",
                          "--no-progress")  # fmt: skip
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert match in last, last
    leftovers = [p for p in out.rglob("*")] if out.exists() else []
    assert not leftovers, f"half-written outputs: {leftovers}"


def test_bad_inputs_give_one_clear_line_and_exit_2(unet_rgb: Path, tmp_path: Path) -> None:
    expect_error(tmp_path, tmp_path / "missing.tif", "--model", unet_rgb, match="missing.tif: file not found")
    junk = tmp_path / "junk.tif"
    junk.write_text("hello")
    expect_error(tmp_path, junk, "--model", unet_rgb, match="junk.tif: not a readable raster")
    nocrs = write(tmp_path / "nocrs.tif", np.ones((3, 20, 20), "uint8"), crs=None)
    expect_error(tmp_path, nocrs, "--model", unet_rgb, match="nocrs.tif: raster has no CRS")
    four = DATA / "olinda" / "L7_ETMs.tif"
    expect_error(tmp_path, four, "--model", unet_rgb, match="has 6 band(s) but the model expects 3")
    empty = write(tmp_path / "empty.tif", np.zeros((3, 50, 50), "uint8"), nodata=0)
    expect_error(tmp_path, empty, "--model", unet_rgb, match="empty.tif: the scene has no valid pixel")
    assert not list((tmp_path / "t").glob("empty-*")), "no tile store left behind"


def test_bad_bundles_and_output_dirs(unet_rgb: Path, tmp_path: Path) -> None:
    pk = tmp_path / "model.pth"
    pk.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    expect_error(tmp_path, RGB, "--model", pk, match="pickled PyTorch checkpoint")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "card.json").write_text((unet_rgb / "card.json").read_text())
    (corrupt / "weights.safetensors").write_bytes(b"\x00" * 100)
    expect_error(tmp_path, RGB, "--model", corrupt, match="corrupt weights")
    (corrupt / "card.json").write_text("{not json")
    expect_error(tmp_path, RGB, "--model", corrupt, match="card.json: corrupt card")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli("predict", RGB, "--model", unet_rgb, "--out", blocker / "o", check=False)
    assert proc.returncode == 2 and "not writable" in proc.stderr.splitlines()[-1]
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        proc = run_cli("predict", RGB, "--model", unet_rgb, "--out", ro / "o", check=False)
        assert proc.returncode == 2 and "not writable" in proc.stderr.splitlines()[-1]
    finally:
        ro.chmod(0o700)


def test_modalities_that_do_not_overlap(tmp_path: Path) -> None:
    bundle = init_bundle("unet", {"image": 3, "dem": 1}, 2, output=tmp_path / "b", tile=128)
    expect_error(tmp_path, RGB, "--modality", f"dem={DATA / 'olinda' / 'olinda_dem_utm25s.tif'}",
                 "--model", bundle, match="does not overlap")  # fmt: skip
    expect_error(tmp_path, RGB, "--model", bundle, match="needs modalities ['dem']")


def test_info_and_model_commands(unet_rgb: Path, tmp_path: Path) -> None:
    # in-process: these commands prove their output, not process start-up (see test_options)
    assert "unet" in invoke("model", "list")[1]
    info = json.loads(invoke("info", RGB, "--json")[1])
    assert info["count"] == 3 and info["crs"] == "EPSG:32618"
    card = json.loads(invoke("info", unet_rgb, "--json")[1])
    assert card["architecture"] == "unet" and card["trained"] is False
    assert invoke("model", "init", "deeplabv3plus", "--bands", "5", "--classes", "3", "--seed", "7",
                  "-o", tmp_path / "d")[0] == 0  # fmt: skip
    assert json.loads((tmp_path / "d" / "card.json").read_text())["modalities"]["image"]["bands"]
    proc = run_cli("model", "init", "nosuch", "--bands", "3", "--classes", "2", "-o",
                   tmp_path / "x", check=False)  # fmt: skip
    assert proc.returncode == 2 and "unknown architecture 'nosuch'" in proc.stderr
