"""Mosaics of class rasters: adjacent scenes of one CRS and pixel size -> one COG.

The scenes' class COGs are referenced by a GDAL VRT (written here as XML, the equivalent of
``gdalbuildvrt``: nodata-aware sources, so a scene's nodata collar never hides a neighbour),
which the COG step of :mod:`geoseg.outputs.cog` (:func:`~geoseg.outputs.cog.copy_to_cog`) then
streams into a tiled, compressed COG with mode overviews, written under a temporary name and
renamed when complete. The colour table of the first raster is kept. Memory stays bounded by
GDAL's block cache.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from geoseg._files import writable_folder
from geoseg.config import NODATA
from geoseg.errors import InputError
from geoseg.outputs.cog import copy_to_cog
from geoseg.outputs.merge import connected_components


@dataclass(frozen=True)
class _Src:
    path: str
    crs: object
    res: tuple[float, float]
    bounds: tuple[float, float, float, float]
    size: tuple[int, int]


def group_adjacent(paths: Sequence[str | Path]) -> list[list[str]]:
    """Groups of rasters that share CRS and pixel size and touch or overlap (chained)."""
    srcs = [_info(p) for p in paths]
    groups: list[list[str]] = []
    keyed: dict[tuple, list[_Src]] = {}
    for s in srcs:
        key = (s.crs.to_wkt() if s.crs else None, round(s.res[0], 9), round(s.res[1], 9))
        keyed.setdefault(key, []).append(s)
    for (wkt, _, _), members in keyed.items():
        if wkt is not None:
            groups += _components(members)
    return groups


def _components(members: list[_Src]) -> list[list[str]]:
    """Connected components of the touch graph, in the order of their first member."""
    n = len(members)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if _touch(members[i], members[j])]
    i, j = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    comps: dict[int, list[str]] = {}
    for root, m in zip(connected_components(n, i, j).tolist(), members, strict=True):
        comps.setdefault(root, []).append(m.path)
    return list(comps.values())


def mosaic(paths: Sequence[str | Path], out: str | Path, *, block: int = 512) -> Path:
    """Mosaic class rasters of one CRS and pixel size into one COG (later paths on top)."""
    srcs = [_info(p) for p in paths]
    if not srcs:
        raise InputError("mosaic: no rasters given")
    first = srcs[0]
    for s in srcs[1:]:
        if s.crs != first.crs or any(abs(a - b) > 1e-9 * max(a, 1) for a, b in
                                     zip(s.res, first.res, strict=True)):  # fmt: skip
            raise InputError(f"{s.path}: CRS or pixel size differs from {first.path}; mosaic "
                             "rasters of one CRS and resolution (group_adjacent does)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = writable_folder(out)
    # the VRT only lives in GDAL's memory: its sources are absolute paths
    with (
        rasterio.MemoryFile(build_vrt(srcs).encode(), ext=".vrt") as vrt,
        rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024),
    ):
        copy_to_cog(vrt.name, out, folder, block=block, compress="deflate", resampling="mode")
    return out


def build_vrt(srcs: Sequence[_Src]) -> str:
    """VRT XML placing every source on the union grid (nearest; nodata is transparent)."""
    first = srcs[0]
    rx, ry = first.res
    left = min(s.bounds[0] for s in srcs)
    top = max(s.bounds[3] for s in srcs)
    right = max(s.bounds[2] for s in srcs)
    bottom = min(s.bounds[1] for s in srcs)
    width, height = round((right - left) / rx), round((top - bottom) / ry)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = first.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = f"{left!r}, {rx!r}, 0, {top!r}, 0, {-ry!r}"
    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "NoDataValue").text = str(NODATA)
    ET.SubElement(band, "Description").text = "class"
    with rasterio.open(first.path) as ds:
        try:
            cmap = ds.colormap(1)
        except ValueError:  # no colour table
            cmap = None
    if cmap:
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        for i in range(256):
            c = cmap.get(i, (0, 0, 0, 0))
            ET.SubElement(table, "Entry", c1=str(c[0]), c2=str(c[1]), c3=str(c[2]),
                          c4=str(c[3] if len(c) > 3 else 255))  # fmt: skip
    for s in srcs:
        src = ET.SubElement(band, "ComplexSource", resampling="nearest")
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = os.path.abspath(s.path)
        ET.SubElement(src, "SourceBand").text = "1"
        w, h = s.size
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(w), ySize=str(h))
        ET.SubElement(src, "DstRect", xOff=repr((s.bounds[0] - left) / rx),
                      yOff=repr((top - s.bounds[3]) / ry), xSize=repr(w * s.res[0] / rx),
                      ySize=repr(h * s.res[1] / ry))  # fmt: skip
        ET.SubElement(src, "NODATA").text = str(NODATA)
    return ET.tostring(root, encoding="unicode")


def _info(path: str | Path) -> _Src:
    try:
        with rasterio.open(str(path)) as ds:
            if ds.transform.b or ds.transform.d or ds.transform.e > 0:
                raise InputError(f"{path}: not a north-up raster; cannot be mosaicked")
            return _Src(str(path), ds.crs, ds.res, tuple(ds.bounds), (ds.width, ds.height))
    except RasterioError as exc:
        raise InputError(f"{path}: cannot be opened for the mosaic ({exc})") from None


def _touch(a: _Src, b: _Src) -> bool:
    """Bounds overlap or share an edge (within half a pixel)."""
    tol = 0.5 * max(a.res)
    return (a.bounds[0] <= b.bounds[2] + tol and b.bounds[0] <= a.bounds[2] + tol
            and a.bounds[1] <= b.bounds[3] + tol and b.bounds[1] <= a.bounds[3] + tol)  # fmt: skip
