"""Fixtures of the vector tests: two real class rasters (and a south-up variant) and the
polygons of one, computed once for the package."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.geometry.grid import GridBox
from geoseg.outputs.polygonize import polygonize
from tests.outputs.vector_support import CLASSES, reader
from tests.support import DATA, RGB


@pytest.fixture(scope="package")
def rgb() -> tuple[np.ndarray, GridBox]:
    """RGB.byte.tif: four classes from thresholds of band 1; 255 on its 32 % nodata collar."""
    with rasterio.open(RGB) as ds:
        data, grid = ds.read(), GridBox.from_dataset(ds)
    out = np.digitize(data[0], [60, 90, 120]).astype(np.uint8)
    out[(data == 0).all(axis=0)] = 255
    return out, grid


@pytest.fixture(scope="package")
def hag() -> tuple[np.ndarray, GridBox]:
    """Alexandria nDSM (2 m): height classes < 1 m, 1-3 m, 3-10 m, > 10 m."""
    with rasterio.open(DATA / "alexandria" / "hag.tif") as ds:
        heights, grid = ds.read(1), GridBox.from_dataset(ds)
    return np.digitize(heights, [1.0, 3.0, 10.0]).astype(np.uint8), grid


@pytest.fixture(scope="package")
def rgb_polygons(rgb: tuple[np.ndarray, GridBox]) -> gpd.GeoDataFrame:
    classes, grid = rgb
    return polygonize(reader(classes), grid, CLASSES, chunk=100)


@pytest.fixture(scope="package")
def hag_south_up(hag: tuple[np.ndarray, GridBox]) -> tuple[np.ndarray, GridBox]:
    """The same classes on a south-up grid (positive determinant: ring orientation flips)."""
    classes, grid = hag
    t = grid.transform
    return classes, GridBox(*classes.shape, Affine(t.a, 0, t.c, 0, -t.e, t.f), grid.crs)
