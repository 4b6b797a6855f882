"""Class raster -> polygons, chunk by chunk, with polygons re-joined across chunk borders.

Each chunk is vectorised with GDAL's polygonizer (``rasterio.features.shapes``) in *pixel*
coordinates, which are exact integers: border tests and unions are then exact, so the polygon
set does not depend on the chunk size. Only polygons that touch an interior chunk border are
kept aside and merged (spatial index + union-find) once the chunk rows they may extend into
are done; the others are final as soon as their chunk is done.

Two front ends share these steps:

* ``polygonize`` returns one GeoDataFrame (memory grows with the number of polygons, about
  1.7 KB each: right for a viewport, e.g. in Jupyter);
* ``polygonize_to_file`` streams polygons to the output file as they become final and only
  keeps border pieces in memory: O(chunk + about one chunk row of pieces), for whole scenes.
"""

from __future__ import annotations

import gc
import glob
import json
import logging
import os
import shutil
import uuid
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion
from rasterio.features import shapes
from tqdm.auto import tqdm

from geoseg._files import remove_quietly, temp_sibling, writable_folder, write_failed
from geoseg.bundle.card import ClassInfo
from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox

log = logging.getLogger(__name__)

BlockReader = Callable[[int, int, int, int], "np.ndarray | None"]
Window = tuple[int, int, int, int]

#: Output formats by file extension: (label, OGR driver or None for GeoParquet).
FORMATS = {
    ".gpkg": ("GeoPackage", "GPKG"),
    ".shp": ("Shapefile", "ESRI Shapefile"),
    ".parquet": ("GeoParquet", None),
    ".fgb": ("FlatGeobuf", "FlatGeobuf"),
}
#: Shapefile parts, in the order they are moved into place (.shp last: once it is visible, the
#: layer is complete). Spatial-index sidecars of an older file would be stale: removed.
_SHP_PARTS = (".dbf", ".shx", ".prj", ".cpg", ".shp")
_SHP_STALE = (".qix", ".sbn", ".sbx", ".qmd")
#: Ground length of the segments used for area computation: polygon edges are densified to
#: this before projection, so long straight edges (parallels in a geographic CRS, lines of a
#: Web Mercator grid) follow the source CRS rather than a chord in the equal-area projection.
_AREA_SEGMENT_M = 2000.0
#: Streamed GeoParquet: chunks are buffered until they reach this many polygons or bytes and
#: written as one row group, so sparse chunks do not make tiny row groups while the buffer
#: stays small (a 2048² chunk of a noisy model is ~20k polygons, ~30 MB of WKB).
_PARQUET_ROW_GROUP = (65_536, 16 * 2**20)
#: Points per numpy pass over polygon coordinates (affine, areas): one polygon of a noisy map
#: can hold millions, and whole-array temporaries (~150 B per point for areas) made the peak.
_POINTS_PER_PASS = 1 << 18


def polygonize(
    read_block: BlockReader,
    grid: GridBox,
    classes: Sequence[ClassInfo],
    *,
    chunk: int = 2048,
    nodata: int = 255,
    min_area: float = 0.0,
    simplify: float = 0.0,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Polygons of equal class ids (4-connected), one row per polygon, in memory.

    Memory grows with the number of polygons (about 1.7 KB each); for whole scenes, use
    ``polygonize_to_file``, which streams them to a file.

    Args:
        read_block: ``f(r0, r1, c0, c1)`` -> class ids of that window (``(h, w)`` or
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
    _check_chunk(chunk)
    parts = list(_final_polygons(read_block, grid, chunk, nodata, 0.0, progress))
    geoms = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=object)
    ids = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64)
    del parts
    geoms, ids = _canonical(geoms, ids)
    if simplify > 0 and len(geoms):
        # coverage simplification needs neighbours to share the same vertices along common
        # edges; GDAL only emits corner vertices, so put one at every pixel corner first
        for s in _batches(len(geoms)):
            geoms[s] = _apply_affine(shapely.segmentize(geoms[s], 1.0), grid.transform)
        geoms = shapely.coverage_simplify(geoms, simplify)
        keep = ~shapely.is_empty(geoms)
        geoms = shapely.orient_polygons(geoms[keep], exterior_cw=False)
        ids = ids[keep]
    else:
        geoms = _to_crs(geoms, grid)
    geoms, ids, area = _with_areas(geoms, ids, _area_meter(grid), min_area)
    return gpd.GeoDataFrame(
        {
            "class_id": ids.astype(np.int32),
            "class_name": _class_names(ids, classes),
            "area_m2": area,
        },
        geometry=gpd.GeoSeries(geoms, crs=grid.crs),
        crs=grid.crs,
    )


