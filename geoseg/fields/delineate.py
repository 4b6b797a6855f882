"""Field delineation: a 3-class raster (background, field interior, field boundary; FTW's
scheme) -> one polygon per field, correct across chunk borders, streamed to a file.

A field is a 4-connected region of interior pixels, grown into the boundary pixels around
it (``grow`` steps of 4-neighbour dilation, never into background; where the growths of two
fields meet, a pixel goes to the field of smaller id). Fields are found in two passes over
chunks, each in memory bounded by the chunk (plus one row of pixel labels across the scene):

1. **label**: per chunk, interior components are labelled (``scipy.ndimage.label``) into a
   temporary Zarr array on disk; components touching across a chunk line are joined
   (connected components over the equivalences), and every field gets an id that depends on
   the raster only: fields are numbered 1, 2, ... in raster order of their first interior pixel.
2. **grow and vectorise**: per chunk, the field ids of the chunk and a ``grow``-pixel halo are
   read back, grown into the boundary (the halo makes the growth exact: a pixel's field depends
   only on pixels within ``grow`` of it), and the chunk of field ids is handed to geoseg's
   chunked polygonizer (``geoseg.outputs.polygonize.final_polygons``), whose border merger
   joins the pieces of a field cut by chunk lines: one polygon per field.

The polygon set (ids, geometries, areas) is therefore the same for any ``chunk``. Polygons
get fiboa's core properties (id, area in ha, perimeter in m, determination_method) and are
written as GeoParquet with fiboa metadata, or GeoPackage / FlatGeobuf / Shapefile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geoseg.errors import InputError
from geoseg.fields.fiboa import collection_metadata
from geoseg.fields.raster import ClassRaster
from geoseg.geometry.area import _equal_area as equal_area_transformer
from geoseg.geometry.area import area_meter, batches
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.outputs.polygonize import canonical, check_chunk, final_polygons, to_crs
from geoseg.outputs.stream import _ogr_crs, _write_parquet
from geoseg.outputs.write import FORMATS, destination, write_atomically

#: FTW's classes: 0 background, 1 field interior, 2 field boundary
FTW_INTERIOR, FTW_BOUNDARY = 1, 2


@dataclass(frozen=True)
class Delineation:
    """How fields are cut from a 3-class raster."""

    interior: int = FTW_INTERIOR
    boundary: int = FTW_BOUNDARY
    grow: int = 2
    chunk: int = 1024
    min_area: float = 0.0
    simplify: float = 0.0

    def check(self) -> None:
        """Refuse settings that cannot work, naming the parameter."""
        check_chunk(self.chunk)
        if self.grow < 0 or self.grow > self.chunk:
            raise InputError(f"grow={self.grow}: give 0 (interiors only) up to chunk={self.chunk}")
        if self.interior == self.boundary:
            raise InputError(f"interior={self.interior} and boundary={self.boundary}: the field "
                             "interior and boundary classes must differ")  # fmt: skip
        if self.min_area < 0 or self.simplify < 0:
            raise InputError("min_area= and simplify= must be >= 0")


# --------------------------------------------------------------------------------------------
# pass 1: global field ids


@dataclass
class FieldLabels:
    """Pass 1's result: interior components of every chunk on disk and their field ids."""

    store: Any  # zarr array of chunk-local labels + offset (uint32; 0 = not interior)
    lut: np.ndarray  # label -> field id (0 = none)
    n_fields: int


def label_fields(raster: ClassRaster, how: Delineation, workdir: Path) -> FieldLabels:
    """Label the interior components chunk by chunk and join them across chunk lines."""
    import zarr
    from scipy import ndimage

    grid, size = raster.grid, how.chunk
    store = zarr.open_array(str(workdir / "labels.zarr"), mode="w", shape=grid.shape,
                            chunks=(size, size), dtype="uint32", fill_value=0)  # fmt: skip
    four = ndimage.generate_binary_structure(2, 1)
    keys: list[np.ndarray] = []  # first pixel (raster order) of each label
    edges_a: list[np.ndarray] = []
    edges_b: list[np.ndarray] = []
    above = np.zeros(grid.width, np.int64)  # labels of the row above the current chunk row
    below = np.zeros(grid.width, np.int64)
    left = np.zeros(0, np.int64)
    offset = 0
    for win in grid.chunks(size):
        if win.c0 == 0 and win.r0 > 0:
            above, below = below, above
        interior = raster.read(win) == how.interior
        lab, n = ndimage.label(interior, structure=four)
        lab = lab.astype(np.int64)
        if n:
            flat = lab.ravel()
            at = np.flatnonzero(flat)
            _, first = np.unique(flat[at], return_index=True)
            r, c = np.divmod(at[first], win.width)
            keys.append((r + win.r0) * grid.width + (c + win.c0))
            lab[lab > 0] += offset
            store[win.r0 : win.r1, win.c0 : win.c1] = lab.astype(np.uint32)
        if win.r0 > 0:  # joins with the chunk above
            _join(above[win.c0 : win.c1], lab[0], edges_a, edges_b)
        if win.c0 > 0:  # joins with the chunk to the left
            _join(left, lab[:, 0], edges_a, edges_b)
        below[win.c0 : win.c1] = lab[-1]
        left = lab[:, -1].copy()
        offset += n
        del lab, interior
    lut = _field_ids(offset, np.concatenate(keys) if keys else np.empty(0, np.int64),
                     np.concatenate(edges_a) if edges_a else np.empty(0, np.int64),
                     np.concatenate(edges_b) if edges_b else np.empty(0, np.int64))  # fmt: skip
    return FieldLabels(store, lut, int(lut.max()) if len(lut) > 1 else 0)


