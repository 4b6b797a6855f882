"""Streamed vectorisation: :func:`polygonize_to_file` writes polygons as they become final.

Memory stays O(chunk + pieces of polygons cut by chunk lines), whatever the number of
polygons: the polygons of a chunk that touch none of its interior borders are final and
appended to the file at once; the others are kept as pieces, and merged and appended as soon as
the chunk rows they may extend into are done (about one chunk row of pieces is held, plus the
polygons that span further down). Rows reach the file as Arrow record batches, in one pass:
GeoParquet through pyarrow (buffered into row groups), the OGR formats through
``pyogrio.write_arrow``.

Without ``simplify`` the polygon set (geometry, class, area) is identical to ``polygonize``'s
for any chunk size. The row *order* differs (``polygonize`` sorts all polygons in raster order):
chunk by chunk in row-major order, each chunk's own polygons in raster order, and after each
chunk row the polygons merged across chunk lines that it completed, in raster order. A
FlatGeobuf's spatial index reorders rows anyway (Hilbert curve).

With ``simplify``, each chunk's coverage is simplified on its own, with every pixel corner on
its interior chunk lines held fixed (the scene's edge and nodata boundaries are simplified as in
``polygonize``): pieces of one polygon still fit exactly when merged and neighbours keep shared
edges (no gap, no overlap), but vertices stay on chunk lines where boundaries cross or follow
them, so the result depends on the chunk size and has somewhat more vertices than
``polygonize``'s whole-coverage simplification.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

from geoseg.config import NODATA
from geoseg.geometry.area import area_meter, batches
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import BlockReader
from geoseg.outputs.polygonize import (
    canonical,
    check_chunk,
    class_names,
    final_polygons,
    to_crs,
    with_areas,
)
from geoseg.outputs.write import DATASET_OPTIONS, FORMATS, destination, write_atomically
from geoseg.scene.classes import ClassInfo

#: Streamed GeoParquet: chunks are buffered until they reach this many polygons or bytes and
#: written as one row group, so sparse chunks do not make tiny row groups while the buffer
#: stays small (a 2048² chunk of a noisy model is ~20k polygons, ~30 MB of WKB).
_PARQUET_ROW_GROUP = (65_536, 16 * 2**20)

#: (geometries in CRS coordinates, class ids, ground areas) of a batch of final polygons
Table = tuple[np.ndarray, np.ndarray, np.ndarray]


def polygonize_to_file(
    read_block: BlockReader,
    grid: GridBox,
    classes: Sequence[ClassInfo],
    path: str | os.PathLike[str],
    *,
    chunk: int = 2048,
    nodata: int = NODATA,
    min_area: float = 0.0,
    simplify: float = 0.0,
    layer: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Polygons of equal class ids (4-connected), streamed to a file chunk by chunk.

    Same polygons and fields as ``polygonize`` (which see for the arguments), in memory that
    does not grow with their number; row order and simplification as the module says. The
    format follows the extension (.gpkg, .shp, .parquet, .fgb); the file is written under a
    temporary name and renamed when complete (nothing is left behind on error), replacing an
    existing file as a whole.

    Args:
        path: destination file.
        layer: layer name (GeoPackage, FlatGeobuf); defaults to the file's stem.

    Returns:
        ``{"polygons": n, "polygons_per_class": {id: n}, "area_m2_per_class": {id: m²},
        "files": [paths written]}`` (class ids as ``int``; areas NaN without a CRS).

    Raises:
        OutputError: unknown extension or unwritable destination (checked before any work).
    """
    check_chunk(chunk)
    path, ext, folder = destination(path)
    layer = layer or path.stem
    totals = _Totals()
    tables = _tables(read_block, grid, chunk, nodata, min_area, simplify, progress, totals)
    failed: list[BaseException] = []
    written = write_atomically(
        path, folder, lambda tmp: _write_stream(tmp, ext, layer, grid, classes, tables, failed), failed,
        need=grid.height * grid.width,  # rough: a noisy map gives ~4 bytes a pixel, a clean one far less
    )
    return totals.summary(written)


@dataclass
class _Totals:
    """Polygons and ground area per class id, summed as the tables go to the file."""

    counts: dict[int, int] = field(default_factory=dict)
    areas: dict[int, float] = field(default_factory=dict)

    def add(self, ids: np.ndarray, area: np.ndarray) -> None:
        uniq, inverse, n = np.unique(ids, return_inverse=True, return_counts=True)
        total = np.bincount(inverse.reshape(-1), area, minlength=len(uniq))
        for cid, k, a in zip(uniq.tolist(), n.tolist(), total.tolist(), strict=True):
            self.counts[cid] = self.counts.get(cid, 0) + k
            self.areas[cid] = self.areas.get(cid, 0.0) + a

    def summary(self, files: list[Path]) -> dict[str, Any]:
        return {
            "polygons": sum(self.counts.values()),
            "polygons_per_class": dict(sorted(self.counts.items())),
            "area_m2_per_class": dict(sorted(self.areas.items())),
            "files": files,
        }