def polygonize_to_file(
    read_block: BlockReader,
    grid: GridBox,
    classes: Sequence[ClassInfo],
    path: str | os.PathLike[str],
    *,
    chunk: int = 2048,
    nodata: int = 255,
    min_area: float = 0.0,
    simplify: float = 0.0,
    layer: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Polygons of equal class ids (4-connected), streamed to a file chunk by chunk.

    Same polygons and fields as ``polygonize`` (which see for the arguments), but memory stays
    O(chunk + pieces of polygons cut by chunk lines), whatever the number of polygons: the
    polygons of a chunk that touch none of its interior borders are final and appended to the
    file at once; the others are kept as pieces, and merged and appended as soon as the chunk
    rows they may extend into are done (so about one chunk row of pieces is held, plus the
    polygons that span further down). The format follows the extension (.gpkg, .shp, .parquet,
    .fgb); the file is written under a temporary name and renamed when complete (nothing is
    left behind on error), replacing an existing file as a whole.

    Without ``simplify``, the set of polygons (geometry, class, area) is identical to
    ``polygonize``'s with the same arguments, for any chunk size. The row *order* differs
    (``polygonize`` sorts all polygons in raster order): chunk by chunk in row-major order, each
    chunk's own polygons in raster order, and after each chunk row the polygons merged across
    chunk lines that it completed, in raster order. A FlatGeobuf's spatial index reorders rows
    anyway (Hilbert curve).

    With ``simplify``, each chunk's coverage is simplified on its own, with every pixel corner
    on its interior chunk lines held fixed (the scene's edge and nodata boundaries are
    simplified as in ``polygonize``): pieces of one polygon still fit exactly when merged and
    neighbours keep shared edges (no gap, no overlap), but vertices stay on chunk lines where
    boundaries cross or follow them, so the result depends on the chunk size and has somewhat
    more vertices than ``polygonize``'s whole-coverage simplification.

    Args:
        path: destination file.
        layer: layer name (GeoPackage, FlatGeobuf); defaults to the file's stem.

    Returns:
        ``{"polygons": n, "polygons_per_class": {id: n}, "area_m2_per_class": {id: m²},
        "files": [paths written]}`` (class ids as ``int``; areas NaN without a CRS).

    Raises:
        OutputError: unknown extension or unwritable destination (checked before any work).
    """
    _check_chunk(chunk)
    path, ext, folder = _destination(path)
    layer = layer or path.stem
    counts: dict[int, int] = {}
    areas: dict[int, float] = {}

    def tables() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        area_of = _area_meter(grid)
        for geoms, ids in _final_polygons(read_block, grid, chunk, nodata, simplify, progress):
            if simplify <= 0:  # pixel space
                geoms, ids = _canonical(geoms, ids)
                geoms = _to_crs(geoms, grid)
            table = _with_areas(geoms, ids, area_of, min_area)
            del geoms, ids
            for cid, n, a in zip(*_class_totals(*table[1:]), strict=True):
                counts[cid] = counts.get(cid, 0) + n
                areas[cid] = areas.get(cid, 0.0) + a
            yield table
            del table  # not held while the next chunk is computed

    failed: list[BaseException] = []
    written = _write_atomically(
        path,
        folder,
        lambda tmp: _write_stream(tmp, ext, layer, grid, classes, tables(), failed),
        failed,
    )
    return {
        "polygons": sum(counts.values()),
        "polygons_per_class": dict(sorted(counts.items())),
        "area_m2_per_class": dict(sorted(areas.items())),
        "files": written,
    }


def _check_chunk(chunk: int) -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 pixel, got {chunk}")


def _with_areas(
    geoms: np.ndarray, ids: np.ndarray, area_of: Callable[[np.ndarray], np.ndarray], min_area: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground areas, and the polygons left by ``min_area`` (NaN areas, without CRS, are kept)."""
    area = area_of(geoms).astype(np.float64)
    if min_area > 0:
        keep = ~(area < min_area)
        geoms, ids, area = geoms[keep], ids[keep], area[keep]
    return geoms, ids, area


def _class_names(ids: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    names = {c.id: c.name for c in classes}
    uniq, inverse = np.unique(ids, return_inverse=True)
    class_names = np.array([names.get(int(u), f"class_{u}") for u in uniq], dtype=object)
    return class_names[inverse.reshape(-1)]


def _class_totals(ids: np.ndarray, area: np.ndarray) -> tuple[list[int], list[int], list[float]]:
    """Per class id: number of polygons and summed area."""
    uniq, inverse, n = np.unique(ids, return_inverse=True, return_counts=True)
    total = np.bincount(inverse.reshape(-1), area, minlength=len(uniq))
    return [int(u) for u in uniq], n.tolist(), total.tolist()


# --------------------------------------------------------------------------------------------
# chunked vectorisation in pixel space


def _chunk_pieces(
    read_block: BlockReader, grid: GridBox, chunk: int, nodata: int, progress: bool
) -> Iterator[tuple[int, Window, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per non-empty chunk: its index, window, polygons in global pixel coordinates, their
    class ids, whether each touches an interior chunk line (then it may be a piece of a larger
    polygon) and the chunk line below it where it touches that one (else -1)."""
    windows = list(grid.chunks(chunk))
    for k, (r0, r1, c0, c1) in enumerate(
        tqdm(windows, desc="polygonize", unit="chunk", disable=not progress, leave=False)
    ):
        block = read_block(r0, r1, c0, c1)
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


def _final_polygons(
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
    pieces = _BorderPieces(exact=simplify <= 0)
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
            geoms, vals, border, line = _canonical(geoms, vals, border, line)
            geoms = _simplify_chunk(geoms, window, grid, simplify)
            keep = ~shapely.is_empty(geoms)
            geoms, vals, border, line = geoms[keep], vals[keep], border[keep], line[keep]
        pieces.add(geoms[border], vals[border], k, line[border])
        done = geoms[~border], vals[~border]
        del geoms, vals, border, line
        yield done
        del done
    yield pieces.pop_complete(None)


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
        shapely.GeometryType.POLYGON, coords, (_offsets(ring_len), _offsets(n_rings))
    )
    return geoms, np.asarray(vals, dtype=np.int64)


def _offsets(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Ragged-array offsets (``len(counts) + 1``, starting at 0) of items of these sizes."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class _BorderPieces:
    """Polygons touching interior chunk lines, possibly pieces of larger ones: kept until every
    chunk they may continue into is done, then merged.

    Two pieces belong together when they have the same class, come from different chunks and
    share a boundary *segment* (DE-9IM boundary/boundary dimension 1): pieces that only touch
    at a corner stay apart, exactly as 4-connectivity keeps diagonal pixels apart. Chunks come
    in row-major order: once the chunk rows above a line are done, a group of pieces none of
    which touches that line is complete. Only incomplete groups are kept, so memory holds
    about one chunk row of pieces, plus the polygons that still extend downwards.

    ``exact``: pieces in integer pixel coordinates, whose unions are cleared of the vertices
    left where chunk lines crossed straight edges. Their holes, which no other piece can touch,
    are kept apart as packed int32 coordinates and only the filled shells take part in the
    tests and unions: a polygon of a noisy map spanning the scene carries ~10^5 holes, far
    smaller packed than as GEOS rings (measured on a noisy 16384² map: 600k holes held, 35 MB
    packed; the process held 500 MB before the last merge, now 345 MB).
    Otherwise (simplified pieces in CRS coordinates) unions are left as they are, such a vertex
    may be shared with a neighbour which must keep fitting, and merged polygons are given OGC
    orientation.
    """

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        empty_i = np.empty(0, dtype=np.int64)
        empty_o = np.empty(0, dtype=object)
        # kept pieces: geometry, holes (exact) or None, class, chunk, line below (or -1),
        # group (index of its first)
        self.kept = (empty_o, empty_o, empty_i, empty_i, empty_i, empty_i)
        self.new: list[tuple[np.ndarray, ...]] = []

    def add(self, geoms: np.ndarray, vals: np.ndarray, chunk_id: int, line: np.ndarray) -> None:
        """Pieces of one chunk, with the chunk line below each where it touches it (else -1)."""
        if not len(geoms):
            return
        if self.exact:
            holes = _pack_holes(geoms)
            geoms = shapely.polygons(shapely.get_exterior_ring(geoms))
        else:
            holes = np.full(len(geoms), None, dtype=object)
        self.new.append((geoms, holes, vals, np.full(len(geoms), chunk_id), line))

    def pop_complete(self, frontier: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Merged polygons (and classes) of the groups complete when every chunk above pixel
        row ``frontier`` is done (``None``: all chunks are done); those groups are dropped."""
        geoms, holes, vals, chunks, line, group = self.kept
        n_old = len(geoms)
        if self.new:
            geoms, holes, vals, chunks, line = (
                np.concatenate([old, *new])
                for old, new in zip((geoms, holes, vals, chunks, line), zip(*self.new, strict=True),
                                    strict=True)
            )  # fmt: skip
            self.new = []
        # every pair is tested once, when the later piece arrives; bounding-box candidates
        # first: the exact test below is the only costly predicate
        i, j = shapely.STRtree(geoms).query(geoms[n_old:])
        i += n_old
        keep = (vals[i] == vals[j]) & (chunks[i] != chunks[j]) & ((j < n_old) | (i < j))
        i, j = i[keep], j[keep]
        keep = shapely.relate_pattern(geoms[i], geoms[j], "****1****")
        roots = _connected_components(
            len(geoms), np.r_[i[keep], np.arange(n_old)], np.r_[j[keep], group]
        )
        done = np.ones(len(geoms), dtype=bool)
        if frontier is not None:
            done[roots[line == frontier]] = False  # a group with a piece on the line is open
            done = done[roots]
        # roots are the first piece of their group, kept with it: renumber
        stay = ~done
        self.kept = (geoms[stay], holes[stay], vals[stay], chunks[stay], line[stay],
                     (np.cumsum(stay) - 1)[roots[stay]])  # fmt: skip
        return _union_groups(geoms[done], holes[done], vals[done], roots[done], self.exact)


def _pack_holes(geoms: np.ndarray) -> np.ndarray:
    """Per polygon (integer pixel coordinates): its holes as ``(int32 (n, 2) coordinates,
    int32 ring lengths)``, or None when it has none."""
    out = np.full(len(geoms), None, dtype=object)
    has = np.flatnonzero(shapely.get_num_interior_rings(geoms) > 0)
    if not len(has):
        return out
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(geoms[has])
    xy = xy.astype(np.int32)
    lengths = np.diff(ring_off).astype(np.int32)
    for k, a, b in zip(has.tolist(), poly_off[:-1].tolist(), poly_off[1:].tolist(), strict=True):
        out[k] = (xy[ring_off[a + 1] : ring_off[b]].copy(), lengths[a + 1 : b].copy())  # 1st: shell
    return out


def _union_groups(
    geoms: np.ndarray, holes: np.ndarray, vals: np.ndarray, groups: np.ndarray, exact: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per group (unions of its pieces, taken in their order) and its class;
    ``exact``: pieces are filled shells and their packed ``holes`` are put back."""
    if not len(geoms):
        return geoms, vals
    order = np.argsort(groups, kind="stable")
    starts = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    out = np.empty(len(starts), dtype=object)
    first = order[starts]
    single = sizes == 1
    out[single] = geoms[first[single]]
    merged = ~single
    if exact:
        # unions of filled shells are exact unions of the pieces (no piece reaches into another's
        # holes); they keep the vertices where chunk lines crossed straight edges, which a
        # zero-tolerance simplification removes exactly (coordinates are integers)
        out[merged] = shapely.simplify(_union_each(geoms, order, starts, sizes, merged), 0.0)
        out = _with_holes(out, np.split(holes[order], starts[1:]))
    else:
        out[merged] = shapely.orient_polygons(
            _union_each(geoms, order, starts, sizes, merged), exterior_cw=False
        )
    return out, vals[first]


def _with_holes(polys: np.ndarray, packed: list[np.ndarray]) -> np.ndarray:
    """``polys`` with the packed holes ``packed[k]`` (None or ``_pack_holes`` items) added to
    polygon ``k``, built in one go from coordinate arrays."""
    _, xy, (ring_off, poly_off) = shapely.to_ragged_array(polys)
    lengths = np.diff(ring_off)
    coords: list[np.ndarray] = []
    rings: list[np.ndarray] = []
    per_poly = np.diff(poly_off)
    for k, extra in enumerate(packed):
        a, b = poly_off[k], poly_off[k + 1]
        coords.append(xy[ring_off[a] : ring_off[b]])
        rings.append(lengths[a:b])
        for hole in extra:
            if hole is not None:
                coords.append(hole[0])
                rings.append(hole[1])
                per_poly[k] += len(hole[1])
    del xy
    offsets = (_offsets(np.concatenate(rings)), _offsets(per_poly))
    xy = np.concatenate(coords, dtype=np.float64)
    del coords
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, offsets)


def _union_each(geoms: np.ndarray, order: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                sel: np.ndarray) -> np.ndarray:  # fmt: skip
    """Union of each selected group (pieces ``geoms[order[start:start + size]]``)."""
    out = np.empty(int(sel.sum()), dtype=object)
    pairs = sizes[sel] == 2
    s = starts[sel]
    if pairs.any():  # the common case, vectorised
        out[pairs] = shapely.union(geoms[order[s[pairs]]], geoms[order[s[pairs] + 1]])
    for k in np.flatnonzero(~pairs):
        out[k] = shapely.union_all(geoms[order[s[k] : s[k] + sizes[sel][k]]])
    return out


def _connected_components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Root label of each of ``n`` nodes joined by edges (i, j): union-find with path halving."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(a) for a in range(n)], dtype=np.int64)


def _canonical(geoms: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normalised geometries in raster order, so output never depends on the chunking;
    ``arrays`` (per-polygon values) are reordered alike.

    The sort key is each polygon's first pixel in row-major order (top row, then leftmost
    pixel of that row): unique, because every pixel belongs to exactly one polygon.
    """
    if not len(geoms):
        return geoms, *arrays
    ymin = np.empty(len(geoms))
    xtop = np.full(len(geoms), np.inf)
    for s in _batches(len(geoms)):
        geoms[s] = shapely.normalize(geoms[s])
        ymin[s] = shapely.bounds(geoms[s])[:, 1]
        xy, idx = shapely.get_coordinates(shapely.get_exterior_ring(geoms[s]), return_index=True)
        top = xy[:, 1] == ymin[s][idx]
        np.minimum.at(xtop[s], idx[top], xy[top, 0])
    order = np.lexsort((xtop, ymin))
    geoms[:] = geoms[order]  # in place: no second array keeps the geometries alive
    return geoms, *(a[order] for a in arrays)


def _batches(n: int, size: int = 4096) -> Iterator[slice]:
    """Slices of at most ``size`` polygons: geometries are replaced batch by batch in their
    array (old ones freed as we go) and temporary coordinate arrays stay small, so the peak
    memory stays close to the size of the result itself."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _spans(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive ranges ``[i, j)`` of the rings delimited by ``offsets`` with at most
    ``_POINTS_PER_PASS`` points in all (a larger ring alone makes its own range)."""
    budget = _POINTS_PER_PASS
    n, i = len(offsets) - 1, 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + budget, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _to_crs(geoms: np.ndarray, grid: GridBox) -> np.ndarray:
    """Pixel -> CRS coordinates, batch by batch, with OGC ring orientation.

    Normalised rings have clockwise exteriors in pixel space; a north-up transform (negative
    determinant) mirrors them to counter-clockwise, as OGC/GeoJSON want; otherwise they are
    reversed on the way.
    """
    flip = grid.transform.determinant > 0
    for s in _batches(len(geoms)):
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
    for r0, r1 in _spans(ring_off):  # per-point temporaries stay small
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


# --------------------------------------------------------------------------------------------
# ground areas


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
    return _area_meter(grid)(geoms)


def _area_meter(grid: GridBox) -> Callable[[np.ndarray], np.ndarray]:
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
        for s in _batches(len(geoms)):
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
        ring_off = _offsets(shapely.get_num_coordinates(rings))
    ring_area = np.empty(len(ring_poly))
    for r0, r1 in _spans(ring_off):  # ~150 B of temporaries per point: keep them small
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
    src = CRS.from_user_input(grid.crs.to_wkt())
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
# writing


def write_vectors(
    gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], *, layer: str | None = None
) -> list[Path]:
    """Write a polygon layer; the format follows the extension (.gpkg, .shp, .parquet, .fgb).

    The file is written under a temporary name and renamed when complete (for a Shapefile,
    every part); an existing file is replaced as a whole (a GeoPackage's other layers too).
    An empty GeoDataFrame gives a valid empty layer with the same fields.

    Args:
        gdf: polygons (e.g. from ``polygonize``).
        path: destination file.
        layer: layer name (GeoPackage, FlatGeobuf); defaults to the file's stem.

    Returns:
        The files written (one, or the Shapefile's parts).

    Raises:
        OutputError: unknown extension or unwritable destination; nothing is left behind.
    """
    path, ext, folder = _destination(path)
    layer = layer or path.stem
    if ext == ".shp":
        gdf = gdf.rename(columns=_dbf_names(gdf))

    def write(tmp: Path) -> None:
        if ext == ".parquet":
            gdf.to_parquet(tmp, index=False)
        else:
            _write_ogr(gdf, tmp, FORMATS[ext][1], layer)

    return _write_atomically(path, folder, write)


def _destination(path: str | os.PathLike[str]) -> tuple[Path, str, Path]:
    """The destination, its (lower-case) extension and its folder, checked before any work."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(f"{e} ({label})" for e, (label, _) in FORMATS.items())
        raise OutputError(
            f"{path}: unknown vector format {path.suffix or '(no extension)'!r}; use one of {known}"
        )
    return path, ext, writable_folder(path)


def _write_atomically(
    path: Path, folder: Path, write: Callable[[Path], None], failed: Sequence[BaseException] = ()
) -> list[Path]:
    """Run ``write(tmp)`` on a temporary sibling of ``path`` (for a Shapefile, on a staging
    folder's ``.shp``) and move the result into place; on any error nothing is left behind.

    ``failed``: where errors raised while *producing* streamed rows (reading blocks,
    vectorising) are recorded; the first is re-raised as is rather than reported as an
    unwritable output (the writer only sees a broken stream).
    """
    try:
        if path.suffix.lower() == ".shp":
            return _write_shapefile(path, folder, write)
        tmp = temp_sibling(path, path.suffix.lower())
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:  # GeoPackage (SQLite) may leave -journal/-wal/-shm files on failure
            remove_quietly(tmp, *folder.glob(f"{glob.escape(tmp.name)}*"))
    except OutputError:
        raise
    except BaseException as err:  # pyogrio/arrow/OS errors have no common base class
        if failed:
            raise failed[0] from None
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit
            raise
        raise write_failed(path, folder, err) from err
    return [path]


def _write_ogr(gdf: gpd.GeoDataFrame, path: Path, driver: str, layer: str) -> None:
    import pyogrio

    kinds = set(gdf.geometry.geom_type.dropna())
    kw: dict = {}
    if not kinds or kinds <= {"Polygon"}:
        kw["geometry_type"] = "Polygon"  # an empty layer still declares its geometry type
    elif kinds <= {"Polygon", "MultiPolygon"}:
        kw.update(geometry_type="MultiPolygon", promote_to_multi=True)
    pyogrio.write_dataframe(gdf, path, layer=layer, driver=driver, **kw)


def _write_shapefile(path: Path, folder: Path, write: Callable[[Path], None]) -> list[Path]:
    staging = folder / f".{path.stem}.{uuid.uuid4().hex[:12]}.shp.tmp"
    staging.mkdir()
    try:
        # written in UTF-8 (a .cpg says so), so class names with accents survive
        write(staging / path.name)
        for ext in _SHP_STALE + tuple(
            e for e in _SHP_PARTS if not (staging / f"{path.stem}{e}").exists()
        ):
            remove_quietly(path.with_suffix(ext))
        written = []
        for ext in _SHP_PARTS:
            part = staging / f"{path.stem}{ext}"
            if part.exists():
                os.replace(part, path.with_suffix(ext))
                written.append(path.with_suffix(ext))
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dbf_names(gdf: gpd.GeoDataFrame) -> dict[str, str]:
    """DBF field names are at most 10 characters: shorten longer ones, keeping them unique."""
    taken = {c for c in gdf.columns if len(str(c)) <= 10}
    mapping = {}
    for col in gdf.columns:
        if col == gdf.geometry.name or len(str(col)) <= 10:
            continue
        base, n = str(col)[:10], 1
        name = base
        while name in taken:
            suffix = f"_{n}"
            name, n = base[: 10 - len(suffix)] + suffix, n + 1
        taken.add(name)
        mapping[col] = name
        log.warning("Shapefile field %r renamed to %r (10 characters at most)", col, name)
    return mapping


# --------------------------------------------------------------------------------------------
# streamed writing (polygonize_to_file)


def _arrow_schema(ext: str, grid: GridBox) -> Any:
    """Arrow schema of the streamed layer (the fields of ``polygonize``; WKB geometries), with
    GeoParquet metadata for .parquet."""
    import pyarrow as pa

    meta = None
    if ext == ".parquet":
        crs = CRS.from_user_input(grid.crs).to_json_dict() if grid.crs else None
        column = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs}
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
        meta = {"geo": json.dumps(geo)}
    return pa.schema(
        [
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            ("area_m2", pa.float64()),
            ("geometry", pa.binary()),
        ],
        metadata=meta,
    )


def _write_stream(
    tmp: Path, ext: str, layer: str, grid: GridBox, classes: Sequence[ClassInfo],
    tables: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], failed: list[BaseException],
) -> None:  # fmt: skip
    """Write (geometries, class ids, areas) batches to ``tmp`` as they come, in one pass;
    errors raised by ``tables`` are recorded in ``failed``."""
    import pyarrow as pa

    schema = _arrow_schema(ext, grid)
    # arrow's default allocator (mimalloc/jemalloc) keeps freed chunks' buffers: measured ~90 MB
    # more peak memory per 2048² noisy chunk than with the system allocator
    pool = pa.system_memory_pool()

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for geoms, ids, area in tables:
                for b in _batches(len(geoms)):  # small batches: WKB and arrow copies stay small
                    kinds = shapely.get_type_id(geoms[b])
                    if not (kinds == shapely.GeometryType.POLYGON).all():  # never produced
                        raise RuntimeError(f"unexpected geometry types {set(kinds.tolist())}")
                    yield pa.record_batch(
                        [
                            pa.array(ids[b].astype(np.int32), memory_pool=pool),
                            pa.array(_class_names(ids[b], classes), pa.string(), memory_pool=pool),
                            pa.array(area[b], pa.float64(), memory_pool=pool),
                            pa.array(shapely.to_wkb(geoms[b]), pa.binary(), memory_pool=pool),
                        ],
                        schema=schema,
                    )
                del geoms, ids, area
        except BaseException as err:
            failed.append(err)
            raise

    if ext == ".parquet":
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, schema, memory_pool=pool) as writer:
            pending: list[pa.RecordBatch] = []
            for batch in batches():
                pending.append(batch)
                del batch
                if (
                    sum(b.num_rows for b in pending) >= _PARQUET_ROW_GROUP[0]
                    or sum(b.nbytes for b in pending) >= _PARQUET_ROW_GROUP[1]
                ):
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=1 << 30)
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=1 << 30)
        return
    import pyogrio

    crs = None
    if grid.crs:  # as pyogrio.write_dataframe (hence write_vectors) writes it
        pcrs = CRS.from_user_input(grid.crs)
        epsg = pcrs.to_epsg()
        crs = f"EPSG:{epsg}" if epsg else pcrs.to_wkt("WKT1_GDAL")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # no CRS: none
        pyogrio.write_arrow(
            pa.RecordBatchReader.from_batches(schema, batches()), tmp, layer=layer,
            driver=FORMATS[ext][1], geometry_name="geometry", geometry_type="Polygon", crs=crs,
            encoding="UTF-8" if ext == ".shp" else None,
        )  # fmt: skip
