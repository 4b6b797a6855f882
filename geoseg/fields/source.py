"""Field polygons read in pieces: their bounding boxes in batches, then chosen features by id.

:func:`open_fields` gives one reader for any OGR vector file (pyogrio: GeoPackage, FlatGeobuf,
Shapefile, GeoJSON...) and for GeoParquet (pyarrow: the GDAL here may lack its Parquet driver;
feature ids are row numbers, read by row group). Memory per call is that of the batch asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from geoseg.errors import InputError

#: features per batch of the bounding-box pass
BOX_BATCH = 65_536


class OGRFields:
    """Fields of an OGR vector layer (pyogrio)."""

    def __init__(self, path: str | os.PathLike[str], layer: str | None) -> None:
        import pyogrio

        self.path, self.layer = path, layer
        try:
            info = pyogrio.read_info(path, layer=layer)
        except Exception as exc:  # pyogrio's DataSourceError and friends
            raise InputError(f"{path}: not a readable vector layer ({exc}); give a GeoPackage, "
                             "GeoParquet, Shapefile or any OGR vector file") from None  # fmt: skip
        self.crs = info["crs"]

    def boxes(self) -> Iterator[tuple[np.ndarray, Any]]:
        """(feature ids, WKB geometries) batch by batch."""
        import pyogrio

        with pyogrio.open_arrow(self.path, layer=self.layer, columns=[], return_fids=True,
                                use_pyarrow=True, batch_size=BOX_BATCH) as (meta, reader):  # fmt: skip
            gcol = meta["geometry_name"] or "wkb_geometry"
            fcol = meta.get("fid_column") or "OGC_FID"
            for batch in reader:
                yield np.asarray(batch.column(fcol), np.int64), batch.column(gcol)

    def read(self, fids: np.ndarray) -> tuple[Any, Any]:
        """(attribute table, WKB geometries) of the features ``fids``."""
        import pyogrio

        meta, table = pyogrio.read_arrow(self.path, layer=self.layer, fids=fids, return_fids=True)
        gcol = meta["geometry_name"] or "wkb_geometry"
        drop = {gcol, "__fid", "OGC_FID", meta.get("fid_column")}
        keep = [c for c in table.column_names if c not in drop]
        return table.select(keep), table.column(gcol)


class ParquetFields:
    """Fields of a GeoParquet file (pyarrow); feature ids are row numbers."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow.parquet as pq

        self.path = path
        try:
            self.file = pq.ParquetFile(path)
            geo = json.loads((self.file.schema_arrow.metadata or {})[b"geo"])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: not a GeoParquet file ({exc}); give a GeoParquet file "
                             "with 'geo' metadata or another vector format") from None  # fmt: skip
        self.geometry = geo["primary_column"]
        column = geo["columns"][self.geometry]
        if column.get("encoding", "WKB").upper() != "WKB":
            raise InputError(f"{path}: geometry encoding {column['encoding']!r}; geoseg reads WKB "
                             "GeoParquet")  # fmt: skip
        # GeoParquet: a missing crs means OGC:CRS84
        self.crs = column.get("crs", "OGC:CRS84")
        rows = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)

    def boxes(self) -> Iterator[tuple[np.ndarray, Any]]:
        """(row numbers, WKB geometries) batch by batch."""
        start = 0
        for batch in self.file.iter_batches(batch_size=BOX_BATCH, columns=[self.geometry]):
            n = batch.num_rows
            yield np.arange(start, start + n, dtype=np.int64), batch.column(0)
            start += n

    def read(self, fids: np.ndarray) -> tuple[Any, Any]:
        """(attribute table, WKB geometries) of the rows ``fids``, read by row group."""
        import pyarrow as pa

        groups = np.searchsorted(self.starts, fids, side="right") - 1
        parts = []
        for g in np.unique(groups):
            rows = fids[groups == g] - self.starts[g]
            parts.append(self.file.read_row_group(int(g)).take(pa.array(rows)))
        table = pa.concat_tables(parts)
        keep = [c for c in table.column_names if c != self.geometry]
        return table.select(keep), table.column(self.geometry)


def open_fields(path: str | os.PathLike[str], layer: str | None = None) -> OGRFields | ParquetFields:
    """A reader of the fields in ``path`` (GeoParquet by extension, else OGR); checks a CRS."""
    src: OGRFields | ParquetFields
    if str(path).lower().endswith((".parquet", ".geoparquet")):
        src = ParquetFields(path)
    else:
        src = OGRFields(path, layer)
    if src.crs is None:
        raise InputError(f"{path}: the fields have no CRS; assign one (ogr2ogr -a_srs EPSG:XXXX)")
    return src


__all__ = ["OGRFields", "ParquetFields", "open_fields"]
