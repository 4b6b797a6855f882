"""Vectorisation: exact georeferencing, chunk-size independence, nodata, ground areas in
projected/geographic/Web Mercator CRSs, min_area, coverage simplification, output formats;
streamed vectorisation (polygonize_to_file): same polygons, gap-free simplification, atomic
files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize

from geoseg.bundle.card import ClassInfo
from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox
from geoseg.outputs import vectors
from geoseg.outputs.vectors import (
    FORMATS,
    ground_area,
    polygonize,
    polygonize_to_file,
    write_vectors,
)
from tests.support import DATA, RGB

CLASSES = [
    ClassInfo(id=0, name="ground", color="#a0a0a0"),
    ClassInfo(id=1, name="low vegetation", color="#90ee90"),
    ClassInfo(id=2, name="trees", color="#228b22"),
    ClassInfo(id=3, name="tall", color="#ff0000"),
]
COLUMNS = ["class_id", "class_name", "area_m2", "geometry"]


@pytest.fixture(scope="module")
def rgb() -> tuple[np.ndarray, GridBox]:
    """RGB.byte.tif: four classes from thresholds of band 1; 255 on its 32 % nodata collar."""
    with rasterio.open(RGB) as ds:
        data, grid = ds.read(), GridBox.from_dataset(ds)
    out = np.digitize(data[0], [60, 90, 120]).astype(np.uint8)
    out[(data == 0).all(axis=0)] = 255
    return out, grid


@pytest.fixture(scope="module")
def hag() -> tuple[np.ndarray, GridBox]:
    """Alexandria nDSM (2 m): height classes < 1 m, 1-3 m, 3-10 m, > 10 m."""
    with rasterio.open(DATA / "alexandria" / "hag.tif") as ds:
        heights, grid = ds.read(1), GridBox.from_dataset(ds)
    return np.digitize(heights, [1.0, 3.0, 10.0]).astype(np.uint8), grid


@pytest.fixture(scope="module")
def rgb_polygons(rgb: tuple[np.ndarray, GridBox]) -> gpd.GeoDataFrame:
    classes, grid = rgb
    return polygonize(reader(classes), grid, CLASSES, chunk=100)


@pytest.fixture(scope="module")
def hag_south_up(hag: tuple[np.ndarray, GridBox]) -> tuple[np.ndarray, GridBox]:
    """The same classes on a south-up grid (positive determinant: ring orientation flips)."""
    classes, grid = hag
    t = grid.transform
    return classes, GridBox(*classes.shape, Affine(t.a, 0, t.c, 0, -t.e, t.f), grid.crs)


def reader(arr: np.ndarray, nodata: int = 255):
    def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray | None:
        win = arr[r0:r1, c0:c1]
        return None if (win == nodata).all() else win

    return read


def rasterised(gdf: gpd.GeoDataFrame, grid: GridBox) -> np.ndarray:
    return rasterize(
        zip(gdf.geometry, gdf.class_id, strict=True),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=255,
        dtype="uint8",
    )


def read_layer(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)


def assert_same_polygons(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame) -> None:
    """Same rows in any order, geometries equal up to ring orientation and start vertex."""
    assert list(got.columns) == COLUMNS and got.crs == want.crs and len(got) == len(want)

    def rows(gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, np.ndarray]:
        wkb = shapely.to_wkb(shapely.normalize(gdf.geometry.values))
        order = sorted(range(len(gdf)), key=lambda i: (int(gdf.class_id.iat[i]), wkb[i]))
        return gdf.iloc[order].reset_index(drop=True), wkb[order]

    (got, got_wkb), (want, want_wkb) = rows(got), rows(want)
    assert (got_wkb == want_wkb).all()  # vertex for vertex
    np.testing.assert_array_equal(got.class_id, want.class_id)
    assert (got.class_name == want.class_name).all()
    np.testing.assert_allclose(got.area_m2, want.area_m2, rtol=1e-12)  # .dbf: decimal text


def assert_ogc_orientation(geoms: np.ndarray) -> None:
    """Exterior rings counter-clockwise, holes clockwise (OGC, GeoJSON)."""
    rings, owner = shapely.get_rings(geoms, return_index=True)
    exterior = np.r_[True, owner[1:] != owner[:-1]]
    assert shapely.is_ccw(rings[exterior]).all()
    assert not shapely.is_ccw(rings[~exterior]).any()


def assert_valid_coverage(geoms: np.ndarray) -> None:
    """Valid polygons in OGC orientation whose neighbours (pieces merged across chunk lines
    included) do not overlap and share exactly the same edges."""
    assert shapely.is_valid(geoms).all()
    assert_ogc_orientation(geoms)
    assert shapely.coverage_is_valid(geoms)
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = i < j
    assert shapely.area(shapely.intersection(geoms[i[pairs]], geoms[j[pairs]])).max() < 1e-6


def in_raster_order(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    x0, y0, _, y1 = shapely.bounds(gdf.geometry.values).T
    return gdf.iloc[np.lexsort((gdf.area_m2, x0, -y1, -y0))].reset_index(drop=True)


def geodesic_areas(gdf: gpd.GeoDataFrame, step: float) -> np.ndarray:
    """Reference areas: densify (CRS units), go to lon/lat, geodesic area on the ellipsoid."""
    geod = CRS(gdf.crs).get_geod()
    dense = gdf.geometry.segmentize(step).to_crs(CRS(gdf.crs).geodetic_crs)
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in dense])


@pytest.mark.parametrize("name", ["rgb", "hag", "hag_south_up"])
def test_polygons_rasterised_back_reproduce_the_class_raster(
    name: str, request: pytest.FixtureRequest
) -> None:
    classes, grid = request.getfixturevalue(name)
    if name == "rgb":
        gdf = request.getfixturevalue("rgb_polygons")
    else:
        gdf = polygonize(reader(classes), grid, CLASSES, chunk=100)
    assert list(gdf.columns) == COLUMNS and gdf.crs == grid.crs
    assert gdf.class_id.dtype == np.int32 and gdf.area_m2.dtype == np.float64
    assert (gdf.geom_type == "Polygon").all() and gdf.is_valid.all()
    assert_ogc_orientation(gdf.geometry.values)
    np.testing.assert_array_equal(rasterised(gdf, grid), classes)
    names = {c.id: c.name for c in CLASSES}
    assert (gdf.class_name == gdf.class_id.map(names)).all()


def test_polygon_set_does_not_depend_on_the_chunk_size(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    whole = polygonize(reader(classes), grid, CLASSES, chunk=max(grid.shape))
    assert len(whole) > 10_000  # a realistic, fragmented layer
    for chunk in (64, 100, 257):
        got = (
            rgb_polygons
            if chunk == 100
            else polygonize(reader(classes), grid, CLASSES, chunk=chunk)
        )
        assert len(got) == len(whole)
        np.testing.assert_array_equal(got.class_id, whole.class_id)
        np.testing.assert_array_equal(got.area_m2, whole.area_m2)
        # vertex-for-vertex identical: no leftover vertex where a chunk line was crossed
        assert shapely.equals_exact(got.geometry.values, whole.geometry.values, tolerance=0).all()


def test_no_polygon_over_nodata(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    gdf = rgb_polygons
    nodata = classes == 255
    assert nodata.mean() > 0.3
    assert (
        rasterize(gdf.geometry, out_shape=grid.shape, transform=grid.transform)[nodata] == 0
    ).all()
    # polygons cover exactly the valid pixels: planar areas add up to their count
    px = abs(grid.transform.determinant)
    assert gdf.area.sum() == pytest.approx((~nodata).sum() * px, rel=1e-9)


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


def test_ground_areas_in_a_projected_crs(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=64)
    ref = geodesic_areas(gdf, step=2.0)
    np.testing.assert_allclose(gdf.area_m2, ref, rtol=1e-3)
    # UTM is not equal-area: ground areas differ from planar ones by the scale factor (~1e-4)
    assert not np.allclose(gdf.area_m2, gdf.area, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        # geographic, around latitude 60: 0.001° x 0.0005° pixels (~56 m square)
        ("EPSG:4326", Affine(0.001, 0, 10.0, 0, -0.0005, 60.1)),
        # Web Mercator at latitude 60: planar areas are ~4x the ground areas there
        ("EPSG:3857", Affine(100.0, 0, 1_113_195.0, 0, -100.0, 8_399_737.0)),
    ],
)
def test_ground_areas_in_geographic_and_web_mercator_crs(
    hag: tuple[np.ndarray, GridBox], crs: str, transform: Affine
) -> None:
    classes, _ = hag
    grid = GridBox(*classes.shape, transform, CRS.from_user_input(crs))
    gdf = polygonize(reader(classes), grid, CLASSES, chunk=100)
    ref = geodesic_areas(gdf, step=abs(transform.a) / 2)
    np.testing.assert_allclose(gdf.area_m2, ref, rtol=1e-3)
    ratio = gdf.area_m2.sum() / shapely.area(gdf.geometry.values).sum()  # planar, CRS units
    if crs == "EPSG:3857":
        assert ratio == pytest.approx(np.cos(np.radians(60)) ** 2, rel=0.02)
    else:  # square degrees -> m²: ~111 km x 55.7 km per degree² at latitude 60
        assert ratio == pytest.approx(111_400 * 55_800, rel=0.01)


def test_results_do_not_depend_on_the_coordinate_passes(
    hag: tuple[np.ndarray, GridBox], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Affine and area passes go over a bounded number of points at a time (huge polygons):
    splitting them finely changes nothing, ring reversal (south-up grids) included."""
    classes, grid = hag
    flipped = GridBox(*classes.shape, grid.transform * Affine.scale(1, -1), grid.crs)
    ref = [polygonize(reader(classes), g, CLASSES, chunk=64) for g in (grid, flipped)]
    monkeypatch.setattr(vectors, "_POINTS_PER_PASS", 7)
    for g, r in zip((grid, flipped), ref, strict=True):
        gdf = polygonize(reader(classes), g, CLASSES, chunk=64)
        assert shapely.equals_exact(gdf.geometry.values, r.geometry.values, 0).all()
        np.testing.assert_allclose(gdf.area_m2, r.area_m2, rtol=1e-12)


