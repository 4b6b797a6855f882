"""Class raster -> polygons, chunk by chunk, in exact pixel coordinates.

Each chunk is vectorised with GDAL's polygonizer (``rasterio.features.shapes``) in *pixel*
coordinates, which are exact integers: border tests and unions are then exact, so the polygon
set does not depend on the chunk size. Polygons that touch an interior chunk line are handed to
:class:`~geoseg.outputs.merge.BorderPieces` and come back merged once the chunk rows they may
extend into are done; the others are final as soon as their chunk is done
(:func:`final_polygons`, shared with the streamed writer of ``geoseg.outputs.stream``).

:func:`polygonize` collects them into one GeoDataFrame (memory grows with the number of
polygons, about 1.7 KB each: right for a viewport, e.g. in Jupyter).
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from tqdm.auto import tqdm

from geoseg.config import NODATA
from geoseg.geometry.area import area_meter, batches, ragged_offsets, ring_spans
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import BlockReader
from geoseg.outputs.merge import BorderPieces
from geoseg.scene.classes import ClassInfo

Window = tuple[int, int, int, int]


def polygonize(
    read_block: BlockReader,
    grid: GridBox,
    classes: Sequence[ClassInfo],
    *,
    chunk: int = 2048,
    nodata: int = NODATA,
    min_area: float = 0.0,
    simplify: float = 0.0,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Polygons of equal class ids (4-connected), one row per polygon, in memory.

    Memory grows with the number of polygons (about 1.7 KB each); for whole scenes, use
    ``polygonize_to_file``, which streams them to a file.

    Args:
        read_block: ``f(window: PixelWindow)`` -> class ids of that window (``(h, w)`` or
            ``(1, h, w)``), or ``None`` when the window is entirely nodata.
        grid: the class raster's geometry; the result is in ``grid.crs``.
        classes: class table (names of the ids; ids outside it are named ``class_<id>``).
        chunk: window size in pixels; the result does not depend on it.
        nodata: class id that is never vectorised.
        min_area: polygons smaller than this ground area (m²) are dropped.
        simplify: tolerance (CRS units) of a topology-preserving simplification of the whole
            coverage: neighbours keep their shared boundaries, no gap or overlap appears.
        progress: show a progress bar over the chunks.

    Returns:
        GeoDataFrame with ``class_id`` (int32), ``class_name``, ``area_m2`` (ground area:
        computed in a Lambert azimuthal equal-area projection centred on the scene) and
        ``geometry``, sorted in raster order (by the first pixel of each polygon).
    """
    check_chunk(chunk)
    geoms, ids = _all_polygons(read_block, grid, chunk, nodata, progress)
    if simplify > 0 and len(geoms):
        geoms, ids = _simplify_coverage(geoms, ids, grid, simplify)
    else:
        geoms = to_crs(geoms, grid)
    geoms, ids, area = with_areas(geoms, ids, area_meter(grid), min_area)
    return gpd.GeoDataFrame(
        {
            "class_id": ids.astype(np.int32),
            "class_name": class_names(ids, classes),
            "area_m2": area,
        },
        geometry=gpd.GeoSeries(geoms, crs=grid.crs),
        crs=grid.crs,
    )


