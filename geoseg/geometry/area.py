"""Ground areas, right in projected, Web Mercator and geographic CRSs alike.

Two questions have their answer here: the ground area of every pixel of a row
(:func:`row_pixel_areas`, for class statistics) and the ground area of polygons
(:func:`ground_area`, :func:`area_meter`, for vector layers). Polygon passes go over a bounded
number of coordinates at a time (:func:`batches`, :func:`ring_spans`, :func:`ragged_offsets`,
shared with ``geoseg.outputs``): one polygon of a noisy map can hold millions of points.
Imports numpy, shapely and pyproj only: never torch, xarray or dask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

from geoseg.geometry.grid import GridBox

log = logging.getLogger(__name__)

_GEOD = Geod(ellps="WGS84")
#: Ground length of the segments used for area computation: polygon edges are densified to
#: this before projection, so long straight edges (parallels in a geographic CRS, lines of a
#: Web Mercator grid) follow the source CRS rather than a chord in the equal-area projection.
_AREA_SEGMENT_M = 2000.0
#: Points per numpy pass over polygon coordinates (affine, areas): one polygon of a noisy map
#: can hold millions, and whole-array temporaries (~150 B per point for areas) made the peak.
_POINTS_PER_PASS = 1 << 18


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


# --------------------------------------------------------------------------------------------
# polygon areas


def ground_area(geoms: np.ndarray, grid: GridBox) -> np.ndarray:
    """Area on the ellipsoid (m²) of polygons in ``grid.crs``.

    Vertices are projected to a Lambert azimuthal equal-area projection centred on the grid
    (on the CRS's own datum) and areas summed with the shoelace formula, all in numpy. Long
    edges are first densified to ~2 km so that they follow the source CRS (a parallel in
    EPSG:4326, a straight line in Web Mercator) rather than a chord of the projection. Right
    for projected, geographic and Web Mercator grids alike; NaN without a CRS.
    """
    if not len(geoms):
        return np.empty(0, dtype=np.float64)
    return area_meter(grid)(geoms)


def area_meter(grid: GridBox) -> Callable[[np.ndarray], np.ndarray]:
    """``ground_area`` for ``grid``, with the projection set up once (a few ms): for many calls."""
    if grid.crs is None:
        log.warning("grid has no CRS: polygon areas on the ground are unknown (NaN)")
        return lambda geoms: np.full(len(geoms), np.nan)
    to_laea, px_ground = _equal_area(grid)
    # segment length in CRS units: ~_AREA_SEGMENT_M on the ground, between 1 and 64 pixels
    seg = abs(grid.transform.determinant) ** 0.5 * float(
        np.clip(_AREA_SEGMENT_M / px_ground, 1.0, 64.0)
    )

    def area(geoms: np.ndarray) -> np.ndarray:
        out = np.empty(len(geoms))
        for s in batches(len(geoms)):
            out[s] = _laea_area(geoms[s], to_laea, seg)
        return out

    return area


def _laea_area(geoms: np.ndarray, to_laea: Transformer, seg: float) -> np.ndarray:
    """Shoelace areas of polygons after densification (``seg``) and projection."""
    if (shapely.get_type_id(geoms) == shapely.GeometryType.POLYGON).all():
        _, xy, (ring_off, poly_off) = shapely.to_ragged_array(geoms)
        ring_poly = np.repeat(np.arange(len(geoms)), np.diff(poly_off))
        is_ext = np.r_[True, ring_poly[1:] != ring_poly[:-1]]  # exterior, then its holes
    else:  # multipolygons: not produced by polygonize, but accepted
        parts, part_geom = shapely.get_parts(geoms, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        ring_poly = part_geom[ring_part]
        is_ext = np.r_[True, ring_part[1:] != ring_part[:-1]]
        xy = shapely.get_coordinates(rings)
        ring_off = ragged_offsets(shapely.get_num_coordinates(rings))
    ring_area = np.empty(len(ring_poly))
    for r0, r1 in ring_spans(ring_off):  # ~150 B of temporaries per point: keep them small
        p0, p1 = ring_off[r0], ring_off[r1]
        ring_of = np.repeat(np.arange(r1 - r0), np.diff(ring_off[r0 : r1 + 1]))
        ring_area[r0:r1] = _ring_areas(xy[p0:p1], ring_of, r1 - r0, to_laea, seg)
    return np.bincount(ring_poly, np.where(is_ext, ring_area, -ring_area), minlength=len(geoms))


def _ring_areas(
    xy: np.ndarray, ring_of: np.ndarray, n_rings: int, to_laea: Transformer, seg: float
) -> np.ndarray:
    """Unsigned ground areas of ``n_rings`` closed rings (points ``xy``, ring of each point)."""
    pts, pt_ring = _densify_open_rings(xy, ring_of, seg)
    x, y = to_laea.transform(pts[:, 0], pts[:, 1])
    # cyclic shoelace per ring: the successor of a ring's last point is its first point
    counts = np.bincount(pt_ring, minlength=n_rings)
    first = np.cumsum(counts) - counts
    nxt = np.arange(1, len(pts) + 1)
    nxt[(first + counts - 1)[counts > 0]] = first[counts > 0]
    return 0.5 * np.abs(np.bincount(pt_ring, x * y[nxt] - x[nxt] * y, minlength=n_rings))


def _densify_open_rings(
    xy: np.ndarray, ring_of: np.ndarray, seg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Closed rings -> open rings with extra points so that no edge is longer than ``seg``."""
    starts_edge = np.r_[ring_of[1:] == ring_of[:-1], False]  # point i starts edge i -> i+1
    d = np.zeros_like(xy)
    d[:-1] = xy[1:] - xy[:-1]
    long = starts_edge & (np.abs(d[:, 0]) + np.abs(d[:, 1]) > seg)  # cheap pre-filter
    n_sub = starts_edge.astype(np.int64)
    n_sub[long] = np.ceil(np.hypot(d[long, 0], d[long, 1]) / seg)
    if not (n_sub > 1).any():  # nothing to densify: drop the closing points only
        return xy[starts_edge], ring_of[starts_edge]
    at = np.cumsum(n_sub) - n_sub  # where each edge's first point lands in the output
    out = np.empty((int(n_sub.sum()), 2))
    out[at[starts_edge]] = xy[starts_edge]
    src = np.flatnonzero(n_sub > 1)
    extra = n_sub[src] - 1
    e = np.repeat(src, extra)
    step = np.arange(len(e)) - np.repeat(np.cumsum(extra) - extra, extra) + 1
    out[at[e] + step] = xy[e] + d[e] * (step / n_sub[e])[:, None]
    return out, np.repeat(ring_of, n_sub)


def _equal_area(grid: GridBox) -> tuple[Transformer, float]:
    """Transformer CRS -> local LAEA, and the ground size (m) of a pixel at the centre."""
    src = ProjCRS.from_user_input(grid.crs.to_wkt())
    geodetic = src.geodetic_crs
    cx, cy = grid.transform * (grid.width / 2, grid.height / 2)
    lon, lat = Transformer.from_crs(src, geodetic, always_xy=True).transform(cx, cy)
    laea = ProjectedCRS(LambertAzimuthalEqualAreaConversion(lat, lon), geodetic_crs=geodetic)
    to_laea = Transformer.from_crs(src, laea, always_xy=True)
    px, py = grid.width // 2, grid.height // 2
    corners = [grid.transform * c for c in ((px, py), (px + 1, py), (px + 1, py + 1), (px, py + 1))]
    xs, ys = to_laea.transform(*zip(*corners, strict=True))
    px_area = shapely.area(shapely.Polygon(list(zip(xs, ys, strict=True))))
    return to_laea, max(float(px_area) ** 0.5, 1e-9)


# --------------------------------------------------------------------------------------------
# bounded passes over polygon coordinates


def batches(n: int, size: int = 4096) -> Iterator[slice]:
    """Slices of at most ``size`` polygons: geometries are replaced batch by batch in their
    array (old ones freed as we go) and temporary coordinate arrays stay small, so the peak
    memory stays close to the size of the result itself."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def ring_spans(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive ranges ``[i, j)`` of the rings delimited by ``offsets`` with at most
    ``_POINTS_PER_PASS`` points in all (a larger ring alone makes its own range)."""
    budget = _POINTS_PER_PASS
    n, i = len(offsets) - 1, 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + budget, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def ragged_offsets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Ragged-array offsets (``len(counts) + 1``, starting at 0) of items of these sizes."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out
