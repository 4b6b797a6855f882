"""Streamed vectorisation (geoseg.outputs.stream.polygonize_to_file): same polygons as
polygonize, gap-free simplification, empty scenes and no CRS, atomic files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.outputs.polygonize import polygonize
from geoseg.outputs.stream import polygonize_to_file
from geoseg.outputs.write import FORMATS
from tests.outputs.vector_support import (
    CLASSES,
    COLUMNS,
    assert_ogc_orientation,
    assert_same_polygons,
    assert_valid_coverage,
    read_layer,
    reader,
)


@pytest.mark.parametrize(
    ("chunk", "ext", "min_area"),
    [(64, ".gpkg", 0.0), (100, ".parquet", 0.0), (257, ".fgb", 0.0), (100, ".shp", 3 * 300.0**2)],
)
def test_streamed_file_holds_the_polygons_of_polygonize(
    chunk: int, ext: str, min_area: float, rgb: tuple[np.ndarray, GridBox],
    rgb_polygons: gpd.GeoDataFrame, tmp_path: Path,
) -> None:  # fmt: skip
    classes, grid = rgb
    want = rgb_polygons[rgb_polygons.area_m2 >= min_area].reset_index(drop=True)
    path = tmp_path / f"polygons{ext}"
    out = polygonize_to_file(
        reader(classes), grid, CLASSES, path, chunk=chunk, min_area=min_area, layer="polygons"
    )
    got = read_layer(path)
    assert_same_polygons(got, want)
    if ext == ".gpkg":
        assert pyogrio.list_layers(path)[:, 0].tolist() == ["polygons"]
        assert (got.geom_type == "Polygon").all() and got.is_valid.all()
        assert_ogc_orientation(got.geometry.values)
    if ext == ".shp":
        assert {p.suffix for p in out["files"]} == {".shp", ".shx", ".dbf", ".prj", ".cpg"}
    else:
        assert out["files"] == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in out["files"])
    by_class = want.groupby("class_id").area_m2
    assert out["polygons"] == len(want)
    assert out["polygons_per_class"] == by_class.size().to_dict()
    assert out["area_m2_per_class"] == pytest.approx(by_class.sum().to_dict(), rel=1e-12)


@pytest.mark.parametrize("chunk", [64, 100])
def test_streamed_simplification_keeps_a_gapless_coverage(
    chunk: int, hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    classes = classes.copy()
    rows, cols = np.ogrid[: grid.height, : grid.width]
    hole = (rows - 150) ** 2 + (cols - 120) ** 2 < 30**2  # nodata across chunk lines
    classes[hole] = 255
    tol = 4.0  # two pixels
    raw = polygonize(reader(classes), grid, CLASSES, chunk=chunk)
    path = tmp_path / "simple.parquet"
    out = polygonize_to_file(reader(classes), grid, CLASSES, path, chunk=chunk, simplify=tol)
    simple = gpd.read_parquet(path)
    assert out["polygons"] == len(simple) == len(raw)
    n_raw = shapely.get_num_coordinates(raw.geometry.values).sum()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.65 * n_raw
    geoms = simple.geometry.values
    assert (simple.geom_type == "Polygon").all()
    assert_valid_coverage(geoms)
    # no gap opened: the union is one polygon whose only hole is the nodata disc
    union = shapely.union_all(geoms)
    assert union.geom_type == "Polygon" and len(union.interiors) == 1
    px = abs(grid.transform.determinant)
    assert union.area == pytest.approx((~hole).sum() * px, rel=2e-3)
    np.testing.assert_allclose(simple.area_m2.sum(), raw.area_m2.sum(), rtol=2e-3)
    # same polygons as the unsimplified ones: each simplified polygon covers most of its own
    raw_geoms = raw.geometry.values
    k, m = shapely.STRtree(raw_geoms).query(geoms, predicate="intersects")
    share = shapely.area(shapely.intersection(geoms[k], raw_geoms[m])) / shapely.area(geoms[k])
    best = np.zeros(len(geoms))
    np.maximum.at(best, k, share)
    assert np.median(best) > 0.9


def test_streamed_empty_scene_and_no_crs(hag: tuple[np.ndarray, GridBox], tmp_path: Path) -> None:
    classes, grid = hag
    for ext in FORMATS:
        path = tmp_path / f"empty{ext}"
        out = polygonize_to_file(lambda *w: None, grid, CLASSES, path)
        assert out["polygons"] == 0 and out["area_m2_per_class"] == {}
        back = read_layer(path)
        assert len(back) == 0 and list(back.columns) == COLUMNS and back.crs == grid.crs
    bare = GridBox(grid.height, grid.width, grid.transform, None)
    for ext in (".gpkg", ".parquet"):
        path = tmp_path / f"bare{ext}"
        out = polygonize_to_file(reader(classes), bare, CLASSES, path, chunk=128, min_area=100.0)
        back = read_layer(path)
        assert back.crs is None and len(back) == out["polygons"] > 0
        assert back.area_m2.isna().all()  # unknown, and nothing dropped by min_area


def test_streamed_errors_leave_nothing_behind(
    hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    calls = []

    def failing(window: PixelWindow) -> np.ndarray:
        calls.append(window.r0)
        if len(calls) == 5:  # after some polygons were written
            raise ValueError("tile 5 is corrupt")
        return classes[window.slices]

    with pytest.raises(OutputError, match="unknown vector format"):
        polygonize_to_file(failing, grid, CLASSES, tmp_path / "x.geojson")
    with pytest.raises(OutputError, match="does not exist"):
        polygonize_to_file(failing, grid, CLASSES, tmp_path / "missing" / "x.gpkg")
    assert not calls  # checked before any work
    polygonize_to_file(reader(classes), grid, CLASSES, tmp_path / "kept.gpkg", chunk=128)
    before = (tmp_path / "kept.gpkg").read_bytes()
    for name in ("kept.gpkg", "y.shp", "y.parquet", "y.fgb"):
        calls.clear()
        # the reader's own error, not an unwritable output
        with pytest.raises(ValueError, match="tile 5 is corrupt"):
            polygonize_to_file(failing, grid, CLASSES, tmp_path / name, chunk=64)
    assert (tmp_path / "kept.gpkg").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.gpkg"]
