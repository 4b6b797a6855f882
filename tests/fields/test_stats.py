"""Per-field statistics (geoseg.fields.stats).

Real data: the 100 Austrian parcels of ../shared/data/fiboa (EPSG:31287; skipped when absent).
Generated: class and multispectral rasters drawn on the parcels' footprint in UTM 33N (the
parcels do not overlap any real raster here), and a grid of 100 000 square fields.
"""

from __future__ import annotations

import threading
import time

import geopandas as gpd
import numpy as np
import psutil
import pyarrow as pa
import pyogrio
import pytest
import shapely
from affine import Affine
from exactextract import exact_extract

from geoseg.fields.raster import open_class_raster
from geoseg.fields.stats import StatsOptions, field_stats
from geoseg.scene.indices import IndexBands
from geoseg.scene.scene import Scene
from tests.support import invoke, shared, write_geotiff

PARCELS = "fiboa/inspire_schlaege_2025-1_polygon.gpkg.zip"


def _parcels() -> str:
    return f"/vsizip/{shared(PARCELS)}/INSPIRE_SCHLAEGE_2025-1_POLYGON.gpkg"


@pytest.fixture(scope="module")
def footprint(tmp_path_factory):
    """A class raster (0-2, nodata 255 in a corner) and a 4-band raster in UTM 33N, 10 m, over
    the parcels (generated values)."""
    parcels = gpd.read_file(_parcels()).to_crs(32633)
    x0, y0, x1, y1 = parcels.total_bounds
    t = Affine(10, 0, np.floor(x0 / 10) * 10 - 100, 0, -10, np.ceil(y1 / 10) * 10 + 100)
    h, w = int((y1 - y0) / 10) + 20, int((x1 - x0) / 10) + 20
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 3, (1, h, w)).astype(np.uint8)
    cls[0, : h // 3, : w // 3] = 255
    folder = tmp_path_factory.mktemp("footprint")
    classes = write_geotiff(folder / "classes.tif", cls, transform=t, nodata=255)
    ms = rng.integers(200, 4000, (4, h, w)).astype(np.uint16)
    image = write_geotiff(folder / "s2.tif", ms, transform=t)
    return parcels, classes, image


def _by_geo_id(path) -> gpd.GeoDataFrame:
    g = gpd.read_parquet(path) if str(path).endswith(".parquet") else gpd.read_file(path)
    return g.sort_values("GEO_ID").reset_index(drop=True)


def test_class_fractions_equal_exactextract_on_the_whole_raster(tmp_path, footprint) -> None:
    parcels, classes, _ = footprint
    res = field_stats(_parcels(), open_class_raster(classes), tmp_path / "s.parquet")
    got = _by_geo_id(tmp_path / "s.parquet")
    assert res["fields"] == len(got) == 100 and got.GEO_ID.is_unique
    assert got.crs.to_epsg() == 31287  # the fields keep their CRS
    ref = exact_extract(str(classes), parcels, ["unique", "frac", "count"], include_cols=["GEO_ID"],
                        output="pandas").sort_values("GEO_ID").reset_index(drop=True)  # fmt: skip
    fracs = got[[f"frac_class_{k}" for k in range(3)]].to_numpy()
    for k, row in ref.iterrows():
        expect = np.zeros(3)
        for u, f in zip(row["unique"], row["frac"], strict=True):
            expect[u] = f
        if row["count"] > 0:
            np.testing.assert_allclose(fracs[k], expect, rtol=1e-12, atol=1e-12)
    ok = got.status == "ok"
    np.testing.assert_allclose(fracs[ok].sum(axis=1), 1.0)  # over the valid area
    assert (got.valid_fraction[ok] > 0).all() and (got.valid_fraction <= 1 + 1e-9).all()
    assert got.valid_fraction.min() < 1  # some parcels lie on the nodata corner
    ground = parcels.sort_values("GEO_ID").geometry.area.to_numpy()
    np.testing.assert_allclose(got.area_m2, ground, rtol=2e-3)  # UTM scale factor


def test_fields_crossing_blocks_are_counted_once_with_the_same_numbers(tmp_path, footprint) -> None:
    _, classes, _ = footprint
    src = open_class_raster(classes)
    whole = field_stats(_parcels(), src, tmp_path / "a.parquet", options=StatsOptions(block=4096))
    small = field_stats(_parcels(), src, tmp_path / "b.parquet", options=StatsOptions(block=48))
    assert whole["blocks"] == 1 and small["blocks"] > 10
    a, b = _by_geo_id(tmp_path / "a.parquet"), _by_geo_id(tmp_path / "b.parquet")
    assert len(b) == 100
    cols = ["area_m2", "valid_fraction", "frac_class_0", "frac_class_1", "frac_class_2"]
    np.testing.assert_array_equal(a[cols].to_numpy(), b[cols].to_numpy())


def test_index_statistics_of_a_scene(tmp_path, footprint) -> None:
    parcels, classes, image = footprint
    roles = ["red", "green", "blue", "nir"]
    scene = Scene.open({"image": image}).with_indices(
        {"vi": IndexBands(indices=["ndvi"], scale=1e-4)}, {"image": roles})
    field_stats(_parcels(), open_class_raster(classes), tmp_path / "i.gpkg", scene=scene,
                options=StatsOptions(percentiles=(25, 75), block=64))  # fmt: skip
    got = _by_geo_id(tmp_path / "i.gpkg")
    assert {"ndvi_mean", "ndvi_std", "ndvi_p25", "ndvi_p75"} <= set(got.columns)
    # reference: NDVI of the whole raster, then exactextract
    g = scene.grid
    from geoseg.geometry.window import PixelWindow

    arrays, _ = scene.read(PixelWindow(0, g.height, 0, g.width))
    ndvi = write_geotiff(tmp_path / "ndvi.tif", arrays["vi"], transform=g.transform)
    ref = exact_extract(str(ndvi), parcels, ["mean", "quantile(q=0.25)"], include_cols=["GEO_ID"],
                        output="pandas").sort_values("GEO_ID").reset_index(drop=True)  # fmt: skip
    np.testing.assert_allclose(got.ndvi_mean, ref["mean"], rtol=1e-6)
    np.testing.assert_allclose(got.ndvi_p25, ref["quantile_25"], rtol=1e-6)


def test_outside_and_nodata_fields_are_reported(tmp_path) -> None:
    cls = np.zeros((1, 40, 40), np.uint8)
    cls[0, :, 20:] = 255
    raster = write_geotiff(tmp_path / "c.tif", cls, nodata=255)  # x 500000-500400
    x, y = 500000, 5800000
    geoms = [shapely.box(x + 10, y - 100, x + 100, y - 10),  # ok
             shapely.box(x + 250, y - 100, x + 350, y - 10),  # on nodata only
             shapely.box(x + 5000, y - 100, x + 5100, y - 10),  # outside
             shapely.box(x - 50, y - 100, x + 50, y - 10)]  # half outside  # fmt: skip
    fields = gpd.GeoDataFrame({"name": list("abcd")}, geometry=geoms, crs=32633)
    fields.to_file(tmp_path / "f.gpkg")
    res = field_stats(tmp_path / "f.gpkg", open_class_raster(raster), tmp_path / "s.gpkg")
    got = gpd.read_file(tmp_path / "s.gpkg").set_index("name")
    assert res["outside"] == 1 and res["nodata"] == 1 and res["fields"] == 4
    assert list(got.loc[list("abcd"), "status"]) == ["ok", "nodata", "outside", "ok"]
    assert got.loc["a", "frac_class_0"] == 1.0 and got.loc["a", "valid_fraction"] == 1.0
    assert got.loc["d", "valid_fraction"] == pytest.approx(0.5)
    assert np.isnan(got.loc["c", "frac_class_0"]) and got.loc["c", "area_m2"] > 0


def _grid_fields(path, n_side: int, step: float) -> None:
    """``n_side``² square fields of ``step`` metres from the raster's corner."""
    i, j = (a.ravel() for a in np.meshgrid(np.arange(n_side), np.arange(n_side)))
    x, y = 500000 + i * step, 5800000 - (j + 1) * step
    geoms = shapely.box(x + 1, y + 1, x + step - 1, y + step - 1)
    table = pa.table({"field": np.arange(len(geoms)), "geometry": shapely.to_wkb(geoms)})
    pyogrio.write_arrow(table, path, geometry_name="geometry", geometry_type="Polygon",
                        crs="EPSG:32633", driver="GPKG")  # fmt: skip


def _peak_rss(fn) -> int:
    """Peak resident memory of this process while ``fn`` runs, sampled every 5 ms."""
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0]


