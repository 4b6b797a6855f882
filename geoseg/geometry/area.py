"""Ground areas of pixels, right in projected, Web Mercator and geographic CRSs alike."""

from __future__ import annotations

import numpy as np
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer

from geoseg.geometry.grid import GridBox

_GEOD = Geod(ellps="WGS84")


def row_pixel_areas(grid: GridBox, col: int | None = None) -> np.ndarray:
    """Geodesic ground area (m²) of one pixel in every row of ``grid`` (at column ``col``).

    Pixel area varies along rows in geographic and Web Mercator grids; along a row it is
    constant for those and nearly so for local projections, so one column suffices.
    """
    col = grid.width // 2 if col is None else col
    rows = np.arange(grid.height + 1, dtype=np.float64)
    t = grid.transform
    # corners of pixel (row, col): x at col and col+1, y along the row edges
    xs = np.stack([t.c + t.a * col + t.b * rows, t.c + t.a * (col + 1) + t.b * rows])
    ys = np.stack([t.f + t.d * col + t.e * rows, t.f + t.d * (col + 1) + t.e * rows])
    crs = ProjCRS.from_user_input(grid.crs.to_wkt())
    if not crs.is_geographic:
        tr = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        xs, ys = tr.transform(xs, ys)
    areas = np.empty(grid.height)
    for r in range(grid.height):
        lons = [xs[0, r], xs[1, r], xs[1, r + 1], xs[0, r + 1]]
        lats = [ys[0, r], ys[1, r], ys[1, r + 1], ys[0, r + 1]]
        areas[r] = abs(_GEOD.polygon_area_perimeter(lons, lats)[0])
    return areas