def _all_polygons(
    read_block: BlockReader, grid: GridBox, chunk: int, nodata: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Every polygon of the scene and its class id, in pixel coordinates and raster order."""
    parts = list(final_polygons(read_block, grid, chunk, nodata, 0.0, progress))
    geoms = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=object)
    ids = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64)
    del parts
    return canonical(geoms, ids)


def _simplify_coverage(
    geoms: np.ndarray, ids: np.ndarray, grid: GridBox, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel -> CRS coordinates and coverage simplification of the whole scene (OGC rings);
    polygons simplified away are dropped with their ids."""
    # coverage simplification needs neighbours to share the same vertices along common
    # edges; GDAL only emits corner vertices, so put one at every pixel corner first
    for s in batches(len(geoms)):
        geoms[s] = _apply_affine(shapely.segmentize(geoms[s], 1.0), grid.transform)
    geoms = shapely.coverage_simplify(geoms, tol)
    keep = ~shapely.is_empty(geoms)
    return shapely.orient_polygons(geoms[keep], exterior_cw=False), ids[keep]


def check_chunk(chunk: int) -> None:
    """Refuse a chunk size under one pixel."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 pixel, got {chunk}")


def with_areas(
    geoms: np.ndarray, ids: np.ndarray, area_of: Callable[[np.ndarray], np.ndarray], min_area: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground areas, and the polygons left by ``min_area`` (NaN areas, without CRS, are kept)."""
    area = area_of(geoms).astype(np.float64)
    if min_area > 0:
        keep = ~(area < min_area)
        geoms, ids, area = geoms[keep], ids[keep], area[keep]
    return geoms, ids, area


def class_names(ids: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    """Name of each class id (``class_<id>`` for ids outside ``classes``)."""
    names = {c.id: c.name for c in classes}
    uniq, inverse = np.unique(ids, return_inverse=True)
    names_of = np.array([names.get(int(u), f"class_{u}") for u in uniq], dtype=object)
    return names_of[inverse.reshape(-1)]


# --------------------------------------------------------------------------------------------
# chunked vectorisation in pixel space


def final_polygons(
    read_block: BlockReader, grid: GridBox, chunk: int, nodata: int, simplify: float,
    progress: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Polygons and class ids as they become final: after each chunk, its polygons that touch
    no interior chunk line; after each chunk row, the merged polygons completed by it.

    Without ``simplify``, in pixel coordinates (exact; merged as pixel sets). With it, in CRS
    coordinates with OGC orientation: each chunk's coverage is simplified on its own, its
    interior chunk lines held fixed, and the simplified pieces are merged.

    Generators on this path drop their references to what they yielded as soon as they are
    resumed: otherwise a chunk's polygons would stay alive while the next one is computed.
    """
    pieces = BorderPieces(exact=simplify <= 0)
    row = 0
    for k, window, geoms, vals, border, line in _chunk_pieces(
        read_block, grid, chunk, nodata, progress
    ):
        if window[0] != row:  # every chunk above pixel row window[0] is done
            row = window[0]
            done = pieces.pop_complete(row)
            yield done
            del done
        if simplify > 0:
            geoms, vals, border, line = canonical(geoms, vals, border, line)
            geoms = _simplify_chunk(geoms, window, grid, simplify)
            keep = ~shapely.is_empty(geoms)
            geoms, vals, border, line = geoms[keep], vals[keep], border[keep], line[keep]
        pieces.add(geoms[border], vals[border], k, line[border])
        done = geoms[~border], vals[~border]
        del geoms, vals, border, line
        yield done
        del done
    yield pieces.pop_complete(None)


def _chunk_pieces(
    read_block: BlockReader, grid: GridBox, chunk: int, nodata: int, progress: bool
) -> Iterator[tuple[int, Window, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per non-empty chunk: its index, window, polygons in global pixel coordinates, their
    class ids, whether each touches an interior chunk line (then it may be a piece of a larger
    polygon) and the chunk line below it where it touches that one (else -1)."""
    windows = list(grid.chunks(chunk))
    for k, win in enumerate(
        tqdm(windows, desc="polygonize", unit="chunk", disable=not progress, leave=False)
    ):
        r0, r1, c0, c1 = win.as_list()
        block = read_block(win)
        if block is None:
            continue
        block = _as_class_block(block, (r1 - r0, c1 - c0), (r0, r1, c0, c1))
        geoms, vals = _shapes_px(block, nodata, offset=(c0, r0))
        del block
        if not len(geoms):
            continue
        x0, y0, x1, y1 = shapely.bounds(geoms).T
        # bounds are exact integers: a polygon with x0 == c0 has an edge on that chunk line
        below = (y1 == r1) & (r1 < grid.height)
        border = below | ((x0 == c0) & (c0 > 0)) | ((x1 == c1) & (c1 < grid.width))
        border |= (y0 == r0) & (r0 > 0)
        line = np.where(below, r1, -1)
        del x0, y0, x1, y1, below
        yield k, (r0, r1, c0, c1), geoms, vals, border, line
        del geoms, vals, border, line  # not held while the next chunk is read


def _simplify_chunk(geoms: np.ndarray, window: Window, grid: GridBox, tol: float) -> np.ndarray:
    """Coverage simplification of one chunk's polygons (pixel -> CRS coordinates), with every
    pixel corner on the chunk's interior borders held fixed.

    A ring of one-pixel "guard" squares just outside the interior borders makes each of those
    corners a node of the coverage (where three polygons meet), which coverage simplification
    never moves; the scene's edge and nodata boundaries are simplified as in ``polygonize``.
    Pieces of one polygon in neighbouring chunks thus keep identical edges on the chunk line.
    (``simplify_boundary=False`` would hold the chunk lines too, but also leave the scene's
    edge and every nodata boundary as pixel staircases.)
    """
    r0, r1, c0, c1 = window
    cols, rows = np.arange(c0, c1), np.arange(r0, r1)
    guards = []
    if r0 > 0:
        guards.append(shapely.box(cols, r0 - 1, cols + 1, r0))
    if r1 < grid.height:
        guards.append(shapely.box(cols, r1, cols + 1, r1 + 1))
    if c0 > 0:
        guards.append(shapely.box(c0 - 1, rows, c0, rows + 1))
    if c1 < grid.width:
        guards.append(shapely.box(c1, rows, c1 + 1, rows + 1))
    # coverage simplification needs neighbours to share the same vertices along common
    # edges; GDAL only emits corner vertices, so put one at every pixel corner first
    coverage = np.concatenate([shapely.segmentize(geoms, 1.0), *guards])
    coverage = shapely.coverage_simplify(_apply_affine(coverage, grid.transform), tol)
    return shapely.orient_polygons(coverage[: len(geoms)], exterior_cw=False)


def _as_class_block(block: np.ndarray, shape: tuple[int, int], window: tuple) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim == 3 and block.shape[0] == 1:
        block = block[0]
    if block.shape != shape:
        raise ValueError(f"read_block{window} returned shape {block.shape}, expected {shape}")
    # GDAL's polygonizer takes 8/16/32-bit integers; class ids are uint8 in geoseg
    if block.dtype not in (np.uint8, np.int16, np.uint16, np.int32):
        block = block.astype(np.int32)
    return np.ascontiguousarray(block)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: the polygonizer yields millions of small dicts/lists/tuples
    (no cycles, all freed by reference counting) and repeated GC passes over them cost
    more than the vectorisation itself (measured: 12.6 s -> 7.1 s on 750k polygons)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _shapes_px(
    block: np.ndarray, nodata: int, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of one block, in global pixel coordinates, built as one ragged array.

    Coordinates go into flat typed arrays polygon by polygon, so the polygonizer's Python
    tuples are freed as they come (holding them until the end took ~190 MB more per 2048²
    noisy chunk, and was slower).
    """
    vals: list[float] = []
    ring_len = array("q")
    n_rings = array("q")
    xy = array("d")
    with _gc_paused():
        for geom, value in shapes(block, mask=block != nodata, connectivity=4):
            rings = geom["coordinates"]
            vals.append(value)
            n_rings.append(len(rings))
            for ring in rings:
                ring_len.append(len(ring))
                xy.extend(chain.from_iterable(ring))
    if not vals:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    coords = np.frombuffer(xy, np.float64).reshape(-1, 2)
    coords += offset  # in place: no second copy of the chunk's coordinates
    geoms = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords, (ragged_offsets(ring_len), ragged_offsets(n_rings))
    )
    return geoms, np.asarray(vals, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# raster order and georeferencing


def canonical(geoms: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normalised geometries in raster order, so output never depends on the chunking;
    ``arrays`` (per-polygon values) are reordered alike.

    The sort key is each polygon's first pixel in row-major order (top row, then leftmost
    pixel of that row): unique, because every pixel belongs to exactly one polygon.
    """
    if not len(geoms):
        return geoms, *arrays
    ymin = np.empty(len(geoms))
    xtop = np.full(len(geoms), np.inf)
    for s in batches(len(geoms)):
        geoms[s] = shapely.normalize(geoms[s])
        ymin[s] = shapely.bounds(geoms[s])[:, 1]
        xy, idx = shapely.get_coordinates(shapely.get_exterior_ring(geoms[s]), return_index=True)
        top = xy[:, 1] == ymin[s][idx]
        np.minimum.at(xtop[s], idx[top], xy[top, 0])
    order = np.lexsort((xtop, ymin))
    geoms[:] = geoms[order]  # in place: no second array keeps the geometries alive
    return geoms, *(a[order] for a in arrays)


def to_crs(geoms: np.ndarray, grid: GridBox) -> np.ndarray:
    """Pixel -> CRS coordinates, batch by batch, with OGC ring orientation.

    Normalised rings have clockwise exteriors in pixel space; a north-up transform (negative
    determinant) mirrors them to counter-clockwise, as OGC/GeoJSON want; otherwise they are
    reversed on the way.
    """
    flip = grid.transform.determinant > 0
    for s in batches(len(geoms)):
        geoms[s] = _apply_affine(geoms[s], grid.transform, reverse_rings=flip, consume=True)
    return geoms


def _apply_affine(
    geoms: np.ndarray, t: Affine, reverse_rings: bool = False, consume: bool = False
) -> np.ndarray:
    """Pixel -> CRS coordinates, optionally reversing every ring (vectorised).

    Shared vertices map to identical coordinates, so a coverage stays a coverage. ``consume``:
    the entries of ``geoms`` are cleared before the new geometries are built, so a polygon
    with millions of vertices is not held twice.
    """
    if not len(geoms):
        return geoms
    kinds = shapely.get_type_id(geoms)
    if not (kinds == shapely.GeometryType.POLYGON).all():  # not expected; slower but general
        geoms = shapely.transform(geoms, lambda xy: _affine_xy(xy, t))
        return shapely.orient_polygons(geoms, exterior_cw=False) if reverse_rings else geoms
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(geoms)
    if consume:
        geoms[:] = None
    for r0, r1 in ring_spans(ring_off):  # per-point temporaries stay small
        p0, p1 = ring_off[r0], ring_off[r1]
        part = xy[p0:p1]
        if reverse_rings:
            n = np.diff(ring_off[r0 : r1 + 1])
            start = np.repeat(ring_off[r0:r1] - p0, n)
            part = part[2 * start + np.repeat(n, n) - 1 - np.arange(p1 - p0)]
        xy[p0:p1] = _affine_xy(part, t)
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_off, poly_off))


def _affine_xy(xy: np.ndarray, t: Affine) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])
