"""Per-field statistics: class fractions, valid-pixel fraction, ground area and spectral-index
statistics of every field polygon, with exact pixel coverage (exactextract), streamed.

Memory does not grow with the number of fields nor with the raster: the fields are streamed
twice from their file. The first pass reads only their bounding boxes and files each field
under the raster block (``block`` pixels square) holding the centre of its box (fields whose
box misses the raster are reported as ``outside``). The second pass reads the fields of one
block at a time (by feature id) together with the raster window they cover (classes, and the
scene's index bands computed window by window), runs exactextract on that window, and appends
the rows to the output file. A field crossing block borders belongs to one block and its
window covers all of it: it is counted once, with the same numbers as on the whole raster.

Output columns: the field's own attributes, ``status`` (ok, nodata, outside), ``area_m2``
(ground area), ``valid_fraction`` (share of the field's area on valid raster pixels),
``frac_<class>`` (share of each class in the valid area: they sum to 1), and per index
``<index>_mean``, ``_std``, ``_p<q>``; the geometry stays in the fields' CRS. Rows come block by
block, not in the input order.

This module assigns the blocks, streams them and writes the file; a batch is measured by
:mod:`geoseg.fields.measure` (its exactextract glue: :mod:`geoseg.fields.exact`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.fields.measure import Measure, Progress
from geoseg.fields.raster import ClassRaster
from geoseg.fields.source import OGRFields, ParquetFields, open_fields
from geoseg.outputs.write import FORMATS, destination, write_atomically
from geoseg.scene.classes import ClassInfo

#: fields read and measured together (one exactextract call), at most
BATCH = 20_000


@dataclass(frozen=True)
class StatsOptions:
    """What is measured, and how the work is cut."""

    percentiles: tuple[float, ...] = (10.0, 50.0, 90.0)
    block: int = 2048
    layer: str | None = None

    def check(self) -> None:
        """Refuse settings that cannot work, naming the parameter."""
        if self.block < 16:
            raise InputError(f"block={self.block}: give at least 16 pixels")
        bad = [q for q in self.percentiles if not 0 <= q <= 100]
        if bad:
            raise InputError(f"percentiles={bad[0]}: give percentiles between 0 and 100")


def field_stats(
    fields: str | os.PathLike[str],
    classes: ClassRaster,
    out: str | os.PathLike[str],
    *,
    scene: Any = None,
    class_table: Sequence[ClassInfo] | None = None,
    options: StatsOptions | None = None,
) -> dict[str, Any]:
    """Statistics of every field of ``fields`` (any OGR vector file, any CRS) over the class
    raster ``classes`` (and the index bands of ``scene``, a Scene with derived index
    modalities on any grid), written to ``out`` (.parquet: GeoParquet, .gpkg, .fgb, .shp).

    Returns a summary: fields, outside, nodata, blocks, seconds, fields per second, files.
    """
    opts = options or StatsOptions()
    opts.check()
    path, ext, folder = destination(out)
    source = open_fields(fields, opts.layer)
    info = {"crs": source.crs}
    table = list(class_table or classes.classes or _classes_present(classes))
    t0 = time.perf_counter()
    prog = Progress()
    fids, blocks = _assign_blocks(source, opts, classes)
    prog.seconds["assign"] = time.perf_counter() - t0
    meta = Measure(classes, table, scene, opts.percentiles, info)
    failed: list[BaseException] = []
    files = write_atomically(path, folder, lambda tmp: _write(
        tmp, ext, path.stem, _tables(source, fids, blocks, meta, prog), info, failed), failed)  # fmt: skip
    total = time.perf_counter() - t0
    prog.seconds["total"] = total
    return {"fields": prog.fields, "outside": prog.outside, "nodata": prog.nodata,
            "blocks": prog.blocks, "seconds": prog.seconds,
            "fields_per_s": prog.fields / total if total > 0 else None, "files": files}  # fmt: skip


def _tables(source: OGRFields | ParquetFields, fids: np.ndarray, blocks: np.ndarray,
            meta: Measure, prog: Progress) -> Iterator[Any]:  # fmt: skip
    """The fields measured block by block, in batches of at most ``BATCH``: one Arrow table
    per batch."""
    order = np.argsort(blocks, kind="stable")
    cuts = np.flatnonzero(np.diff(blocks[order])) + 1
    for group in np.split(order, cuts):
        if not len(group):
            continue
        for start in range(0, len(group), BATCH):
            part = np.sort(fids[group[start : start + BATCH]])
            attrs, wkb = source.read(part)
            yield meta.measure(attrs, wkb, outside=bool(blocks[group[0]] < 0), prog=prog)
            del attrs, wkb
        prog.blocks += 1


def _classes_present(classes: ClassRaster) -> list[ClassInfo]:
    """The class ids found in the raster (one pass over its blocks), when no table is given."""
    seen = np.zeros(256, bool)
    for win in classes.grid.chunks(2048):
        seen |= np.bincount(classes.read(win).ravel(), minlength=256).astype(bool)
    seen[NODATA] = False
    return [ClassInfo(id=int(i), name=f"class_{i}") for i in np.flatnonzero(seen)]


def _assign_blocks(source: OGRFields | ParquetFields, opts: StatsOptions,
                   classes: ClassRaster) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Feature ids and block of every field (-1: its box misses the raster), from one pass
    over the fields' bounding boxes."""
    grid = classes.grid
    to_raster = Transformer.from_crs(CRS.from_user_input(source.crs), grid.crs, always_xy=True)
    inv = ~grid.transform
    n_cols = -(-grid.width // opts.block)
    out_fids: list[np.ndarray] = []
    out_blocks: list[np.ndarray] = []
    for fid, wkb in source.boxes():
        x0, y0, x1, y1 = shapely.bounds(shapely.from_wkb(wkb)).T
        # the box's corners and centre in the raster's CRS, then in pixels
        xs = np.stack([x0, x1, x1, x0, (x0 + x1) / 2])
        ys = np.stack([y0, y0, y1, y1, (y0 + y1) / 2])
        xs, ys = to_raster.transform(xs, ys)
        cols, rows = inv * (xs, ys)
        inside = ((cols[:4].max(0) > 0) & (cols[:4].min(0) < grid.width)
                  & (rows[:4].max(0) > 0) & (rows[:4].min(0) < grid.height))  # fmt: skip
        inside &= np.isfinite(cols).all(0) & np.isfinite(rows).all(0)
        c = np.clip(np.nan_to_num(cols[4]), 0, grid.width - 1).astype(np.int64) // opts.block
        r = np.clip(np.nan_to_num(rows[4]), 0, grid.height - 1).astype(np.int64) // opts.block
        out_fids.append(fid)
        out_blocks.append(np.where(inside, r * n_cols + c, -1))
    if not out_fids:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_fids), np.concatenate(out_blocks)


