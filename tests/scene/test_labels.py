"""Labels on the scene grid: vector rasterisation equals GDAL's, raster mapping, bad input."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from geoseg.catalog.spec import LabelSpec
from geoseg.config import IGNORE
from geoseg.errors import InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo
from geoseg.scene.labels import LabelSource, VectorLabels, open_labels
from tests.support import DATA, shared

ALEX = DATA / "alexandria"
BUILDINGS = [ClassInfo(id=0, name="background"), ClassInfo(id=1, name="building")]


def _whole_grid(grid: GridBox) -> PixelWindow:
    return PixelWindow(0, grid.height, 0, grid.width)


def _grid(path: Path) -> GridBox:
    with rasterio.open(path) as ds:
        return GridBox.from_dataset(ds)


def _tiled(src: LabelSource, grid: GridBox, chunk: int) -> np.ndarray:
    out = np.empty(grid.shape, np.uint8)
    for window in grid.chunks(chunk):
        out[window.slices] = src.read(window)
    return out


@pytest.mark.parametrize("all_touched", [False, True])
def test_vector_windows_equal_gdal_rasterisation(all_touched: bool) -> None:
    grid = _grid(ALEX / "hag.tif")
    spec = LabelSpec(path=str(ALEX / "buildings.geojson"), class_value=1)
    src = open_labels(spec, grid, BUILDINGS, VectorLabels(background=0,
                                                          all_touched=all_touched))
    # GDAL's rasteriser on the whole grid, polygons reprojected by geopandas (EPSG:4326 → UTM)
    gdf = gpd.read_file(ALEX / "buildings.geojson").to_crs(grid.crs)
    ref = rasterize([(g, 1) for g in gdf.geometry], out_shape=grid.shape,
                    transform=grid.transform, fill=0, all_touched=all_touched, dtype="uint8")
    for chunk in (37, 100, 512):
        assert np.array_equal(_tiled(src, grid, chunk), ref)
    assert 0.05 < (ref == 1).mean() < 0.2


def test_unlabelled_is_ignored_not_background() -> None:
    grid = _grid(ALEX / "hag.tif")
    spec = LabelSpec(path=str(ALEX / "buildings.geojson"), class_value=1)
    plain = open_labels(spec, grid, BUILDINGS).read(_whole_grid(grid))
    assert set(np.unique(plain)) == {1, IGNORE}
    ext = open_labels(spec, grid, BUILDINGS, VectorLabels(background=0, extent="labels"))
    lab = ext.read(_whole_grid(grid))
    assert set(np.unique(lab)) == {0, 1, IGNORE}
    assert lab[0, 0] == IGNORE and lab[grid.height // 2, grid.width // 2] != IGNORE


def test_berlin_polygons_match_the_gdal_rasterised_labels() -> None:
    shp = shared("enmapbox_berlin/LandCov_Vec_Berlin_Urban_Gradient_2009_subset.shp")
    ref_tif = shared("enmapbox_berlin/hymap_berlin_landcover_level2_rasterized.tif")
    classes = [ClassInfo(id=i, name=f"c{i}") for i in range(1, 7)]
    grid = _grid(ref_tif)
    src = open_labels(LabelSpec(path=str(shp), class_field="Level_2_ID"), grid, classes)
    with rasterio.open(ref_tif) as ds:
        ref = ds.read(1)
    ours = _tiled(src, grid, 128)
    expect = np.where(ref == 0, IGNORE, ref - 1).astype(np.uint8)  # class id i -> index i-1
    assert np.array_equal(ours, expect)  # pixel for pixel


def test_raster_labels_map_ids_and_ignore(make_geotiff) -> None:
    grid = _grid(ALEX / "hag.tif")
    data = np.full(grid.shape, 7, np.uint8)  # 7 = unlabelled
    data[:50] = 3
    data[50:100] = 9
    path = make_geotiff("labels.tif", data[None], crs=grid.crs, transform=grid.transform)
    classes = [ClassInfo(id=9, name="nine"), ClassInfo(id=3, name="three")]
    lab = open_labels(LabelSpec(path=str(path), ignore=7), grid, classes)
    out = lab.read(_whole_grid(grid))
    assert (out[:50] == 1).all() and (out[50:100] == 0).all() and (out[100:] == IGNORE).all()
    with pytest.raises(InputError, match=r"label values \[7\] are not in the class table"):
        open_labels(LabelSpec(path=str(path)), grid, classes).read(PixelWindow(0, 200, 0, 10))


def test_bad_vector_labels(tmp_path: Path) -> None:
    grid = _grid(ALEX / "hag.tif")
    geojson = str(ALEX / "buildings.geojson")
    with pytest.raises(InputError, match=r"no attribute 'klass'.*fix class_field"):
        open_labels(LabelSpec(path=geojson, class_field="klass"), grid, BUILDINGS)
    with pytest.raises(InputError, match="class_value 5 is not in the class table"):
        open_labels(LabelSpec(path=geojson, class_value=5), grid, BUILDINGS)
    with pytest.raises(InputError, match=r"HEIGHT values \[.*\] are not in the class table"):
        open_labels(LabelSpec(path=geojson, class_field="HEIGHT"), grid, BUILDINGS)
    far = gpd.read_file(geojson).to_crs(grid.crs)
    far["geometry"] = far.geometry.translate(50_000, 0)
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="labels do not overlap the scene"):
        open_labels(LabelSpec(path=str(tmp_path / "far.gpkg"), class_value=1), grid, BUILDINGS)


def test_points_are_buffered(tmp_path: Path) -> None:
    grid = _grid(ALEX / "hag.tif")
    cx, cy = grid.transform * (100.5, 80.5)
    pts = gpd.GeoDataFrame({"cls": ["building", "background"]},
                           geometry=gpd.points_from_xy([cx, cx + 40], [cy, cy]), crs=grid.crs)
    pts.to_file(tmp_path / "pts.gpkg")
    spec = LabelSpec(path=str(tmp_path / "pts.gpkg"), class_field="cls")  # names work too
    single = open_labels(spec, grid, BUILDINGS).read(_whole_grid(grid))
    assert (single != IGNORE).sum() == 2 and single[80, 100] == 1
    disc = open_labels(spec, grid, BUILDINGS, VectorLabels(buffer=5.0))
    out = disc.read(_whole_grid(grid))
    assert (out == 1).sum() > 10 and (out == 0).sum() > 10


def test_raster_labels_on_another_grid_are_warped_by_nearest(make_geotiff) -> None:
    """A 4 m label raster (no nodata) read on the 2 m scene grid: nearest neighbour, and
    pixels beyond the label raster unlabelled."""
    from affine import Affine

    grid = _grid(ALEX / "hag.tif")
    gdf = gpd.read_file(ALEX / "buildings.geojson").to_crs(grid.crs)
    t = grid.transform
    coarse = Affine(4.0, 0, t.c + 40, 0, -4.0, t.f - 40)  # starts 20 px inside the scene
    shape = (100, 110)
    lab4 = rasterize([(g, 1) for g in gdf.geometry], out_shape=shape, transform=coarse,
                     fill=0, dtype="uint8")  # fmt: skip
    path = make_geotiff("labels4m.tif", lab4[None], crs=grid.crs, transform=coarse)
    src = open_labels(LabelSpec(path=str(path)), grid, BUILDINGS)
    out = src.read(_whole_grid(grid))
    assert (out[:20] == IGNORE).all() and (out[:, :20] == IGNORE).all()
    # every 2 m pixel takes the value of the 4 m cell containing its centre
    assert np.array_equal(out[20:220:2, 20:240:2], lab4)
    assert np.array_equal(out[21:221:2, 21:241:2], lab4)
