"""``geoseg indices`` (spectral indices as COGs) and ``geoseg fields stats|polygons`` (per-field
statistics; field boundaries -> one polygon per field, fiboa GeoParquet / GeoPackage)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from geoseg.errors import InputError
from geoseg.fields.scene import open_index_scene, split_list


@click.command("indices")
@click.argument("scene")
@click.option("--index", "index", required=True, help="Indices, e.g. ndvi,ndre,savi (spyndex "
              "catalogue names).")  # fmt: skip
@click.option("--out", "out", required=True, type=click.Path(), help="Output folder.")
@click.option("--roles", default=None, help="Role of each band read, e.g. red,green,blue,nir "
              "(default: the catalog's roles, else the band descriptions).")  # fmt: skip
@click.option("--bands", default=None, help="Bands to read, e.g. 1,2,3,4 (default all).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Reflectance = value * scale + offset (Sentinel-2 L2A: 0.0001).")
@click.option("--offset", type=float, default=0.0, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "int16"]), default="float32",
              show_default=True, help="float32 (nodata NaN) or int16 (x10000, nodata -32768).")
@click.option("--block", type=int, default=512, show_default=True, help="COG tile / window px.")
@click.option("--catalog", default=None, help="Catalog: SCENE is then a scene id of it.")
@click.option("--modality", default=None, help="With --catalog: the modality (default the first).")
def indices_cmd(scene: str, index: str, out: str, roles: str | None, bands: str | None,
                scale: float, offset: float, dtype: str, block: int, catalog: str | None,
                modality: str | None) -> None:  # fmt: skip
    """Write spectral indices of SCENE (a raster, or a catalog scene id) as COGs, chunk by chunk."""
    from geoseg.outputs.indices import write_indices

    sc = open_index_scene(scene, index, roles=roles, bands=bands, scale=scale, offset=offset,
                          catalog=catalog, modality=modality)  # fmt: skip
    stem = scene if catalog else Path(scene).stem
    written = write_indices(sc, out, stem, dtype=dtype, block=block)  # type: ignore[arg-type]
    for name, path in written.items():
        click.echo(f"  {name:10s} {path}")


@click.group("fields")
def fields_group() -> None:
    """Agricultural fields: per-field statistics, field boundaries to field polygons."""


@fields_group.command("polygons")
@click.argument("raster")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output: .parquet (fiboa GeoParquet), .gpkg, .fgb or .shp.")
@click.option("--chunk", type=int, default=1024, show_default=True,
              help="Chunk size in pixels (the result does not depend on it).")
@click.option("--min-area", type=float, default=0.0, show_default=True,
              help="Drop fields smaller than this (m²).")
@click.option("--simplify", type=float, default=0.0, show_default=True,
              help="Simplification tolerance (CRS units; makes the result depend on --chunk).")
@click.option("--grow", type=int, default=2, show_default=True,
              help="Pixels the interiors grow into the boundary class (0: interiors only).")
@click.option("--nodata", default="auto", show_default=True,
              help="Nodata value of RASTER: auto (its tag), none, or a number. FTW masks tag 0 "
              "(their background) as nodata: none is right for them.")  # fmt: skip
@click.option("--interior", type=int, default=1, show_default=True, help="Field interior class.")
@click.option("--boundary", type=int, default=2, show_default=True, help="Field boundary class.")
@click.option("--datetime", "when", default=None,
              help="determination_datetime of the fields (ISO 8601, e.g. the image date).")
def polygons_cmd(raster: str, out: str, chunk: int, min_area: float, simplify: float, grow: int,
                 nodata: str, interior: int, boundary: int, when: str | None) -> None:  # fmt: skip
    """One polygon per field from RASTER: a 3-class raster (background, interior, boundary),
    per-class scores (a probability COG) or a prediction run folder."""
    from geoseg.fields.delineate import Delineation, delineate_fields
    from geoseg.fields.raster import open_class_raster, parse_nodata

    src = open_class_raster(raster, nodata=parse_nodata(nodata))
    how = Delineation(interior=interior, boundary=boundary, grow=grow, chunk=chunk,
                      min_area=min_area, simplify=simplify)  # fmt: skip
    res = delineate_fields(src, out, how, determination_datetime=_when(when))
    click.echo(f"{res['fields']} fields, {res['area_ha']:.2f} ha, {res['timings_s']['total']:.1f} s")
    for f in res["files"]:
        click.echo(f"  {f}")


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"datetime={text}: not an ISO 8601 date/time, e.g. 2021-06-17") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@fields_group.command("stats")
@click.option("--fields", "fields", required=True, help="Field polygons (any vector file/CRS).")
@click.option("--prediction", required=True,
              help="Class COG or prediction run folder (its *_classes.tif).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output: .parquet (GeoParquet) or .gpkg.")
@click.option("--scene", default=None, help="Raster (or catalog scene id) for index statistics.")
@click.option("--index", "index", default=None, help="Indices of --scene, e.g. ndvi,ndre.")
@click.option("--roles", default=None, help="Roles of the --scene bands read, e.g. "
              "red,green,blue,nir.")  # fmt: skip
@click.option("--bands", default=None, help="Bands of --scene to read, e.g. 1,2,3,4.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="--scene reflectance = value * scale + offset.")
@click.option("--offset", type=float, default=0.0, show_default=True)
@click.option("--catalog", default=None, help="Catalog: --scene is then a scene id of it.")
@click.option("--nodata", default="auto", show_default=True,
              help="Nodata of the class raster: auto (its tag), none, or a number.")
@click.option("--percentiles", default="10,50,90", show_default=True,
              help="Index percentiles per field.")
@click.option("--block", type=int, default=2048, show_default=True,
              help="Raster block (px) the fields are grouped by.")
@click.option("--layer", default=None, help="Layer of --fields (default the first).")
def stats_cmd(fields: str, prediction: str, out: str, scene: str | None, index: str | None,
              roles: str | None, bands: str | None, scale: float, offset: float,
              catalog: str | None, nodata: str, percentiles: str, block: int,
              layer: str | None) -> None:  # fmt: skip
    """Per-field ground area, class fractions, valid fraction and index statistics."""
    from geoseg.fields.raster import open_class_raster, parse_nodata
    from geoseg.fields.stats import StatsOptions, field_stats

    if bool(scene) != bool(index):
        raise InputError("index= and --scene go together: give both (index statistics) or none")
    classes = open_class_raster(prediction, nodata=parse_nodata(nodata))
    sc = None
    if scene and index:
        sc = open_index_scene(scene, index, roles=roles, bands=bands, scale=scale, offset=offset,
                              catalog=catalog)  # fmt: skip
    try:
        qs = tuple(float(q) for q in split_list(percentiles))
    except ValueError:
        raise InputError(f"percentiles={percentiles}: give numbers, e.g. 10,50,90") from None
    res = field_stats(fields, classes, out, scene=sc,
                      options=StatsOptions(percentiles=qs, block=block, layer=layer))  # fmt: skip
    rate = res["fields_per_s"]
    click.echo(f"{res['fields']} fields ({res['outside']} outside the raster, {res['nodata']} on "
               f"nodata only), {res['seconds']['total']:.1f} s"
               + (f", {rate:,.0f} fields/s" if rate else ""))  # fmt: skip
    for f in res["files"]:
        click.echo(f"  {f}")