def test_multipolygon_area_counts_every_part_and_hole(hag: tuple[np.ndarray, GridBox]) -> None:
    _, grid = hag
    x, y = grid.transform * (10, 10)
    a = shapely.box(x, y - 100, x + 100, y)
    holed = a.difference(shapely.box(x + 20, y - 80, x + 40, y - 60))
    b = shapely.box(x + 300, y - 400, x + 350, y - 350)
    single = ground_area(np.array([holed, b]), grid)
    multi = ground_area(np.array([shapely.MultiPolygon([holed, b])]), grid)
    assert multi[0] == pytest.approx(single.sum(), rel=1e-9)
    assert single[0] == pytest.approx(9600, rel=2e-3)  # UTM scale factor near its centre


def test_without_crs_areas_are_unknown(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    bare = GridBox(grid.height, grid.width, grid.transform, None)
    gdf = polygonize(reader(classes), bare, CLASSES, chunk=128, min_area=100.0)
    assert gdf.crs is None and len(gdf) and gdf.area_m2.isna().all()  # nothing dropped either


def test_min_area_drops_small_polygons(
    rgb: tuple[np.ndarray, GridBox], rgb_polygons: gpd.GeoDataFrame
) -> None:
    classes, grid = rgb
    full = rgb_polygons
    limit = 5 * 300.0 * 300.0  # five 300 m pixels
    big = polygonize(reader(classes), grid, CLASSES, chunk=256, min_area=limit)
    assert 0 < len(big) < len(full) / 2
    assert (big.area_m2 >= limit).all()
    kept = full[full.area_m2 >= limit].reset_index(drop=True)
    assert shapely.equals_exact(big.geometry.values, kept.geometry.values, tolerance=0).all()


def test_simplification_keeps_a_gapless_coverage(hag: tuple[np.ndarray, GridBox]) -> None:
    classes, grid = hag
    tol = 4.0  # two pixels
    raw = polygonize(reader(classes), grid, CLASSES, chunk=100)
    simple = polygonize(reader(classes), grid, CLASSES, chunk=100, simplify=tol)
    assert len(simple) == len(raw)
    n_raw = shapely.get_num_coordinates(raw.geometry.values).sum()
    n_simple = shapely.get_num_coordinates(simple.geometry.values).sum()
    assert n_simple < 0.6 * n_raw
    geoms = simple.geometry.values
    assert_valid_coverage(geoms)
    # no gap opened between neighbours: the union is one polygon without holes, and (the
    # scene has no nodata) covers the scene up to the simplified outer boundary
    union = shapely.union_all(geoms)
    assert union.geom_type == "Polygon" and not union.interiors
    scene = grid.width * grid.height * abs(grid.transform.determinant)
    assert union.area == pytest.approx(scene, rel=2e-3)
    np.testing.assert_allclose(simple.area_m2.sum(), raw.area_m2.sum(), rtol=2e-3)


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


# --------------------------------------------------------------------------------------------
# streamed vectorisation


@pytest.mark.parametrize(
    ("chunk", "ext", "min_area"),
    [(64, ".gpkg", 0.0), (100, ".parquet", 0.0), (257, ".fgb", 0.0), (100, ".shp", 3 * 300.0**2)],
)
def test_streamed_file_holds_the_polygons_of_polygonize(
    chunk: int, ext: str, min_area: float, rgb: tuple[np.ndarray, GridBox],
    rgb_polygons: gpd.GeoDataFrame, tmp_path: Path,
) -> None:  # fmt: skip
    classes, grid = rgb
    want = rgb_polygons[rgb_polygons.area_m2 >= min_area].reset_index(drop=True)
    path = tmp_path / f"polygons{ext}"
    out = polygonize_to_file(
        reader(classes), grid, CLASSES, path, chunk=chunk, min_area=min_area, layer="polygons"
    )
    got = read_layer(path)
    assert_same_polygons(got, want)
    if ext == ".gpkg":
        assert pyogrio.list_layers(path)[:, 0].tolist() == ["polygons"]
        assert (got.geom_type == "Polygon").all() and got.is_valid.all()
        assert_ogc_orientation(got.geometry.values)
    if ext == ".shp":
        assert {p.suffix for p in out["files"]} == {".shp", ".shx", ".dbf", ".prj", ".cpg"}
    else:
        assert out["files"] == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in out["files"])
    by_class = want.groupby("class_id").area_m2
    assert out["polygons"] == len(want)
    assert out["polygons_per_class"] == by_class.size().to_dict()
    assert out["area_m2_per_class"] == pytest.approx(by_class.sum().to_dict(), rel=1e-12)


