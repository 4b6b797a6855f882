"""fiboa (field boundaries for agriculture) core: the columns of a field layer, its GeoParquet
metadata, and a validator.

geoseg writes fiboa core v0.2.0: ``id`` (string, unique), ``geometry`` (WKB), ``area``
(hectares, float), ``perimeter`` (metres, float), ``determination_method`` (``auto-imagery``
for fields delineated from imagery) and optionally ``determination_datetime`` (UTC, ms).
The collection metadata goes into the Parquet metadata key ``fiboa``.

:func:`validate_fiboa` checks a GeoParquet file against the core schema: the JSON Schema
below is the core ``schema.yaml`` of the fiboa specification (v0.2.0, Apache-2.0), its
property definitions translated from fiboa's schema language (``float`` -> ``number``,
``date-time`` -> an ISO 8601 string) and checked with ``jsonschema``, plus fiboa's Parquet
data-type mapping and the GeoParquet metadata. (fiboa-cli's own validator needs its schemas
from the web and pins an older pyarrow: it is not a geoseg dependency.)
"""

from __future__ import annotations

import json
import os
from typing import Any

FIBOA_VERSION = "0.2.0"
CORE_SCHEMA_URL = f"https://fiboa.github.io/specification/v{FIBOA_VERSION}/schema.yaml"
#: fiboa core v0.2.0 properties as JSON Schema (draft 2020-12); required: id, geometry
CORE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "geometry"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "collection": {"type": ["string", "null"], "minLength": 1},
        "area": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 100000},
        "perimeter": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 125000},
        "determination_datetime": {"type": ["string", "null"], "format": "date-time"},
        "determination_method": {
            "type": ["string", "null"],
            "enum": ["manual", "driven", "surveyed", "auto-operation", "auto-imagery",
                     "unknown", None],
        },
        "determination_details": {"type": ["string", "null"]},
    },
}
#: fiboa data type of each core column -> Parquet (arrow) type names accepted
PARQUET_TYPES = {"id": {"string", "large_string"}, "area": {"float"}, "perimeter": {"float"},
                 "determination_method": {"string", "large_string"},
                 "determination_datetime": {"timestamp[ms, tz=UTC]"},
                 "determination_details": {"string", "large_string"},
                 "collection": {"string", "large_string"}}  # fmt: skip


def collection_metadata(collection_id: str, description: str = "") -> dict[str, Any]:
    """The fiboa collection written into the Parquet metadata key ``fiboa``."""
    return {"fiboa_version": FIBOA_VERSION, "fiboa_extensions": [], "id": collection_id,
            "title": collection_id, "description": description or "field boundaries "
            "delineated by geoseg", "license": "proprietary"}  # fmt: skip


def validate_fiboa(path: str | os.PathLike[str]) -> list[str]:
    """Problems of a fiboa GeoParquet file (empty when it is valid fiboa core v0.2.0).

    Checks the GeoParquet and fiboa metadata, the core columns' Parquet types, every row
    against :data:`CORE_SCHEMA` (batch by batch: memory does not grow with the file), unique
    ids and valid, non-empty polygon geometries.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    problems = [*_metadata_problems(schema.metadata or {}), *_column_problems(schema)]
    if problems:
        return problems
    return _row_problems(pf)


def _metadata_problems(meta: dict[bytes, bytes]) -> list[str]:
    """Problems of the GeoParquet ``geo`` and the fiboa collection metadata."""
    problems: list[str] = []
    try:
        geo = json.loads(meta[b"geo"])
        column = geo["columns"][geo["primary_column"]]
        if geo["primary_column"] != "geometry" or column.get("encoding") != "WKB":
            problems.append("GeoParquet: the primary column must be 'geometry', encoded as WKB")
    except (KeyError, ValueError):
        problems.append("no valid GeoParquet 'geo' metadata")
    try:
        fiboa = json.loads(meta[b"fiboa"])
        if fiboa.get("fiboa_version") != FIBOA_VERSION:
            problems.append(f"fiboa metadata: fiboa_version {fiboa.get('fiboa_version')!r}, "
                            f"expected {FIBOA_VERSION!r}")  # fmt: skip
    except (KeyError, ValueError):
        problems.append("no 'fiboa' collection metadata in the Parquet metadata")
    return problems


def _column_problems(schema: Any) -> list[str]:
    """Missing required columns and core columns of the wrong Parquet type."""
    problems = [f"required column {name!r} is missing"
                for name in CORE_SCHEMA["required"] if name not in schema.names]  # fmt: skip
    for name, types in PARQUET_TYPES.items():
        if name in schema.names and str(schema.field(name).type) not in types:
            problems.append(f"column {name!r} has type {schema.field(name).type}, fiboa wants "
                            f"{' or '.join(sorted(types))}")  # fmt: skip
    return problems


def _row_problems(pf: Any) -> list[str]:
    """Problems of the rows, batch by batch (at most 20, then ``...``)."""
    import jsonschema
    import shapely

    validator = jsonschema.Draft202012Validator(
        CORE_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    props = [n for n in CORE_SCHEMA["properties"] if n in pf.schema_arrow.names]
    problems: list[str] = []
    seen: set[str] = set()
    for batch in pf.iter_batches(batch_size=8192, columns=[*props, "geometry"]):
        rows = batch.to_pylist()
        bad = _bad_geometries(shapely.from_wkb([r.pop("geometry") for r in rows]))
        if bad:
            problems.append(f"{bad} invalid, empty or non-polygon geometries")
        for row in rows:
            problems += _record_problems(row, validator, seen)
        if len(problems) > 20:
            return [*problems[:20], "..."]
    return problems


def _bad_geometries(geoms: Any) -> int:
    """How many of ``geoms`` are invalid, empty or not (multi)polygons."""
    import shapely

    bad = ~shapely.is_valid(geoms) | shapely.is_empty(geoms)
    kinds = shapely.get_type_id(geoms)
    bad |= (kinds != shapely.GeometryType.POLYGON) & (kinds != shapely.GeometryType.MULTIPOLYGON)
    return int(bad.sum())


def _record_problems(row: dict[str, Any], validator: Any, seen: set[str]) -> list[str]:
    """Schema problems of one row (its geometry already taken out) and a repeated id."""
    if row.get("determination_datetime") is not None:
        row["determination_datetime"] = row["determination_datetime"].isoformat()
    row["geometry"] = {}  # checked as WKB above; the schema only needs it present
    problems = []
    for err in validator.iter_errors(row):
        where = ".".join(map(str, err.absolute_path)) or "row"
        problems.append(f"id {row.get('id')!r}: {where}: {err.message}")
    if row["id"] in seen:
        problems.append(f"id {row['id']!r} is not unique")
    seen.add(row["id"])
    return problems


__all__ = ["CORE_SCHEMA", "FIBOA_VERSION", "collection_metadata", "validate_fiboa"]
