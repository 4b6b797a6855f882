"""Helpers of the vector tests: the class table, a block reader over an array, layer checks."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from rasterio.features import rasterize

from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo

CLASSES = [
    ClassInfo(id=0, name="ground", color="#a0a0a0"),
    ClassInfo(id=1, name="low vegetation", color="#90ee90"),
    ClassInfo(id=2, name="trees", color="#228b22"),
    ClassInfo(id=3, name="tall", color="#ff0000"),
]
COLUMNS = ["class_id", "class_name", "area_m2", "geometry"]


def reader(arr: np.ndarray, nodata: int = 255):
    def read(window: PixelWindow) -> np.ndarray | None:
        win = arr[window.slices]
        return None if (win == nodata).all() else win

    return read


def rasterised(gdf: gpd.GeoDataFrame, grid: GridBox) -> np.ndarray:
    return rasterize(
        zip(gdf.geometry, gdf.class_id, strict=True),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=255,
        dtype="uint8",
    )


def read_layer(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)


def assert_same_polygons(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    """Same rows in any order, geometries equal up to ring orientation and start vertex."""
    assert list(got.columns) == COLUMNS and got.crs == want.crs and len(got) == len(want)

    def rows(gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, np.ndarray]:
        wkb = shapely.to_wkb(shapely.normalize(gdf.geometry.values))
        order = sorted(range(len(gdf)), key=lambda i: (int(gdf.class_id.iat[i]), wkb[i]))
        return gdf.iloc[order].reset_index(drop=True), wkb[order]

    (got, got_wkb), (want, want_wkb) = rows(got), rows(want)
    assert (got_wkb == want_wkb).all()  # vertex for vertex
    np.testing.assert_array_equal(got.class_id, want.class_id)
    assert (got.class_name == want.class_name).all()
    np.testing.assert_allclose(got.area_m2, want.area_m2, rtol=1e-12)  # .dbf: decimal text


def assert_ogc_orientation(geoms: np.ndarray) -> None:
    """Exterior rings counter-clockwise, holes clockwise (OGC, GeoJSON)."""
    rings, owner = shapely.get_rings(geoms, return_index=True)
    exterior = np.r_[True, owner[1:] != owner[:-1]]
    assert shapely.is_ccw(rings[exterior]).all()
    assert not shapely.is_ccw(rings[~exterior]).any()


def assert_valid_coverage(geoms: np.ndarray) -> None:
    """Valid polygons in OGC orientation whose neighbours (pieces merged across chunk lines
    included) do not overlap and share exactly the same edges."""
    assert shapely.is_valid(geoms).all()
    assert_ogc_orientation(geoms)
    assert shapely.coverage_is_valid(geoms)
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = i < j
    assert shapely.area(shapely.intersection(geoms[i[pairs]], geoms[j[pairs]])).max() < 1e-6


def in_raster_order(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    x0, y0, _, y1 = shapely.bounds(gdf.geometry.values).T
    return gdf.iloc[np.lexsort((gdf.area_m2, x0, -y1, -y0))].reset_index(drop=True)


def geodesic_areas(gdf: gpd.GeoDataFrame, step: float) -> np.ndarray:
    """Reference areas: densify (CRS units), go to lon/lat, geodesic area on the ellipsoid."""
    geod = CRS(gdf.crs).get_geod()
    dense = gdf.geometry.segmentize(step).to_crs(CRS(gdf.crs).geodetic_crs)
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in dense])