def test_bounded_memory_with_100k_fields(tmp_path) -> None:
    """Generated: 10 000 then 100 000 square fields (same density: 63 m squares) on a 2000²
    class raster. Memory follows the block and the fields in it, not the number of fields: the
    100 k run peaks no higher than the 10 k run did (+ slack), in the same process."""
    cls = np.random.default_rng(0).integers(0, 3, (1, 2000, 2000)).astype(np.uint8)
    raster = open_class_raster(write_geotiff(tmp_path / "c.tif", cls, nodata=255))
    step = 20000 / 316
    _grid_fields(tmp_path / "small.gpkg", 100, step)
    _grid_fields(tmp_path / "large.gpkg", 316, step)
    opts = StatsOptions(block=512)
    res: dict = {}
    base = psutil.Process().memory_info().rss
    small = _peak_rss(lambda: res.update(
        s=field_stats(tmp_path / "small.gpkg", raster, tmp_path / "s.parquet", options=opts)))
    large = _peak_rss(lambda: res.update(
        l=field_stats(tmp_path / "large.gpkg", raster, tmp_path / "l.parquet", options=opts)))
    assert res["s"]["fields"] == 100**2 and res["l"]["fields"] == 316**2
    # holding them would not: 100 k fields as a GeoDataFrame take ~55 MiB, their rows ~115 MiB
    assert large - base < small - base + 20 * 2**20, ((small - base) / 2**20, (large - base) / 2**20)
    t = pa.parquet.read_table(tmp_path / "l.parquet", columns=["field", "frac_class_0"])
    assert len(t) == 316**2 and len(set(t.column("field").to_pylist())) == 316**2


def test_fields_stats_command(tmp_path, footprint) -> None:
    _, classes, image = footprint
    code, out, err = invoke("fields", "stats", "--fields", _parcels(), "--prediction", classes,
                            "--scene", image, "--index", "ndvi,gndvi", "--roles",
                            "red,green,blue,nir", "--out", tmp_path / "s.parquet")  # fmt: skip
    assert code == 0, err
    assert out.startswith("100 fields (0 outside")
    assert {"gndvi_p90", "frac_class_2"} <= set(gpd.read_parquet(tmp_path / "s.parquet").columns)
    code, _, err = invoke("fields", "stats", "--fields", _parcels(), "--prediction", classes,
                          "--scene", image, "--index", "ndre", "--roles", "red,green,blue,nir",
                          "--out", tmp_path / "t.parquet")  # fmt: skip
    assert code == 2 and "--index ndre" in err and "rededge" in err