def _write(tmp: Path, ext: str, layer: str, tables: Iterator[Any], info: dict[str, Any],
           failed: list[BaseException]) -> None:  # fmt: skip
    """Write the tables into ``tmp`` (``ext``'s format), each error on reading them also into
    ``failed``; no table at all is refused."""
    import pyarrow as pa
    import pyogrio

    crs = CRS.from_user_input(info["crs"])
    try:
        first = next(tables)
    except StopIteration:
        first = None
    except BaseException as err:
        failed.append(err)
        raise
    if first is None:
        raise InputError(f"{tmp.name}: the fields file has no feature; give a layer with fields")
    schema = first.schema

    def batches() -> Iterator[Any]:
        try:
            yield from first.cast(schema).to_batches()
            for t in tables:
                yield from t.cast(schema).to_batches()
        except BaseException as err:
            failed.append(err)
            raise

    if ext == ".parquet":
        _write_parquet(tmp, schema, batches(), crs)
        return
    epsg = crs.to_epsg()
    pyogrio.write_arrow(pa.RecordBatchReader.from_batches(schema, batches()), tmp, layer=layer,
                        driver=FORMATS[ext][1], geometry_name="geometry",
                        geometry_type="Unknown", crs=f"EPSG:{epsg}" if epsg else crs.to_wkt(),
                        encoding="UTF-8" if ext == ".shp" else None)  # fmt: skip


def _write_parquet(tmp: Path, schema: Any, batches: Iterator[Any], crs: CRS) -> None:
    """GeoParquet: the batches under ``schema``, with the ``geo`` metadata of WKB geometry."""
    import pyarrow.parquet as pq

    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": [],
                                    "crs": crs.to_json_dict()}}}  # fmt: skip
    schema = schema.with_metadata({"geo": json.dumps(geo)})
    with pq.ParquetWriter(tmp, schema) as writer:
        for b in batches:
            writer.write_batch(b.replace_schema_metadata(schema.metadata))


__all__ = ["StatsOptions", "field_stats"]