def _join(a: np.ndarray, b: np.ndarray, out_a: list, out_b: list) -> None:
    both = (a > 0) & (b > 0)
    if both.any():
        pairs = np.unique(np.stack([a[both], b[both]]), axis=1)
        out_a.append(pairs[0])
        out_b.append(pairs[1])


def _field_ids(n: int, keys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Field id of every label (index 0: none): joined labels share one id; ids number the
    fields in raster order of their first pixel, so they do not depend on the chunking."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lut = np.zeros(n + 1, np.uint32)
    if n == 0:
        return lut
    graph = coo_matrix((np.ones(len(a), np.int8), (a - 1, b - 1)), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    first = np.full(n_comp, np.iinfo(np.int64).max)
    np.minimum.at(first, comp, keys)
    rank = np.empty(n_comp, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, n_comp + 1)
    lut[1:] = rank[comp]
    return lut


# --------------------------------------------------------------------------------------------
# pass 2: growth into boundaries, as a block reader for the polygonizer


def field_reader(raster: ClassRaster, labels: FieldLabels, how: Delineation) -> Callable:
    """Block reader of field ids (int32, 0 = no field), grown into the boundary pixels."""
    grid = raster.grid
    full = PixelWindow(0, grid.height, 0, grid.width)

    def read(window: PixelWindow) -> np.ndarray | None:
        outer = window.grow(how.grow).intersection(full)
        assert outer is not None
        ids = labels.lut[np.asarray(labels.store[outer.r0 : outer.r1, outer.c0 : outer.c1])]
        ids = ids.astype(np.int32)
        if how.grow:
            boundary = raster.read(outer) == how.boundary
            grow_into(ids, boundary, how.grow)
        core = window.relative_to(outer)
        block = ids[core.slices]
        return block if block.any() else None

    return read


def grow_into(ids: np.ndarray, allowed: np.ndarray, steps: int) -> None:
    """Grow the labelled regions of ``ids`` (0 = none) into ``allowed`` pixels, in place, by
    ``steps`` 4-neighbour dilations; a pixel reached by several takes the smallest id."""
    big = np.iinfo(np.int32).max
    for _ in range(steps):
        todo = allowed & (ids == 0)
        if not todo.any():
            return
        near = np.full(ids.shape, big, np.int32)
        src = np.where(ids > 0, ids, big)
        np.minimum(near[1:], src[:-1], out=near[1:])
        np.minimum(near[:-1], src[1:], out=near[:-1])
        np.minimum(near[:, 1:], src[:, :-1], out=near[:, 1:])
        np.minimum(near[:, :-1], src[:, 1:], out=near[:, :-1])
        take = todo & (near < big)
        ids[take] = near[take]


# --------------------------------------------------------------------------------------------
# fields to a file


def delineate_fields(
    raster: ClassRaster,
    path: str | os.PathLike[str],
    how: Delineation | None = None,
    *,
    determination_datetime: dt.datetime | None = None,
    collection: str | None = None,
    progress: bool = False,
    workdir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Field polygons of a 3-class raster, streamed to ``path`` (.parquet: fiboa GeoParquet;
    .gpkg, .fgb, .shp).

    Returns ``{"fields": n, "area_ha": total, "files": [...], "timings_s": {...}}``.
    """
    how = how or Delineation()
    how.check()
    path, ext, folder = destination(path)
    if raster.scores and how.interior not in raster.class_ids:
        raise InputError(f"{raster.path}: no score band for the interior class {how.interior}")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".geoseg-fields-", dir=workdir or folder))
    try:
        labels = label_fields(raster, how, tmp)
        t1 = time.perf_counter()
        totals = {"fields": 0, "area_ha": 0.0}
        tables = _field_tables(raster.grid, field_reader(raster, labels, how), how, progress,
                               totals)  # fmt: skip
        failed: list[BaseException] = []
        meta = {"collection": collection or path.stem, "datetime": determination_datetime}
        files = write_atomically(path, folder, lambda out: _write_fields(
            out, ext, path.stem, raster.grid, tables, failed, meta), failed)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t2 = time.perf_counter()
    return {**totals, "files": files,
            "timings_s": {"label": t1 - t0, "polygons": t2 - t1, "total": t2 - t0}}  # fmt: skip


#: one batch of final fields: geometries (CRS), ids, areas (m²), perimeters (m)
FieldTable = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _field_tables(grid: GridBox, read: Callable, how: Delineation, progress: bool,
                  totals: dict[str, Any]) -> Iterator[FieldTable]:  # fmt: skip
    area_of, length_of = area_meter(grid), perimeter_meter(grid)
    for geoms, ids in final_polygons(read, grid, how.chunk, 0, how.simplify, progress):
        if not len(geoms):
            continue
        if how.simplify <= 0:
            geoms, ids = canonical(geoms, ids)
            geoms = to_crs(geoms, grid)
        area = area_of(geoms)
        keep = ~(area < how.min_area) if how.min_area > 0 else np.ones(len(geoms), bool)
        geoms, ids, area = geoms[keep], ids[keep], area[keep]
        table = (geoms, ids, area, length_of(geoms))
        totals["fields"] += len(ids)
        totals["area_ha"] += float(np.nansum(area)) / 1e4
        yield table
        del table, geoms


def perimeter_meter(grid: GridBox) -> Callable[[np.ndarray], np.ndarray]:
    """Perimeters (m) of polygons in ``grid.crs``, measured in the local equal-area projection
    that ``geoseg.geometry.area`` uses for ground areas (NaN without a CRS)."""
    if grid.crs is None:
        return lambda geoms: np.full(len(geoms), np.nan)
    to_laea, _ = equal_area_transformer(grid)

    def length(geoms: np.ndarray) -> np.ndarray:
        out = np.empty(len(geoms))
        for s in batches(len(geoms)):
            projected = shapely.transform(geoms[s], lambda xy: np.column_stack(
                to_laea.transform(xy[:, 0], xy[:, 1])))  # fmt: skip
            out[s] = shapely.length(projected)
        return out

    return length


def _schema(ext: str, grid: GridBox, meta: dict[str, Any]) -> Any:
    import pyarrow as pa
    from pyproj import CRS

    fields = [("id", pa.string()), ("area", pa.float32()), ("perimeter", pa.float32()),
              ("determination_method", pa.string())]  # fmt: skip
    if meta["datetime"] is not None:
        fields.append(("determination_datetime", pa.timestamp("ms", tz="UTC")))
    fields.append(("geometry", pa.binary()))
    md = None
    if ext == ".parquet":
        crs = CRS.from_user_input(grid.crs).to_json_dict() if grid.crs else None
        column = {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": crs}
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
        md = {"geo": json.dumps(geo), "fiboa": json.dumps(collection_metadata(meta["collection"]))}
    return pa.schema(fields, metadata=md)


def _batches(tables: Iterable[FieldTable], schema: Any, meta: dict[str, Any],
             failed: list[BaseException]) -> Iterator[Any]:  # fmt: skip
    import pyarrow as pa

    when = meta["datetime"]
    try:
        for geoms, ids, area, perimeter in tables:
            for b in batches(len(geoms)):
                n = len(ids[b])
                cols = [pa.array([str(i) for i in ids[b].tolist()], pa.string()),
                        pa.array((area[b] / 1e4).astype(np.float32), pa.float32()),
                        pa.array(perimeter[b].astype(np.float32), pa.float32()),
                        pa.array(["auto-imagery"] * n, pa.string())]  # fmt: skip
                if when is not None:
                    cols.append(pa.array([when] * n, pa.timestamp("ms", tz="UTC")))
                cols.append(pa.array(shapely.to_wkb(geoms[b]), pa.binary()))
                yield pa.record_batch(cols, schema=schema)
    except BaseException as err:
        failed.append(err)
        raise


def _write_fields(tmp: Path, ext: str, layer: str, grid: GridBox, tables: Iterable[FieldTable],
                  failed: list[BaseException], meta: dict[str, Any]) -> None:  # fmt: skip
    import pyarrow as pa
    import pyogrio

    if meta["datetime"] is not None and meta["datetime"].tzinfo is None:
        meta["datetime"] = meta["datetime"].replace(tzinfo=dt.UTC)
    schema = _schema(ext, grid, meta)
    rows = _batches(tables, schema, meta, failed)
    if ext == ".parquet":
        _write_parquet(tmp, schema, pa.system_memory_pool(), rows)
        return
    pyogrio.write_arrow(pa.RecordBatchReader.from_batches(schema, rows), tmp, layer=layer,
                        driver=FORMATS[ext][1], geometry_name="geometry", geometry_type="Polygon",
                        crs=_ogr_crs(grid), encoding="UTF-8" if ext == ".shp" else None)  # fmt: skip


__all__ = ["FTW_BOUNDARY", "FTW_INTERIOR", "Delineation", "delineate_fields", "grow_into",
           "label_fields", "perimeter_meter"]  # fmt: skip