@pytest.mark.parametrize("chunk", [64, 100])
def test_streamed_simplification_keeps_a_gapless_coverage(
    chunk: int, hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    classes = classes.copy()
    rows, cols = np.ogrid[: grid.height, : grid.width]
    hole = (rows - 150) ** 2 + (cols - 120) ** 2 < 30**2  # nodata across chunk lines
    classes[hole] = 255
    tol = 4.0  # two pixels
    raw = polygonize(reader(classes), grid, CLASSES, chunk=chunk)
    path = tmp_path / "simple.parquet"
    out = polygonize_to_file(reader(classes), grid, CLASSES, path, chunk=chunk, simplify=tol)
    simple = gpd.read_parquet(path)
    assert out["polygons"] == len(simple) == len(raw)
    n_raw = shapely.get_num_coordinates(raw.geometry.values).sum()
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.65 * n_raw
    geoms = simple.geometry.values
    assert (simple.geom_type == "Polygon").all()
    assert_valid_coverage(geoms)
    # no gap opened: the union is one polygon whose only hole is the nodata disc
    union = shapely.union_all(geoms)
    assert union.geom_type == "Polygon" and len(union.interiors) == 1
    px = abs(grid.transform.determinant)
    assert union.area == pytest.approx((~hole).sum() * px, rel=2e-3)
    np.testing.assert_allclose(simple.area_m2.sum(), raw.area_m2.sum(), rtol=2e-3)
    # same polygons as the unsimplified ones: each simplified polygon covers most of its own
    raw_geoms = raw.geometry.values
    k, m = shapely.STRtree(raw_geoms).query(geoms, predicate="intersects")
    share = shapely.area(shapely.intersection(geoms[k], raw_geoms[m])) / shapely.area(geoms[k])
    best = np.zeros(len(geoms))
    np.maximum.at(best, k, share)
    assert np.median(best) > 0.9


def test_streamed_empty_scene_and_no_crs(hag: tuple[np.ndarray, GridBox], tmp_path: Path) -> None:
    classes, grid = hag
    for ext in FORMATS:
        path = tmp_path / f"empty{ext}"
        out = polygonize_to_file(lambda *w: None, grid, CLASSES, path)
        assert out["polygons"] == 0 and out["area_m2_per_class"] == {}
        back = read_layer(path)
        assert len(back) == 0 and list(back.columns) == COLUMNS and back.crs == grid.crs
    bare = GridBox(grid.height, grid.width, grid.transform, None)
    for ext in (".gpkg", ".parquet"):
        path = tmp_path / f"bare{ext}"
        out = polygonize_to_file(reader(classes), bare, CLASSES, path, chunk=128, min_area=100.0)
        back = read_layer(path)
        assert back.crs is None and len(back) == out["polygons"] > 0
        assert back.area_m2.isna().all()  # unknown, and nothing dropped by min_area


def test_streamed_errors_leave_nothing_behind(
    hag: tuple[np.ndarray, GridBox], tmp_path: Path
) -> None:
    classes, grid = hag
    calls = []

    def failing(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        calls.append(r0)
        if len(calls) == 5:  # after some polygons were written
            raise ValueError("tile 5 is corrupt")
        return classes[r0:r1, c0:c1]

    with pytest.raises(OutputError, match="unknown vector format"):
        polygonize_to_file(failing, grid, CLASSES, tmp_path / "x.geojson")
    with pytest.raises(OutputError, match="does not exist"):
        polygonize_to_file(failing, grid, CLASSES, tmp_path / "missing" / "x.gpkg")
    assert not calls  # checked before any work
    polygonize_to_file(reader(classes), grid, CLASSES, tmp_path / "kept.gpkg", chunk=128)
    before = (tmp_path / "kept.gpkg").read_bytes()
    for name in ("kept.gpkg", "y.shp", "y.parquet", "y.fgb"):
        calls.clear()
        # the reader's own error, not an unwritable output
        with pytest.raises(ValueError, match="tile 5 is corrupt"):
            polygonize_to_file(failing, grid, CLASSES, tmp_path / name, chunk=64)
    assert (tmp_path / "kept.gpkg").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.gpkg"]