def _tables(
    read_block: BlockReader, grid: GridBox, chunk: int, nodata: int, min_area: float,
    simplify: float, progress: bool, totals: _Totals,
) -> Iterator[Table]:  # fmt: skip
    """Final polygons in CRS coordinates with their class ids and ground areas, as they come;
    each table is added to ``totals`` as it is yielded."""
    area_of = area_meter(grid)
    for geoms, ids in final_polygons(read_block, grid, chunk, nodata, simplify, progress):
        if simplify <= 0:  # pixel space
            geoms, ids = canonical(geoms, ids)
            geoms = to_crs(geoms, grid)
        table = with_areas(geoms, ids, area_of, min_area)
        del geoms, ids
        totals.add(*table[1:])
        yield table
        del table  # not held while the next chunk is computed


# --------------------------------------------------------------------------------------------
# writing the stream


def _write_stream(
    tmp: Path, ext: str, layer: str, grid: GridBox, classes: Sequence[ClassInfo],
    tables: Iterable[Table], failed: list[BaseException],
) -> None:  # fmt: skip
    """Write (geometries, class ids, areas) batches to ``tmp`` as they come, in one pass;
    errors raised by ``tables`` are recorded in ``failed``."""
    import pyarrow as pa

    schema = _arrow_schema(ext, grid)
    # arrow's default allocator (mimalloc/jemalloc) keeps freed chunks' buffers: measured ~90 MB
    # more peak memory per 2048² noisy chunk than with the system allocator
    pool = pa.system_memory_pool()
    rows = _record_batches(tables, classes, schema, pool, failed)
    if ext == ".parquet":
        _write_parquet(tmp, schema, pool, rows)
    else:
        _write_ogr_stream(tmp, ext, layer, grid, schema, rows)


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


def _record_batches(
    tables: Iterable[Table], classes: Sequence[ClassInfo], schema: Any, pool: Any,
    failed: list[BaseException],
) -> Iterator[Any]:  # fmt: skip
    """The tables as small Arrow record batches (WKB and arrow copies stay small); an error
    raised while producing them is recorded in ``failed`` before it propagates."""
    import pyarrow as pa

    try:
        for geoms, ids, area in tables:
            for b in batches(len(geoms)):
                kinds = shapely.get_type_id(geoms[b])
                if not (kinds == shapely.GeometryType.POLYGON).all():  # never produced
                    raise RuntimeError(f"unexpected geometry types {set(kinds.tolist())}")
                yield pa.record_batch(
                    [
                        pa.array(ids[b].astype(np.int32), memory_pool=pool),
                        pa.array(class_names(ids[b], classes), pa.string(), memory_pool=pool),
                        pa.array(area[b], pa.float64(), memory_pool=pool),
                        pa.array(shapely.to_wkb(geoms[b]), pa.binary(), memory_pool=pool),
                    ],
                    schema=schema,
                )
            del geoms, ids, area
    except BaseException as err:
        failed.append(err)
        raise


def _write_parquet(tmp: Path, schema: Any, pool: Any, rows: Iterable[Any]) -> None:
    """GeoParquet: record batches buffered into row groups of about ``_PARQUET_ROW_GROUP``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(tmp, schema, memory_pool=pool) as writer:
        pending: list[pa.RecordBatch] = []
        for batch in rows:
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


def _write_ogr_stream(
    tmp: Path, ext: str, layer: str, grid: GridBox, schema: Any, rows: Iterable[Any]
) -> None:
    """GeoPackage, Shapefile (UTF-8) or FlatGeobuf through ``pyogrio.write_arrow``."""
    import pyarrow as pa
    import pyogrio

    crs = _ogr_crs(grid)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # no CRS: none
        pyogrio.write_arrow(
            pa.RecordBatchReader.from_batches(schema, rows), tmp, layer=layer,
            driver=FORMATS[ext][1], geometry_name="geometry", geometry_type="Polygon", crs=crs,
            encoding="UTF-8" if ext == ".shp" else None,
            dataset_options=DATASET_OPTIONS.get(FORMATS[ext][1]),
        )  # fmt: skip


def _ogr_crs(grid: GridBox) -> str | None:
    """The CRS as pyogrio.write_dataframe (hence write_vectors) writes it: EPSG code or WKT1."""
    if not grid.crs:
        return None
    pcrs = CRS.from_user_input(grid.crs)
    epsg = pcrs.to_epsg()
    return f"EPSG:{epsg}" if epsg else pcrs.to_wkt("WKT1_GDAL")
