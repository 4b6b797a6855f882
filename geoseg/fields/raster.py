"""Class rasters as field tools read them: a class COG, a run folder, or class probabilities.

:func:`open_class_raster` gives the raster's grid and a block reader of class ids (uint8,
:data:`~geoseg.config.NODATA` where the raster has no data). The file's nodata tag can be
overridden: FTW's own masks tag 0 as nodata although 0 is their background class
(``nodata="none"`` reads every pixel). A multi-band raster is read as per-class scores
(geoseg's probability COG, or any tool's): the class of a pixel is the band with the highest
score (band ``k`` holds class ``k - 1`` unless ``class_ids`` says otherwise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo


@dataclass(frozen=True)
class ClassRaster:
    """A class raster (or per-class scores) on disk, read window by window; picklable."""

    path: str
    grid: GridBox
    bands: int
    nodata: float | None
    class_ids: tuple[int, ...]
    classes: tuple[ClassInfo, ...]

    @property
    def scores(self) -> bool:
        """True when the bands are per-class scores (the class is the highest band)."""
        return self.bands > 1

    def read(self, window: PixelWindow) -> np.ndarray:
        """Class ids of ``window`` (uint8 (h, w)), NODATA where the raster has no data."""
        win = Window(window.c0, window.r0, window.width, window.height)
        with rasterio.open(self.path) as ds:
            data = ds.read(window=win)
        if self.nodata is None or (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            bad = np.isnan(data).any(axis=0) if data.dtype.kind == "f" else None
        else:
            bad = (data == self.nodata).any(axis=0)
        if self.scores:
            ids = np.asarray(self.class_ids, np.uint8)[np.argmax(data, axis=0)]
        else:
            ids = data[0]
            outside = (ids < 0) | (ids >= NODATA) if ids.dtype.kind in "iuf" else None
            ids = np.where(outside, NODATA, ids) if outside is not None else ids
            ids = ids.astype(np.uint8)
        if bad is not None:
            ids[bad] = NODATA
        return ids


def parse_nodata(value: str | float | None) -> float | str | None:
    """``--nodata`` as given: a number, ``none`` (read every pixel) or ``auto`` (the file's)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"nodata={value}: give a number, none (no nodata) or auto (the file's "
                         "tag)") from None


def open_class_raster(source: str | Path, *, nodata: float | str | None = "auto",
                      class_ids: Sequence[int] | None = None) -> ClassRaster:  # fmt: skip
    """A class raster, per-class scores, or a prediction run folder (its ``*_classes.tif``).

    Args:
        source: a raster, or a ``geoseg predict`` output folder.
        nodata: ``auto`` (the file's nodata tag), ``None`` (every pixel is data: FTW masks,
            whose tag 0 is their background class) or a value.
        class_ids: the class of each band of a score raster (default 0, 1, 2...).
    """
    path, classes = _resolve(Path(source))
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({exc}); give a class GeoTIFF") from None
    with ds:
        grid = GridBox.from_dataset(ds)
        if grid.crs is None:
            raise InputError(f"{path}: raster has no CRS; assign one (gdal_edit.py -a_srs "
                             f"EPSG:XXXX {path})")  # fmt: skip
        value = ds.nodata if nodata == "auto" else nodata
        bands = ds.count
    ids = tuple(class_ids) if class_ids is not None else tuple(range(bands))
    if bands > 1 and len(ids) != bands:
        raise InputError(f"{path}: {bands} score bands but {len(ids)} class ids; give one class "
                         "id per band")  # fmt: skip
    if not classes:
        classes = tuple(ClassInfo(id=i, name=f"class_{i}") for i in ids) if bands > 1 else ()
    return ClassRaster(str(path), grid, bands, None if value is None else float(value), ids,
                       tuple(classes))  # fmt: skip


def _resolve(source: Path) -> tuple[Path, tuple[ClassInfo, ...]]:
    """The class raster of a source (a run folder's ``*_classes.tif``) and the class table
    of its run report, when there is one."""
    if source.is_dir():
        found = sorted(source.glob("*_classes.tif"))
        if len(found) != 1:
            raise InputError(f"{source}: expected one *_classes.tif in the run folder, found "
                             f"{len(found)}; give the class COG itself")  # fmt: skip
        source = found[0]
    elif not source.exists():
        raise InputError(f"{source}: file not found; give a class COG or a prediction run folder")
    report = source.with_name(source.name.removesuffix("_classes.tif") + "_report.json")
    classes: tuple[ClassInfo, ...] = ()
    if report.is_file():
        try:
            table = (json.loads(report.read_text()).get("model") or {}).get("classes") or []
            classes = tuple(ClassInfo(id=c["id"], name=c["name"], color=c.get("color", "#808080"))
                            for c in table if isinstance(c, dict) and "id" in c)  # fmt: skip
        except (ValueError, KeyError, TypeError):
            classes = ()
    return source, classes


__all__ = ["ClassRaster", "open_class_raster", "parse_nodata"]
