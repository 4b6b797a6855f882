"""Writing polygon layers (geoseg.outputs.write): every format round-trips, empty layers,
Shapefile field names and replacement, errors that name the file and leave nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely

from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox
from geoseg.outputs.polygonize import polygonize
from geoseg.outputs.stream import polygonize_to_file
from geoseg.outputs.write import FORMATS, write_vectors
from tests.outputs.vector_support import CLASSES, COLUMNS, in_raster_order, reader


def test_all_nodata_scene_gives_an_empty_layer(
    rgb: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    _, grid = rgb
    gdf = polygonize(lambda *w: None, grid, CLASSES)
    assert len(gdf) == 0 and list(gdf.columns) == COLUMNS and gdf.crs == grid.crs
    for ext in FORMATS:
        path = write_vectors(gdf, tmp_path / f"empty{ext}")[-1]
        back = gpd.read_parquet(path) if ext == ".parquet" else gpd.read_file(path)
        assert len(back) == 0 and list(back.columns) == COLUMNS and back.crs == grid.crs


@pytest.mark.parametrize("ext", list(FORMATS))
def test_every_format_round_trips(
    ext: str, hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=128)
    paths = write_vectors(gdf, tmp_path / f"polygons{ext}", layer="polygons")
    if ext == ".shp":
        assert {p.suffix for p in paths} == {".shp", ".shx", ".dbf", ".prj", ".cpg"}
    else:
        assert paths == [tmp_path / f"polygons{ext}"]
    back = gpd.read_parquet(paths[0]) if ext == ".parquet" else gpd.read_file(paths[-1])
    assert list(back.columns) == COLUMNS and back.crs == grid.crs and len(back) == len(gdf)
    if ext == ".fgb":  # FlatGeobuf's spatial index stores features in Hilbert-curve order
        back, gdf = in_raster_order(back), in_raster_order(gdf)
    np.testing.assert_array_equal(back.class_id, gdf.class_id)
    assert (back.class_name == gdf.class_name).all()
    np.testing.assert_allclose(back.area_m2, gdf.area_m2, rtol=1e-12)
    assert shapely.equals(back.geometry.values, gdf.geometry.values).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_shapefile_field_names_and_replacement(
    hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=128).head(20)
    gdf["confidence_mean"] = 0.5
    gdf["confidence_max"] = 1.0
    (tmp_path / "p.qix").write_text("stale spatial index")
    write_vectors(gdf, tmp_path / "p.shp")
    back = gpd.read_file(tmp_path / "p.shp")
    assert list(back.columns) == [*COLUMNS[:3], "confidence", "confiden_1", "geometry"]
    assert not (tmp_path / "p.qix").exists()
    # replacing with fewer rows: every part is replaced together
    write_vectors(gdf.head(3), tmp_path / "p.shp")
    assert len(gpd.read_file(tmp_path / "p.shp")) == 3


def test_write_errors_name_the_file_and_leave_nothing(
    hag: tuple[np.ndarray, GridBox], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes, grid = hag
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=256).head(5)
    with pytest.raises(OutputError, match=r"x\.geojson.*\.gpkg.*\.shp.*\.parquet.*\.fgb"):
        write_vectors(gdf, tmp_path / "x.geojson")
    with pytest.raises(OutputError, match="missing"):
        write_vectors(gdf, tmp_path / "missing" / "x.gpkg")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="not a folder"):
        write_vectors(gdf, tmp_path / "file" / "x.gpkg")
    write_vectors(gdf, tmp_path / "kept.gpkg")
    before = (tmp_path / "kept.gpkg").read_bytes()

    def disk_full(df: object, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a file")
        if str(kwargs.get("driver")) == "ESRI Shapefile":
            Path(path).with_suffix(".dbf").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pyogrio, "write_dataframe", disk_full)
    for name in ("kept.gpkg", "y.fgb", "y.shp"):
        with pytest.raises(OutputError, match=rf"{name.replace('.', '[.]')}.*No space left"):
            write_vectors(gdf, tmp_path / name)
    assert (tmp_path / "kept.gpkg").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "kept.gpkg"]


def test_every_geopackage_is_version_1_2(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame, tmp_path: Path
) -> None:
    # GDAL >= 3.11 writes GeoPackage 1.4 by default; the GDAL of QGIS 3.22 warns "v1.4.0 ...
    # may only be partially supported" on opening it. Layers (merged ones too) and streamed
    # polygons are written as 1.2 (application_id "GPKG", user_version 10200).
    classes, grid = rgb
    written = write_vectors(rgb_polygons.head(50), tmp_path / "layer.gpkg")
    written += polygonize_to_file(reader(classes), grid, CLASSES, tmp_path / "streamed.gpkg",
                                  chunk=256)["files"]  # fmt: skip
    for path in written:
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
            assert con.execute("PRAGMA user_version").fetchone()[0] == 10200
