"""Vectorisation (geoseg.outputs.polygonize, with the border merging of geoseg.outputs.merge):
exact georeferencing, chunk-size independence, nodata, bounded coordinate passes, min_area,
coverage simplification."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.geometry import area
from geoseg.geometry.grid import GridBox
from geoseg.outputs.polygonize import polygonize
from tests.outputs.vector_support import (
    CLASSES,
    COLUMNS,
    assert_ogc_orientation,
    assert_valid_coverage,
    rasterised,
    reader,
)


@pytest.mark.parametrize("name", ["rgb", "hag", "hag_south_up"])
def test_polygons_rasterised_back_reproduce_the_class_raster(
    name: str, request: pytest.FixtureRequest
) -> None:
    classes, grid = request.getfixturevalue(name)
    if name == "rgb":
        gdf = request.getfixturevalue("rgb_polygons")
    else:
        gdf = polygonize(reader(classes), grid, CLASSES, chunk=100)
    assert list(gdf.columns) == COLUMNS and gdf.crs == grid.crs
    assert gdf.class_id.dtype == np.int32 and gdf.area_m2.dtype == np.float64
    assert (gdf.geom_type == "Polygon").all() and gdf.is_valid.all()
    assert_ogc_orientation(gdf.geometry.values)
    np.testing.assert_array_equal(rasterised(gdf, grid), classes)
    names = {c.id: c.name for c in CLASSES}
    assert (gdf.class_name == gdf.class_id.map(names)).all()


def test_polygon_set_does_not_depend_on_the_chunk_size(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    whole = polygonize(reader(classes), grid, CLASSES, chunk=max(grid.shape))
    assert len(whole) > 10_000  # a realistic, fragmented layer
    for chunk in (64, 100, 257):
        got = (
            rgb_polygons
            if chunk == 100
            else polygonize(reader(classes), grid, CLASSES, chunk=chunk)
        )
        assert len(got) == len(whole)
        np.testing.assert_array_equal(got.class_id, whole.class_id)
        np.testing.assert_array_equal(got.area_m2, whole.area_m2)
        # vertex-for-vertex identical: no leftover vertex where a chunk line was crossed
        assert shapely.equals_exact(got.geometry.values, whole.geometry.values, tolerance=0).all()


def test_no_polygon_over_nodata(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    gdf = rgb_polygons
    nodata = classes == 255
    assert nodata.mean() > 0.3
    assert (
        rasterize(gdf.geometry, out_shape=grid.shape, transform=grid.transform)[nodata] == 0
    ).all()
    # polygons cover exactly the valid pixels: planar areas add up to their count
    px = abs(grid.transform.determinant)
    assert gdf.area.sum() == pytest.approx((~nodata).sum() * px, rel=1e-9)


def test_results_do_not_depend_on_the_coordinate_passes(
    hag: tuple[np.ndarray, GridBox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Affine and area passes go over a bounded number of points at a time (huge polygons):
    splitting them finely changes nothing, ring reversal (south-up grids) included."""
    classes, grid = hag
    flipped = GridBox(*classes.shape, grid.transform * Affine.scale(1, -1), grid.crs)
    ref = [polygonize(reader(classes), g, CLASSES, chunk=64) for g in (grid, flipped)]
    monkeypatch.setattr(area, "_POINTS_PER_PASS", 7)
    for g, r in zip((grid, flipped), ref, strict=True):
        gdf = polygonize(reader(classes), g, CLASSES, chunk=64)
        assert shapely.equals_exact(gdf.geometry.values, r.geometry.values, 0).all()
        np.testing.assert_allclose(gdf.area_m2, r.area_m2, rtol=1e-12)


def test_min_area_drops_small_polygons(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    full = rgb_polygons
    limit = 5 * 300.0 * 300.0  # five 300 m pixels
    big = polygonize(reader(classes), grid, CLASSES, chunk=256, min_area=limit)
    assert 0 < len(big) < len(full) / 2
    assert (big.area_m2 >= limit).all()
    kept = full[full.area_m2 >= limit].reset_index(drop=True)
    assert shapely.equals_exact(big.geometry.values, kept.geometry.values, tolerance=0).all()


def test_simplification_keeps_a_gapless_coverage(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    tol = 4.0  # two pixels
    raw = polygonize(reader(classes), grid, CLASSES, chunk=100)
    simple = polygonize(reader(classes), grid, CLASSES, chunk=100, simplify=tol)
    assert len(simple) == len(raw)
    n_raw = shapely.get_num_coordinates(raw.geometry.values).sum()
    n_simple = shapely.get_num_coordinates(simple.geometry.values).sum()
    assert n_simple < 0.6 * n_raw
    geoms = simple.geometry.values
    assert_valid_coverage(geoms)
    # no gap opened between neighbours: the union is one polygon without holes, and (the
    # scene has no nodata) covers the scene up to the simplified outer boundary
    union = shapely.union_all(geoms)
    assert union.geom_type == "Polygon" and not union.interiors
    scene = grid.width * grid.height * abs(grid.transform.determinant)
    assert union.area == pytest.approx(scene, rel=2e-3)
    np.testing.assert_allclose(simple.area_m2.sum(), raw.area_m2.sum(), rtol=2e-3)
