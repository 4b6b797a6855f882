"""QGIS styles embedded in a GeoPackage (geoseg.outputs.qgis): what GDAL and QGIS read back."""

from __future__ import annotations

import re
import sqlite3
import warnings
from pathlib import Path

import geopandas as gpd
import pyogrio

from geoseg.outputs.qgis import embed_gpkg_style, vector_qml
from geoseg.outputs.write import write_vectors
from tests.outputs.vector_support import CLASSES

#: GeoPackage DATETIME: ISO 8601 in UTC with milliseconds and "Z" (requirement 5 of the spec).
GPKG_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_style_table_is_conformant_geopackage(rgb_polygons: gpd.GeoDataFrame, tmp_path: Path) -> None:
    path = write_vectors(rgb_polygons.head(20), tmp_path / "p.gpkg", layer="p")[0]
    embed_gpkg_style(path, "p", vector_qml(CLASSES))
    embed_gpkg_style(path, "p", vector_qml(CLASSES))  # replaced, not added
    with sqlite3.connect(path) as con:
        # a style QGIS or a user adds without a time gets the default: the same format
        con.execute("INSERT INTO layer_styles (f_table_name, styleName) VALUES ('other', 'x')")
        times = [t for (t,) in con.execute("SELECT update_time FROM layer_styles")]
    assert len(times) == 2 and all(GPKG_DATETIME.fullmatch(t) for t in times), times
    with warnings.catch_warnings():
        # GDAL: "Non-conformant content for record 1 in column update_time, ..."
        warnings.simplefilter("error")
        styles = pyogrio.read_dataframe(path, layer="layer_styles")
    assert styles.f_table_name.tolist() == ["p", "other"]
