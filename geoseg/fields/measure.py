"""Per-field measurement: exactextract over one batch of fields and the raster window they
cover (class fractions, valid-pixel fraction, ground area; index statistics on the scene's own
grid), one Arrow table per batch. :func:`geoseg.fields.stats.field_stats` streams the batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.fields.raster import ClassRaster
from geoseg.geometry.area import area_meter
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo


@dataclass
class Progress:
    """Counts so far: fields measured, those outside the raster, those without a valid pixel,
    blocks done; and seconds per phase."""

    fields: int = 0
    outside: int = 0
    nodata: int = 0
    blocks: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Measure:
    """exactextract over one batch of fields and the raster window they cover; ``percentiles``
    of each index of ``scene`` (a Scene with derived index modalities, or None)."""

    def __init__(self, classes: ClassRaster, table: list[ClassInfo], scene: Any,
                 percentiles: tuple[float, ...], info: dict[str, Any]) -> None:  # fmt: skip
        self.classes, self.table, self.scene, self.percentiles = classes, table, scene, percentiles
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
            cols += [f"{name}_p{q:g}" for q in self.percentiles]
        return cols

    def measure(self, attrs: Any, wkb: Any, *, outside: bool, prog: Progress) -> Any:
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

        from geoseg.fields.exact import row_writer, wkb_source

        window = _window(self.grid, local)
        if window is None:
            status[:] = "outside"
            return
        left, bottom, right, top = self.grid.window(window).bounds
        cls = NumPyRasterSource(self.classes.read(window), left, bottom, right, top,
                                nodata=NODATA, name="classes", srs_wkt=self.wkt)  # fmt: skip
        ops = [Operation("count", "count", cls), Operation("unique", "unique", cls),
               Operation("frac", "frac", cls)]  # fmt: skip
        rows = exact_extract([cls], wkb_source(shapely.to_wkb(local), self.wkt), ops,
                             include_cols=["k"], output=row_writer())  # fmt: skip
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

        from geoseg.fields.exact import row_writer, wkb_source

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
                    for q in self.percentiles]  # fmt: skip
        del arrays, valid
        rows = exact_extract(rasters, wkb_source(shapely.to_wkb(geoms), wkt), ops,
                             include_cols=["k"], output=row_writer())  # fmt: skip
        for k, props in rows:
            for name, _, _ in self.indices:
                for suffix in ("mean", "std", *(f"p{q:g}" for q in self.percentiles)):
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
