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
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.fields.raster import ClassRaster
from geoseg.fields.source import OGRFields, ParquetFields, open_fields
from geoseg.geometry.area import area_meter
from geoseg.geometry.window import PixelWindow
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


@dataclass
class _Progress:
    fields: int = 0
    outside: int = 0
    nodata: int = 0
    blocks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


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
    prog = _Progress()
    fids, blocks = _assign_blocks(source, opts, classes)
    prog.seconds["assign"] = time.perf_counter() - t0
    meta = _Measure(classes, table, scene, opts, info)

    def tables() -> Iterator[Any]:
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

    failed: list[BaseException] = []
    files = write_atomically(path, folder, lambda tmp: _write(tmp, ext, path.stem, tables(),
                                                              info, failed), failed)  # fmt: skip
    total = time.perf_counter() - t0
    prog.seconds["total"] = total
    return {"fields": prog.fields, "outside": prog.outside, "nodata": prog.nodata,
            "blocks": prog.blocks, "seconds": prog.seconds,
            "fields_per_s": prog.fields / total if total > 0 else None, "files": files}  # fmt: skip


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


class _Measure:
    """exactextract over one batch of fields and the raster window they cover."""

    def __init__(self, classes: ClassRaster, table: list[ClassInfo], scene: Any,
                 opts: StatsOptions, info: dict[str, Any]) -> None:  # fmt: skip
        self.classes, self.table, self.scene, self.opts = classes, table, scene, opts
        self.grid = classes.grid
        self.crs = CRS.from_user_input(info["crs"])
        self.same_crs = self.crs == CRS.from_user_input(self.grid.crs)
        self.to_raster = Transformer.from_crs(self.crs, self.grid.crs, always_xy=True)
        self.area_of = area_meter(self.grid)
        self.wkt = self.grid.crs.to_wkt()
        self.indices: list[tuple[str, str, int]] = []  # (index, modality, band)
        if scene is not None:
            if scene.indices is None:
                raise InputError("index=: the scene has no spectral index; name one, e.g. "
                                 "index=ndvi")  # fmt: skip
            for mod, names in scene.indices.names.items():
                self.indices += [(n, mod, k) for k, n in enumerate(names)]
            scene_crs = CRS.from_user_input(scene.grid.crs)
            self.scene_same_crs = scene_crs == CRS.from_user_input(self.grid.crs)
            self.to_scene = Transformer.from_crs(self.grid.crs, scene.grid.crs, always_xy=True)
        self.columns = self._columns()

    def _columns(self) -> list[str]:
        cols = ["status", "area_m2", "valid_fraction"]
        cols += [f"frac_{c.name}" for c in self.table]
        for name, _, _ in self.indices:
            cols += [f"{name}_mean", f"{name}_std"]
            cols += [f"{name}_p{q:g}" for q in self.opts.percentiles]
        return cols

    def measure(self, attrs: Any, wkb: Any, *, outside: bool, prog: _Progress) -> Any:
        """The batch's attributes, statistics and geometry as one Arrow table."""
        import pyarrow as pa

        geoms = shapely.from_wkb(wkb)
        n = len(geoms)
        stats = {c: np.full(n, np.nan) for c in self.columns if c != "status"}
        status = np.full(n, "outside" if outside else "ok", dtype=object)
        local = geoms if self.same_crs or not n else shapely.transform(
            geoms, lambda xy: np.column_stack(self.to_raster.transform(xy[:, 0], xy[:, 1])))
        stats["area_m2"][:] = self.area_of(local)
        if not outside and n:
            self._fill(local, stats, status)
        prog.fields += n
        prog.outside += int((status == "outside").sum())
        prog.nodata += int((status == "nodata").sum())
        cols = {c: attrs.column(c) for c in attrs.column_names}
        cols["status"] = pa.array(status.tolist(), pa.string())
        for c, v in stats.items():
            cols[c] = pa.array(v, pa.float64())
        cols["geometry"] = wkb
        return pa.table(cols)

    def _fill(self, local: np.ndarray, stats: dict[str, np.ndarray], status: np.ndarray) -> None:
        """exactextract over the window of ``local`` (the fields in the raster's CRS)."""
        from exactextract import exact_extract
        from exactextract.operation import Operation
        from exactextract.raster import NumPyRasterSource

        window = _window(self.grid, local)
        if window is None:
            status[:] = "outside"
            return
        left, bottom, right, top = self.grid.window(window).bounds
        cls = NumPyRasterSource(self.classes.read(window), left, bottom, right, top,
                                nodata=NODATA, name="classes", srs_wkt=self.wkt)  # fmt: skip
        ops = [Operation("count", "count", cls), Operation("unique", "unique", cls),
               Operation("frac", "frac", cls)]  # fmt: skip
        rows = exact_extract([cls], _wkb_source(shapely.to_wkb(local), self.wkt), ops,
                             include_cols=["k"], output=_row_writer())  # fmt: skip
        cell = abs(self.grid.transform.determinant)
        full = shapely.area(local) / cell
        index_of = {c.id: f"frac_{c.name}" for c in self.table}
        on_raster = shapely.intersects(local, shapely.box(*self.grid.bounds))
        for k, props in rows:
            count = float(props.get("count") or 0.0)
            # exact coverage sums may pass 1 by float rounding (~1e-8)
            stats["valid_fraction"][k] = min(count / full[k], 1.0) if full[k] > 0 else np.nan
            if count <= 0:
                status[k] = "nodata" if on_raster[k] else "outside"
                continue
            for col in index_of.values():
                stats[col][k] = 0.0
            for cid, frac in zip(np.asarray(props["unique"]).tolist(),
                                 np.asarray(props["frac"]).tolist(), strict=True):  # fmt: skip
                col = index_of.get(int(cid))
                if col is not None:
                    stats[col][k] = frac
        if self.indices:
            self._index_stats(local, stats)

    def _index_stats(self, local: np.ndarray, stats: dict[str, np.ndarray]) -> None:
        """Index statistics over the scene's own grid (any CRS), its indices computed on the
        window the fields cover; pixels invalid in the scene are left out."""
        from exactextract import exact_extract
        from exactextract.operation import Operation
        from exactextract.raster import NumPyRasterSource

        grid = self.scene.grid
        geoms = local if self.scene_same_crs else shapely.transform(
            local, lambda xy: np.column_stack(self.to_scene.transform(xy[:, 0], xy[:, 1])))
        window = _window(grid, geoms)
        if window is None:
            return
        left, bottom, right, top = grid.window(window).bounds
        wkt = grid.crs.to_wkt()
        arrays, valid = self.scene.read(window)
        rasters, ops = [], []
        for name, mod, band in self.indices:
            values = np.where(valid, arrays[mod][band], np.float32(np.nan))
            src = NumPyRasterSource(values, left, bottom, right, top, nodata=None, name=name,
                                    srs_wkt=wkt)  # fmt: skip
            rasters.append(src)
            ops += [Operation("mean", f"{name}_mean", src), Operation("stdev", f"{name}_std", src)]
            ops += [Operation("quantile", f"{name}_p{q:g}", src, None, {"q": q / 100})
                    for q in self.opts.percentiles]  # fmt: skip
        del arrays, valid
        rows = exact_extract(rasters, _wkb_source(shapely.to_wkb(geoms), wkt), ops,
                             include_cols=["k"], output=_row_writer())  # fmt: skip
        for k, props in rows:
            for name, _, _ in self.indices:
                for suffix in ("mean", "std", *(f"p{q:g}" for q in self.opts.percentiles)):
                    v = _value(props, f"{name}_{suffix}")
                    stats[f"{name}_{suffix}"][k] = np.nan if v is None else float(v)

