"""Scene: lazy modalities on one grid, validity masks, refusals with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.errors import GridError, InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.scene.scene import Scene, parse_band_spec
from tests.support import DATA, RGB
from tests.support import write_geotiff as write

OLINDA = DATA / "olinda"
ALEX = DATA / "alexandria"



def test_grid_slicing_keeps_georeferencing() -> None:
    with rasterio.open(RGB) as ds:
        g = GridBox.from_dataset(ds)
        sub = g[100:200, 50:80]
        assert sub.shape == (100, 30)
        assert sub.transform.c == pytest.approx(ds.xy(100, 50, offset="ul")[0])
        assert sub.transform.f == pytest.approx(ds.xy(100, 50, offset="ul")[1])


def test_other_modality_is_warped_onto_the_reference_grid() -> None:
    scene = Scene.open({"image": OLINDA / "L7_ETMs.tif", "dem": OLINDA / "olinda_dem_utm25s.tif"})
    assert scene.modalities["image"].aligned and not scene.modalities["dem"].aligned
    arrays, valid = scene.read(PixelWindow(50, 150, 60, 200))
    assert arrays["image"].shape == (6, 100, 140) and arrays["dem"].shape == (1, 100, 140)
    assert valid.mean() > 0.95
    # bilinear resampling of a 90 m DEM on a 28.5 m grid: smooth, values within the DEM range
    with rasterio.open(OLINDA / "olinda_dem_utm25s.tif") as ds:
        lo, hi = ds.read(1).min(), ds.read(1).max()
    d = arrays["dem"][0][valid]
    assert lo - 1e-3 <= d.min() and d.max() <= hi + 1e-3
    # the same point read through the warp agrees with a direct sample of the DEM
    x, y = scene.grid.transform * (130.5, 100.5)
    with rasterio.open(OLINDA / "olinda_dem_utm25s.tif") as ds:
        direct = next(ds.sample([(x, y)]))[0]
    assert abs(arrays["dem"][0, 50, 70] - direct) < 6  # one 90 m cell of relief at most


def test_band_selection_by_index_and_description(tmp_path: Path) -> None:
    src = write(tmp_path / "d.tif", np.arange(3 * 20 * 20, dtype="float32").reshape(3, 20, 20))
    with rasterio.open(src, "r+") as ds:
        ds.descriptions = ("red", "green", "nir")
    s = Scene.open({"image": src}, bands={"image": parse_band_spec("nir,1")})
    assert s.modalities["image"].bands == (3, 1)
    with pytest.raises(InputError, match=r"no band described 'swir'"):
        Scene.open({"image": src}, bands={"image": ["swir"]})
    with pytest.raises(InputError, match=r"band 5 does not exist"):
        Scene.open({"image": src}, bands={"image": [5]})


def test_validity_nodata_nan_alpha(tmp_path: Path) -> None:
    data = np.ones((2, 10, 10), "float32")
    data[:, 0, 0] = -1  # all bands nodata -> invalid
    data[0, 1, 1] = -1  # one band nodata only -> still valid (GDAL dataset mask)
    data[1, 2, 2] = np.nan  # any NaN -> invalid
    p = write(tmp_path / "n.tif", data, nodata=-1)
    _, valid = Scene.open({"image": p}).read(PixelWindow(0, 10, 0, 10))
    assert not valid[0, 0] and valid[1, 1] and not valid[2, 2] and valid.sum() == 98
    rgba = np.full((4, 10, 10), 100, "uint8")
    rgba[3, :5] = 0
    p = write(tmp_path / "a.tif", rgba, photometric="RGB", alpha="YES")
    s = Scene.open({"image": p}, bands={"image": [1, 2, 3]})
    _, valid = s.read(PixelWindow(0, 10, 0, 10))
    assert not valid[:5].any() and valid[5:].all()


def test_height_zero_is_valid_data() -> None:
    scene = Scene.open({"height": ALEX / "hag.tif"})
    arrays, valid = scene.read(PixelWindow(0, scene.grid.height, 0, scene.grid.width))
    zero = arrays["height"][0] == 0
    assert zero.sum() > 1000 and valid[zero].all()


def test_missing_file_and_not_a_raster(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tif: file not found"):
        Scene.open({"image": tmp_path / "nope.tif"})
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(InputError, match=r"bad\.tif: not a readable raster"):
        Scene.open({"image": bad})


def test_no_crs_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path / "nocrs.tif", np.ones((1, 8, 8), "uint8"), crs=None)
    with pytest.raises(GridError, match=r"nocrs\.tif: raster has no CRS"):
        Scene.open({"image": p})


def test_rotated_geotransform_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path / "rot.tif", np.ones((1, 8, 8), "uint8"),
              transform=Affine(10, 2, 500000, 2, -10, 5800000))  # fmt: skip
    with pytest.raises(GridError, match="rotated/sheared"):
        Scene.open({"image": p})


def test_modalities_that_do_not_overlap_are_refused() -> None:
    with pytest.raises(GridError, match="does not overlap"):
        Scene.open({"image": RGB, "dem": OLINDA / "olinda_dem_utm25s.tif"})


def test_scene_is_lazy_xarray() -> None:
    scene = Scene.open({"image": OLINDA / "L7_ETMs.tif", "dem": OLINDA / "olinda_dem_utm25s.tif"})
    das = scene.to_xarray(chunks=128)
    assert das["image"].shape == (6, 352, 349) and das["dem"].shape == (1, 352, 349)
    assert das["dem"].chunks is not None
    window = das["dem"][:, 50:150, 60:200].values
    arrays, _ = scene.read(PixelWindow(50, 150, 60, 200))
    np.testing.assert_allclose(window.astype("float32"), arrays["dem"], rtol=1e-5)
