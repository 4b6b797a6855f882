"""Polygon layers to files: GeoPackage, Shapefile, GeoParquet or FlatGeobuf, by extension.

Every layer is written under a temporary name beside the destination and moved into place
when complete (``geoseg._files.atomic_path``; a Shapefile's parts from a staging folder, .shp
last): nothing half-written is left under either name, and failures become one-line
OutputErrors naming the file and the fix. Shapefile field names are cut to the DBF's 10
characters, kept unique.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import geopandas as gpd

from geoseg._files import (
    atomic_path,
    remove_quietly,
    temp_sibling,
    writable_folder,
    write_failed,
    written_bytes,
)
from geoseg.errors import OutputError

log = logging.getLogger(__name__)

#: Output formats by file extension: (label, OGR driver or None for GeoParquet).
FORMATS = {
    ".gpkg": ("GeoPackage", "GPKG"),
    ".shp": ("Shapefile", "ESRI Shapefile"),
    ".parquet": ("GeoParquet", None),
    ".fgb": ("FlatGeobuf", "FlatGeobuf"),
}
#: Dataset creation options by OGR driver, for every layer geoseg writes (streamed, merged).
#: GeoPackage 1.2: GDAL >= 3.11 writes 1.4 by default, which older GDALs (QGIS 3.22's) open
#: with "This version of GeoPackage user_version=... (v1.4.0) ... may only be partially
#: supported"; 1.2 (application_id "GPKG", user_version 10200) is read without a warning by
#: every GDAL since 2.2, and 1.0/1.1 would carry the legacy application ids "GP10"/"GP11".
DATASET_OPTIONS: dict[str, dict[str, str]] = {"GPKG": {"VERSION": "1.2"}}
#: Shapefile parts, in the order they are moved into place (.shp last: once it is visible, the
#: layer is complete). Spatial-index sidecars of an older file would be stale: removed.
_SHP_PARTS = (".dbf", ".shx", ".prj", ".cpg", ".shp")
_SHP_STALE = (".qix", ".sbn", ".sbx", ".qmd")


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
    path, ext, folder = destination(path)
    layer = layer or path.stem
    if ext == ".shp":
        gdf = gdf.rename(columns=_dbf_names(gdf))

    def write(tmp: Path) -> None:
        if ext == ".parquet":
            gdf.to_parquet(tmp, index=False)
        else:
            _write_ogr(gdf, tmp, FORMATS[ext][1], layer)

    return write_atomically(path, folder, write)


def destination(path: str | os.PathLike[str]) -> tuple[Path, str, Path]:
    """The destination, its (lower-case) extension and its folder, checked before any work.

    Raises:
        OutputError: unknown extension, or a folder that is missing or not writable.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        known = ", ".join(f"{e} ({label})" for e, (label, _) in FORMATS.items())
        raise OutputError(
            f"{path}: unknown vector format {path.suffix or '(no extension)'!r}; use one of {known}"
        )
    return path, ext, writable_folder(path)


def write_atomically(
    path: Path, folder: Path, write: Callable[[Path], None], failed: Sequence[BaseException] = (),
    need: int | None = None,
) -> list[Path]:
    """Run ``write(tmp)`` on a temporary sibling of ``path`` (for a Shapefile, on a staging
    folder's ``.shp``) and move the result into place; on any error nothing is left behind.

    ``failed``: where errors raised while *producing* streamed rows (reading blocks,
    vectorising) are recorded; the first is re-raised as is rather than reported as an
    unwritable output (the writer only sees a broken stream). ``need``: a rough size of the
    layer, told when the disk fills before anything was written.
    """
    written = [0]  # bytes written when a write failed: at least that much is needed

    def measured(tmp: Path) -> None:
        try:
            write(tmp)
        except BaseException:
            written[0] = written_bytes(tmp)
            raise

    try:
        if path.suffix.lower() == ".shp":
            return _write_shapefile(path, measured)
        # the driver picks the format from the suffix; GeoPackage (SQLite) may leave
        # -journal/-wal/-shm files beside the temporary one on failure: removed with it
        with atomic_path(path, path.suffix.lower()) as tmp:
            measured(tmp)
    except OutputError:
        raise
    except BaseException as err:  # pyogrio/arrow/OS errors have no common base class
        if failed:
            raise failed[0] from None
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit
            raise
        raise write_failed(path, folder, err, written[0] or need, at_least=bool(written[0])) from err
    return [path]


def _write_ogr(gdf: gpd.GeoDataFrame, path: Path, driver: str, layer: str) -> None:
    import pyogrio

    kinds = set(gdf.geometry.geom_type.dropna())
    kw: dict = {}
    if not kinds or kinds <= {"Polygon"}:
        kw["geometry_type"] = "Polygon"  # an empty layer still declares its geometry type
    elif kinds <= {"Polygon", "MultiPolygon"}:
        kw.update(geometry_type="MultiPolygon", promote_to_multi=True)
    pyogrio.write_dataframe(gdf, path, layer=layer, driver=driver,
                            dataset_options=DATASET_OPTIONS.get(driver), **kw)  # fmt: skip


def _write_shapefile(path: Path, write: Callable[[Path], None]) -> list[Path]:
    """``write`` the layer into a staging folder beside ``path``, then move its parts in."""
    staging = temp_sibling(path, ".shp.tmp")
    staging.mkdir()
    try:
        # written in UTF-8 (a .cpg says so), so class names with accents survive
        write(staging / path.name)
        return _move_parts(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_parts(staging: Path, path: Path) -> list[Path]:
    """Move the Shapefile parts written in ``staging`` to ``path`` (.shp last); the parts and
    sidecars of an older ``path`` that the new layer lacks are removed first."""
    for ext in _SHP_STALE + tuple(e for e in _SHP_PARTS if not (staging / f"{path.stem}{e}").exists()):
        remove_quietly(path.with_suffix(ext))
    written = []
    for ext in _SHP_PARTS:
        part = staging / f"{path.stem}{ext}"
        if part.exists():
            os.replace(part, path.with_suffix(ext))
            written.append(path.with_suffix(ext))
    return written


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
