"""Ground areas of polygons (geoseg.geometry.area) in projected, geographic and Web Mercator
CRSs, multipolygons, and no CRS."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS

from geoseg.geometry.area import ground_area
from geoseg.geometry.grid import GridBox
from geoseg.outputs.polygonize import polygonize
from tests.outputs.vector_support import CLASSES, geodesic_areas, reader


def test_ground_areas_in_a_projected_crs(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=64)
    ref = geodesic_areas(gdf, step=2.0)
    np.testing.assert_allclose(gdf.area_m2, ref, rtol=1e-3)
    # UTM is not equal-area: ground areas differ from planar ones by the scale factor (~1e-4)
    assert not np.allclose(gdf.area_m2, gdf.area, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        # geographic, around latitude 60: 0.001° x 0.0005° pixels (~56 m square)
        ("EPSG:4326", Affine(0.001, 0, 10.0, 0, -0.0005, 60.1)),
        # Web Mercator at latitude 60: planar areas are ~4x the ground areas there
        ("EPSG:3857", Affine(100.0, 0, 1_113_195.0, 0, -100.0, 8_399_737.0)),
    ],
)
def test_ground_areas_in_geographic_and_web_mercator_crs(
    hag: tuple[np.ndarray, GridBox], crs: str, transform: Affine
) -> None:
    classes, _ = hag
    grid = GridBox(*classes.shape, transform, CRS.from_user_input(crs))
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=100)
    ref = geodesic_areas(gdf, step=abs(transform.a) / 2)
    np.testing.assert_allclose(gdf.area_m2, ref, rtol=1e-3)
    ratio = gdf.area_m2.sum() / shapely.area(gdf.geometry.values).sum()  # planar, CRS units
    if crs == "EPSG:3857":
        assert ratio == pytest.approx(np.cos(np.radians(60)) ** 2, rel=0.02)
    else:  # square degrees -> m²: ~111 km x 55.7 km per degree² at latitude 60
        assert ratio == pytest.approx(111_400 * 55_800, rel=0.01)


def test_multipolygon_area_counts_every_part_and_hole(hag: tuple[np.ndarray, GridBox]) -> None:
    _, grid = hag
    x, y = grid.transform * (10, 10)
    a = shapely.box(x, y - 100, x + 100, y)
    holed = a.difference(shapely.box(x + 20, y - 80, x + 40, y - 60))
    b = shapely.box(x + 300, y - 400, x + 350, y - 350)
    single = ground_area(np.array([holed, b]), grid)
    multi = ground_area(np.array([shapely.MultiPolygon([holed, b])]), grid)
    assert multi[0] == pytest.approx(single.sum(), rel=1e-9)
    assert single[0] == pytest.approx(9600, rel=2e-3)  # UTM scale factor near its centre


def test_without_crs_areas_are_unknown(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    bare = GridBox(grid.height, grid.width, grid.transform, None)
    gdf = polygonize(reader(classes), bare, CLASSES, chunk=128, min_area=100.0)
    assert gdf.crs is None and len(gdf) and gdf.area_m2.isna().all()  # nothing dropped either
