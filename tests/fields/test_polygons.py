"""Field boundaries -> one polygon per field (geoseg.fields.delineate), fiboa output.

Real data: FTW's 3-class mask of ../shared/data/ftw (a field-boundary prediction over Lower
Bavaria; skipped when absent). Generated: small 3-class rasters drawn by the tests (fields
crossing chunk lines, neighbours separated by boundary pixels, a U-shaped field).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from scipy import ndimage

from geoseg.fields.delineate import Delineation, delineate_fields, grow_into
from geoseg.fields.fiboa import validate_fiboa
from geoseg.fields.raster import open_class_raster
from tests.support import invoke, shared, write_geotiff


def _draw() -> np.ndarray:
    """Background 0; fields of interior 1 ringed by boundary 2."""
    a = np.zeros((70, 90), np.uint8)

    def field(r0: int, r1: int, c0: int, c1: int) -> None:
        a[r0:r1, c0:c1] = 2
        a[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = 1

    field(3, 40, 3, 32)  # A
    field(3, 40, 32, 60)  # B: shares A's boundary (two boundary pixels between interiors)
    # C: a U whose arms meet only at the bottom, far from where the arms cross chunk lines
    field(44, 68, 5, 80)
    a[45:60, 20:65] = 0
    a[44:60, 19] = a[44:60, 65] = 2
    return a


def _polygons(path) -> gpd.GeoDataFrame:
    g = gpd.read_parquet(path) if str(path).endswith(".parquet") else gpd.read_file(path)
    g["geometry"] = shapely.normalize(g.geometry.values)
    return g.sort_values("id").reset_index(drop=True)


@pytest.fixture
def drawn(tmp_path):
    return write_geotiff(tmp_path / "fields.tif", _draw()[None])


def test_fields_across_chunk_lines_are_one_polygon_and_neighbours_two(tmp_path, drawn) -> None:
    src = open_class_raster(drawn)
    res = delineate_fields(src, tmp_path / "f.parquet", Delineation(chunk=16))
    g = _polygons(tmp_path / "f.parquet")
    assert res["fields"] == len(g) == 3
    assert (shapely.get_type_id(g.geometry.values) == shapely.GeometryType.POLYGON).all()
    a, b, _ = g.geometry.values
    # A and B are separated by boundary pixels: two fields, which the growth makes touch
    assert a.touches(b) and a.intersection(b).length > 0 and a.intersection(b).area == 0
    # grown into their boundary ring: A covers its whole 37 x 29 box (10 m pixels)
    assert a.area == pytest.approx(37 * 29 * 100)
    # the U is one polygon, of the pixels that 2 steps of growth reach (computed on the whole
    # array: ndimage numbers components in raster order too)
    classes = _draw()
    ids = ndimage.label(classes == 1)[0].astype(np.int32)
    grow_into(ids, classes == 2, 2)
    np.testing.assert_array_equal(shapely.area(g.geometry.values), np.bincount(ids.ravel())[1:] * 100)
    assert list(g.id) == ["1", "2", "3"]  # numbered in raster order of the first pixel
    assert g.determination_method.eq("auto-imagery").all()
    # fiboa's area: hectares (float32) on the ground, from a local equal-area projection: the
    # UTM grid's area differs by its scale factor (0.9996² at the central meridian, here ~1.0008)
    np.testing.assert_allclose(g["area"] * 1e4, shapely.area(g.geometry.values), rtol=2e-3)


def test_result_does_not_depend_on_the_chunk(tmp_path, drawn) -> None:
    src = open_class_raster(drawn)
    ref = None
    for chunk in (7, 13, 30, 1024):
        delineate_fields(src, tmp_path / f"c{chunk}.parquet", Delineation(chunk=chunk))
        g = _polygons(tmp_path / f"c{chunk}.parquet")
        if ref is None:
            ref = g
            continue
        assert list(g.id) == list(ref.id), chunk
        assert shapely.equals_exact(g.geometry.values, ref.geometry.values, 0).all(), chunk
        np.testing.assert_array_equal(g["area"].values, ref["area"].values)


def test_interiors_only_and_min_area(tmp_path, drawn) -> None:
    src = open_class_raster(drawn)
    delineate_fields(src, tmp_path / "i.gpkg", Delineation(chunk=20, grow=0, min_area=90_500))
    g = _polygons(tmp_path / "i.gpkg")
    interiors = np.bincount(ndimage.label(_draw() == 1)[0].ravel())[1:] * 100
    assert len(g) == (interiors >= 90_500).sum() == 2
    np.testing.assert_array_equal(np.sort(shapely.area(g.geometry.values)),
                                  np.sort(interiors[interiors >= 90_500]))  # fmt: skip
    assert g.crs.to_epsg() == 32633
    assert set(g.columns) >= {"id", "area", "perimeter", "determination_method", "geometry"}


def test_probabilities_give_the_fields_of_their_argmax(tmp_path, drawn) -> None:
    classes = _draw()
    rng = np.random.default_rng(0)
    scores = rng.random((3, *classes.shape)).astype(np.float32) * 0.4
    for k in range(3):
        scores[k][classes == k] += 0.6
    path = write_geotiff(tmp_path / "p.tif", scores)
    delineate_fields(open_class_raster(path), tmp_path / "p.parquet", Delineation(chunk=25))
    delineate_fields(open_class_raster(drawn), tmp_path / "c.parquet", Delineation(chunk=25))
    p, c = _polygons(tmp_path / "p.parquet"), _polygons(tmp_path / "c.parquet")
    assert shapely.equals_exact(p.geometry.values, c.geometry.values, 0).all()


def test_fiboa_geoparquet_validates(tmp_path, drawn) -> None:
    import datetime as dt

    out = tmp_path / "fiboa.parquet"
    delineate_fields(open_class_raster(drawn), out, Delineation(chunk=32),
                     determination_datetime=dt.datetime(2021, 6, 17, tzinfo=dt.UTC))  # fmt: skip
    assert validate_fiboa(out) == []
    schema = pq.read_schema(out)
    assert str(schema.field("area").type) == "float"
    assert str(schema.field("determination_datetime").type) == "timestamp[ms, tz=UTC]"
    # and the validator does catch what is not fiboa
    import pyarrow as pa

    t = pq.read_table(out)
    pq.write_table(t.replace_schema_metadata(None), tmp_path / "bad.parquet")
    bad = validate_fiboa(tmp_path / "bad.parquet")
    assert any("fiboa" in p for p in bad) and any("GeoParquet" in p for p in bad)
    pq.write_table(t.set_column(0, "id", pa.array([""] * len(t))), tmp_path / "bad2.parquet")
    assert any("should be non-empty" in p or "too short" in p
               for p in validate_fiboa(tmp_path / "bad2.parquet"))  # fmt: skip


def test_real_ftw_mask_one_polygon_per_field_for_any_chunk(tmp_path) -> None:
    path = shared("ftw/mask.tif")
    src = open_class_raster(path, nodata=None)  # its nodata tag 0 is the background class
    with rasterio.open(path) as ds:
        mask = ds.read(1)
    _, n_fields = ndimage.label(mask == 1)
    grown = ndimage.label(mask == 1)[0].astype(np.int32)
    grow_into(grown, mask == 2, 2)
    for chunk in (1024, 50):
        res = delineate_fields(src, tmp_path / f"ftw{chunk}.parquet", Delineation(chunk=chunk))
        assert res["fields"] == n_fields == 272
        assert validate_fiboa(tmp_path / f"ftw{chunk}.parquet") == []
    a, b = _polygons(tmp_path / "ftw1024.parquet"), _polygons(tmp_path / "ftw50.parquet")
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, 0).all()
    # every field pixel (interiors grown 2 px into the boundaries) is in exactly one polygon
    assert shapely.area(shapely.union_all(a.geometry.values)) == pytest.approx(
        (grown > 0).sum() * 100)
    assert a.geometry.area.sum() == pytest.approx((grown > 0).sum() * 100)


def test_fields_polygons_command(tmp_path, drawn) -> None:
    code, out, err = invoke("fields", "polygons", drawn, "--out", tmp_path / "f.gpkg", "--chunk",
                            "20", "--datetime", "2021-06-17")  # fmt: skip
    assert code == 0, err
    assert out.startswith("3 fields")
    code, _, err = invoke("fields", "polygons", drawn, "--out", tmp_path / "g.gpkg", "--nodata",
                          "zero")  # fmt: skip
    assert code == 2 and "--nodata zero" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke("fields", "polygons", drawn, "--out", tmp_path / "g.txt")
    assert code == 2 and "unknown vector format" in err
