"""QGIS styles (.qml) for the class raster and the polygon layer, so outputs open styled: as
side files (written atomically) or embedded in a GeoPackage's ``layer_styles`` table."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

from geoseg._files import atomic_write_text, writable_folder, write_failed
from geoseg.scene.classes import ClassInfo

QGIS_VERSION = "3.28.0-Firenze"


def _root(categories: str) -> ET.Element:
    return ET.Element("qgis", {"version": QGIS_VERSION, "styleCategories": categories})


def raster_qml(classes: Sequence[ClassInfo]) -> str:
    """Paletted renderer of band 1: one entry per class with its colour and name."""
    root = _root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    ren = ET.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": ""})  # fmt: skip
    ET.SubElement(ren, "rasterTransparency")
    pal = ET.SubElement(ren, "colorPalette")
    for c in classes:
        ET.SubElement(pal, "paletteEntry", {"value": str(c.id), "color": c.color,
                                            "label": c.name, "alpha": "255"})  # fmt: skip
    ET.SubElement(root, "blendMode").text = "0"
    return _serialise(root)


def vector_qml(classes: Sequence[ClassInfo], field: str = "class_id") -> str:
    """Categorized fill renderer on ``field`` with the class colours and names."""
    root = _root("Symbology")
    ren = ET.SubElement(root, "renderer-v2", {
        "type": "categorizedSymbol", "attr": field, "symbollevels": "0",
        "enableorderby": "0", "forceraster": "0"})  # fmt: skip
    cats = ET.SubElement(ren, "categories")
    syms = ET.SubElement(ren, "symbols")
    for i, c in enumerate(classes):
        ET.SubElement(cats, "category", {"value": str(c.id), "symbol": str(i),
                                         "label": c.name, "render": "true"})  # fmt: skip
        sym = ET.SubElement(syms, "symbol", {"type": "fill", "name": str(i), "alpha": "0.8",
                                             "clip_to_extent": "1", "force_rhr": "0"})  # fmt: skip
        layer = ET.SubElement(sym, "layer", {"class": "SimpleFill", "enabled": "1",
                                             "pass": "0", "locked": "0"})  # fmt: skip
        opts = ET.SubElement(layer, "Option", {"type": "Map"})
        r, g, b = c.rgb
        for name, value in (("color", f"{r},{g},{b},255"), ("outline_color", "35,35,35,255"),
                            ("outline_style", "solid"), ("outline_width", "0.1"),
                            ("style", "solid")):  # fmt: skip
            ET.SubElement(opts, "Option", {"name": name, "value": value, "type": "QString"})
    return _serialise(root)


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def write_qml(path: Path, text: str) -> Path:
    """Write a style file (e.g. ``raster_qml``'s) atomically; OS failures -> OutputError."""
    folder = writable_folder(path)
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise write_failed(path, folder, err) from err
    return path


#: SQLite's "now" in the GeoPackage DATETIME format (the spec's own default for gpkg_contents)
_SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


def gpkg_datetime(when: dt.datetime) -> str:
    """``when`` in the GeoPackage DATETIME format, ``YYYY-MM-DDTHH:MM:SS.SSSZ`` (UTC, ms):
    anything else GDAL reports as non-conformant content when QGIS opens the file."""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def embed_gpkg_style(gpkg: Path, layer: str, qml: str, geometry_column: str = "geom") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage (QGIS layer_styles)."""
    with sqlite3.connect(gpkg) as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
            f"update_time DATETIME DEFAULT ({_SQL_NOW}))"
        )
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, 'geoseg classes', '', "
            "'', ?)",
            (layer, geometry_column, layer, qml, gpkg_datetime(dt.datetime.now(dt.UTC))),
        )
        # register the table so GeoPackage validators accept it
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles')"
        )