def _value(props: dict[str, Any], key: str) -> Any:
    """A result by its field name (exactextract appends ``_<q>`` to quantiles' names)."""
    if key in props:
        return props[key]
    return next((v for k, v in props.items() if k.startswith(key + "_")), None)


def _window(grid: Any, geoms: np.ndarray) -> PixelWindow | None:
    """The pixels of ``grid`` covering these geometries (in its CRS), clipped to the grid."""
    bounds = shapely.bounds(geoms)
    x0, y0 = np.nanmin(bounds[:, :2], axis=0)
    x1, y1 = np.nanmax(bounds[:, 2:], axis=0)
    cols, rows = ~grid.transform * (np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
    c0, c1 = int(np.floor(cols.min())) - 1, int(np.ceil(cols.max())) + 1
    r0, r1 = int(np.floor(rows.min())) - 1, int(np.ceil(rows.max())) + 1
    return PixelWindow(r0, r1, c0, c1).intersection(PixelWindow(0, grid.height, 0, grid.width))


# --------------------------------------------------------------------------------------------
# exactextract glue: WKB features in, plain rows out (its GeoPandas source goes through
# GeoJSON text feature by feature, ~10x slower)


@functools.cache
def _feature_types() -> tuple[type, type, type]:
    from exactextract._exactextract import Feature
    from exactextract.feature import FeatureSource
    from exactextract.writer import Writer

    class WKBFeature(Feature):
        def __init__(self, k: int | None = None, wkb: bytes | None = None) -> None:
            Feature.__init__(self)
            self.k, self.wkb, self.props = k, wkb, {}

        def geometry(self) -> bytes | None:
            return self.wkb

        def set_geometry(self, wkb: bytes | None) -> None:
            self.wkb = wkb

        def set_geometry_format(self) -> str:
            return "wkb"

        def get(self, name: str) -> Any:
            return self.k if name == "k" else self.props[name]

        def set(self, name: str, value: Any) -> None:
            if name == "k":
                self.k = value
            else:
                self.props[name] = value

        def fields(self) -> list[str]:
            return ["k", *self.props]

    class WKBSource(FeatureSource):
        def __init__(self, wkbs: np.ndarray, srs_wkt: str) -> None:
            super().__init__()
            self.wkbs, self.wkt = wkbs, srs_wkt

        def count(self) -> int:
            return len(self.wkbs)

        def __iter__(self) -> Iterator[Any]:
            for k, w in enumerate(self.wkbs):
                yield WKBFeature(k, w)

        def srs_wkt(self) -> str:
            return self.wkt

    class RowWriter(Writer):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, dict[str, Any]]] = []

        def add_operation(self, op: Any) -> None:
            pass

        def write(self, feature: Any) -> None:
            f = WKBFeature()
            feature.copy_to(f)
            self.rows.append((int(f.k), f.props))

        def features(self) -> list[tuple[int, dict[str, Any]]]:
            return self.rows

    return WKBFeature, WKBSource, RowWriter


def _wkb_source(wkbs: np.ndarray, srs_wkt: str) -> Any:
    return _feature_types()[1](wkbs, srs_wkt)


def _row_writer() -> Any:
    return _feature_types()[2]()


# --------------------------------------------------------------------------------------------
# writing


def _write(tmp: Path, ext: str, layer: str, tables: Iterator[Any], info: dict[str, Any],
           failed: list[BaseException]) -> None:  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq
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
        geo = {"version": "1.1.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": [],
                                        "crs": crs.to_json_dict()}}}  # fmt: skip
        schema = schema.with_metadata({"geo": json.dumps(geo)})
        with pq.ParquetWriter(tmp, schema) as writer:
            for b in batches():
                writer.write_batch(b.replace_schema_metadata(schema.metadata))
        return
    epsg = crs.to_epsg()
    pyogrio.write_arrow(pa.RecordBatchReader.from_batches(schema, batches()), tmp, layer=layer,
                        driver=FORMATS[ext][1], geometry_name="geometry",
                        geometry_type="Unknown", crs=f"EPSG:{epsg}" if epsg else crs.to_wkt(),
                        encoding="UTF-8" if ext == ".shp" else None)  # fmt: skip


__all__ = ["StatsOptions", "field_stats"]
