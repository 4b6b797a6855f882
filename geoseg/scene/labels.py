"""Reference labels on a scene's grid, window by window: class rasters or burnt vector layers.

Labels come out as uint8 *indices into the class table* (the model's output channels), with
255 where a pixel is unlabelled. Raster labels are warped onto the grid by nearest neighbour
(only the window is read); vector labels are reprojected once, and each window is burnt with
GDAL's rasteriser (``rasterio.features.rasterize``: pixel centres, or all touched; later
features over earlier ones), so windows tile exactly into the whole-scene rasterisation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import rasterio
from pydantic import Field
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg._files import is_local
from geoseg.config import IGNORE, StrictModel
from geoseg.errors import InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo

if TYPE_CHECKING:  # the catalog's label entry; catalog sits above scene
    from geoseg.catalog.spec import LabelSpec


class VectorLabels(StrictModel):
    """How polygon (or point/line) labels are burnt onto the scene grid."""

    background: int | None = Field(
        None, ge=0, le=254, description="class id of labelled-area pixels outside every polygon "
        "(default: they are unlabelled and ignored)")
    extent: Literal["scene", "labels"] = Field(
        "scene", description="labelled area for background: the whole scene, or the bounds of "
        "the label layer (pixels beyond them are ignored)")
    buffer: float = Field(0.0, ge=0, description="buffer of points/lines in scene CRS units")
    all_touched: bool = Field(False, description="GDAL all_touched (default: pixel centres)")


def _overlaps(bounds: Sequence[float], grid: GridBox) -> bool:
    left, bottom, right, top = bounds
    gl, gb, gr, gt = grid.bounds
    return left < gr and right > gl and bottom < gt and top > gb


class ClassTable:
    """Class ids/names/colours -> index lookups, with errors naming the file."""

    def __init__(self, classes: Sequence[ClassInfo]):
        self.classes = list(classes)
        self.by_id = {c.id: i for i, c in enumerate(self.classes)}
        self.by_name = {c.name.lower(): i for i, c in enumerate(self.classes)}
        self.by_color = {c.color.lower(): i for i, c in enumerate(self.classes)}

    def index_of(self, value: Any) -> int | None:
        """Index of a class id (int, integral float, bool, digit string) or name; else None."""
        if isinstance(value, bool | np.bool_):
            value = int(value)
        if isinstance(value, str):
            if value.strip().lower() in self.by_name:
                return self.by_name[value.strip().lower()]
            if value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                return None
        try:
            f = float(value)
        except (TypeError, ValueError):
            return None
        return self.by_id.get(int(f)) if f.is_integer() else None

    def describe(self) -> str:
        """The table as ``id=name, ...`` for error messages."""
        return ", ".join(f"{c.id}={c.name}" for c in self.classes)


class RasterLabels:
    """A class raster (ids, or RGB colours) read on the scene grid."""

    def __init__(self, spec: LabelSpec, grid: GridBox, table: ClassTable):
        self.spec, self.grid, self.table = spec, grid, table
        self.path = spec.path
        if is_local(self.path) and not os.path.exists(self.path):
            raise InputError(f"{self.path}: label raster not found; fix the labels path")
        with rasterio.open(self.path) as ds:
            need = 3 if spec.encoding == "rgb" else spec.band
            if ds.count < need:
                raise InputError(f"{self.path}: has {ds.count} band(s), labels need band {need}; "
                                 "fix band: or encoding:")  # fmt: skip
            if ds.crs is None:
                raise InputError(f"{self.path}: label raster has no CRS; assign the scene's "
                                 f"(gdal_edit.py -a_srs EPSG:XXXX {self.path})")  # fmt: skip
            self.aligned = GridBox.from_dataset(ds).same_grid(grid)
            bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
            self.ignore = spec.ignore if spec.ignore is not None else ds.nodata
            self.has_nodata = ds.nodata is not None
        if not _overlaps(bounds, grid):
            raise InputError(f"{self.path}: labels do not overlap the scene (bounds "
                             f"{tuple(round(b, 2) for b in bounds)} vs scene "
                             f"{tuple(round(b, 2) for b in grid.bounds)}); give labels of the "
                             "same area")  # fmt: skip

    def read(self, window: PixelWindow) -> np.ndarray:
        """Class indices of ``window`` of the scene grid (255 where unlabelled or outside)."""
        gdal_window = Window(window.c0, window.r0, window.width, window.height)
        bands = [1, 2, 3] if self.spec.encoding == "rgb" else [self.spec.band]
        with rasterio.open(self.path) as src:
            if self.aligned:
                data = src.read(bands, window=gdal_window, boundless=True, fill_value=0)
                inside = src.dataset_mask(window=gdal_window, boundless=True) > 0 if (
                    self.has_nodata) else _inside(src, window)
            else:
                g = self.grid
                extra = {} if self.has_nodata else {"add_alpha": True}
                with WarpedVRT(src, crs=g.crs, transform=g.transform, width=g.width,
                               height=g.height, resampling=Resampling.nearest, **extra) as vrt:
                    data = vrt.read(bands, window=gdal_window)
                    inside = vrt.dataset_mask(window=gdal_window) > 0
        out = self._map(data)
        out[~inside] = IGNORE
        return out

    def _map(self, data: np.ndarray) -> np.ndarray:
        if self.spec.encoding == "rgb":
            rgb = data.astype(np.uint32)
            packed = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
            keys = {int(k[1:], 16): i for k, i in self.table.by_color.items()}
            return _lookup(packed, keys, None, self.path, "colours", self.table)
        keys = {c.id: i for i, c in enumerate(self.table.classes)}
        return _lookup(data[0], keys, self.ignore, self.path, "values", self.table)


def _inside(src: Any, window: PixelWindow) -> np.ndarray:
    """Pixels of the window that lie inside the raster (boundless reads pad outside it)."""
    rows = np.arange(window.r0, window.r1)[:, None]
    cols = np.arange(window.c0, window.c1)[None, :]
    return (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)


def _lookup(values: np.ndarray, keys: dict[int, int], ignore: float | None, path: str,
            what: str, table: ClassTable) -> np.ndarray:  # fmt: skip
    """Map raw label values to class indices; values outside the table are an error."""
    out = np.full(values.shape, IGNORE, np.uint8)
    uniq = np.unique(values)
    bad = []
    for v in uniq:
        if ignore is not None and (v == ignore or (np.isnan(ignore) and np.isnan(v))):
            continue
        fv = float(v)
        idx = keys.get(int(fv)) if fv.is_integer() else None
        if idx is None:
            bad.append(f"#{int(fv):06x}" if what == "colours" else _fmt(fv))
            continue
        out[values == v] = idx
    if bad:
        hint = "add them to the class table or set ignore:" if what == "values" else (
            "add their colours to the class table")  # fmt: skip
        raise InputError(f"{path}: label {what} {bad[:8]} are not in the class table "
                         f"({table.describe()}); {hint}")  # fmt: skip
    return out


def _fmt(v: float) -> int | float:
    return int(v) if v.is_integer() else v


class VectorLabelsSource:
    """Polygons (points/lines buffered) with a class attribute, burnt window by window."""

    def __init__(self, spec: LabelSpec, grid: GridBox, table: ClassTable, options: VectorLabels):
        from shapely import STRtree

        self.spec, self.grid, self.table, self.options = spec, grid, table, options
        self.path = spec.path
        self.geoms, self.values, bounds = self._burnable(self._read_layer())
        if not len(self.geoms) or not _overlaps(bounds, grid):
            raise InputError(f"{self.path}: labels do not overlap the scene (bounds "
                             f"{tuple(round(float(b), 2) for b in bounds)} in the scene CRS vs "
                             f"{tuple(round(b, 2) for b in grid.bounds)}); give labels of the "
                             "same area")  # fmt: skip
        self.bounds = tuple(float(b) for b in self.geoms_bounds())
        self.tree = STRtree(self.geoms)
        self.fill = self._background()

    def _read_layer(self) -> Any:
        """The label layer as a GeoDataFrame that has a CRS (errors name the file)."""
        import pyogrio

        if is_local(self.path) and not os.path.exists(self.path):
            raise InputError(f"{self.path}: label file not found; fix the labels path")
        try:
            df = pyogrio.read_dataframe(self.path, layer=self.spec.layer)
        except Exception as exc:  # pyogrio raises several unrelated types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{self.path}: cannot be read as vectors ({detail}); replace the "
                             "file or fix its path/layer") from None  # fmt: skip
        if df.crs is None:
            raise InputError(f"{self.path}: label layer has no CRS; define it (e.g. ogr2ogr "
                             "-a_srs EPSG:XXXX)")  # fmt: skip
        return df

    def _burnable(self, df: Any) -> tuple[np.ndarray, np.ndarray, Sequence[float]]:
        """Geometries in the scene CRS (buffered, non-empty), their class indices, and the
        bounds of the features that have a class."""
        values = self._class_indices(df)
        keep = values >= 0
        df = df[keep].to_crs(self.grid.crs)
        values = values[keep]
        geoms = df.geometry.values
        if self.options.buffer > 0:
            geoms = geoms.buffer(self.options.buffer)
        nonempty = ~(geoms.is_empty | geoms.isna())
        bounds = df.total_bounds if len(df) else (0.0, 0.0, 0.0, 0.0)
        #: row of each burnt feature in the layer (attributes such as a group field)
        self.rows = np.flatnonzero(keep)[np.asarray(nonempty)]
        return np.asarray(geoms[nonempty]), values[nonempty], bounds

    def _background(self) -> int:
        """Class index of labelled-area pixels outside every feature (255: unlabelled)."""
        background = self.options.background
        if background is None:
            return IGNORE
        idx = self.table.index_of(background)
        if idx is None:
            raise InputError(f"vector_labels.background: class id {background} is not in the "
                             f"class table ({self.table.describe()}); add it")
        return idx

    def geoms_bounds(self) -> np.ndarray:
        """(left, bottom, right, top) of all burnt geometries, in the scene CRS."""
        import shapely

        b = shapely.bounds(self.geoms)
        return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])

    def _class_indices(self, df: Any) -> np.ndarray:
        spec = self.spec
        if spec.class_field is None:
            idx = self.table.index_of(spec.class_value)
            if idx is None:
                raise InputError(f"{self.path}: class_value {spec.class_value} is not in the "
                                 f"class table ({self.table.describe()}); add it")
            return np.full(len(df), idx, np.int64)
        if spec.class_field not in df.columns:
            fields = [c for c in df.columns if c != "geometry"]
            raise InputError(f"{self.path}: no attribute {spec.class_field!r} (it has "
                             f"{fields}); fix class_field")  # fmt: skip
        col = df[spec.class_field]
        out = np.full(len(df), -1, np.int64)
        bad: list[Any] = []
        for value in col.dropna().unique():
            idx = self.table.index_of(value)
            if idx is None:
                bad.append(value.item() if hasattr(value, "item") else value)
            else:
                out[(col == value).to_numpy()] = idx
        if bad:
            raise InputError(f"{self.path}: {spec.class_field} values {sorted(bad, key=str)[:8]} "
                             f"are not in the class table ({self.table.describe()}); add them "
                             "to classes or fix the attribute")  # fmt: skip
        return out

    def read(self, window: PixelWindow) -> np.ndarray:
        """Class indices of ``window`` of the scene grid, burnt from the features it meets."""
        from rasterio.features import rasterize
        from shapely import box

        sub = self.grid.window(window)
        hits = np.sort(self.tree.query(box(*sub.bounds)))  # file order: later features win
        if hits.size:
            out = rasterize(zip(self.geoms[hits], self.values[hits].tolist(), strict=True),
                            out_shape=window.shape, transform=sub.transform, fill=self.fill,
                            all_touched=self.options.all_touched, dtype="uint8")  # fmt: skip
        else:
            out = np.full(window.shape, self.fill, np.uint8)
        if self.options.extent == "labels" and self.fill != IGNORE:
            out[~self._in_extent(sub)] = IGNORE
        return out

    def _in_extent(self, sub: GridBox) -> np.ndarray:
        t = sub.transform
        xs = t.c + t.a * (np.arange(sub.width) + 0.5)
        ys = t.f + t.e * (np.arange(sub.height) + 0.5)
        left, bottom, right, top = self.bounds
        return ((ys >= bottom) & (ys <= top))[:, None] & ((xs >= left) & (xs <= right))[None, :]


LabelSource = RasterLabels | VectorLabelsSource


def open_labels(spec: LabelSpec, grid: GridBox, classes: Sequence[ClassInfo],
                options: VectorLabels | None = None) -> LabelSource:  # fmt: skip
    """The label reader of a scene (raster or vector) on ``grid``."""
    table = ClassTable(classes)
    if spec.kind == "raster":
        return RasterLabels(spec, grid, table)
    return VectorLabelsSource(spec, grid, table, options or VectorLabels())
