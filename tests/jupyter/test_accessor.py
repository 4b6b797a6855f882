"""The .geoseg xarray accessor: lazy viewports equal the batch run, and compute only what's needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from dask.callbacks import Callback

import geoseg.jupyter  # noqa: F401  (registers .geoseg)
from tests.support import RGB, run_cli


class KeyLog(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.keys: list = []

    def _posttask(self, key, result, dsk, state, id):
        self.keys.append(key)


@pytest.fixture(scope="module")
def full_run(unet_rgb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full")
    run_cli("predict", RGB, "--model", unet_rgb, "--out", out, "--chunk", "256",
            "--tiles-dir", out / "tiles", "--no-progress", "--vector", "none")  # fmt: skip
    return out / "RGB.byte_classes.tif"


def test_viewport_equals_batch_run_and_computes_only_needed_chunks(unet_rgb: Path,
                                                                   full_run: Path) -> None:  # fmt: skip
    img = rioxarray.open_rasterio(RGB, chunks={"x": 256, "y": 256})
    pred = img.geoseg.predict(unet_rgb, chunk=256)
    assert pred.shape == img.shape[1:] and pred.rio.crs == img.rio.crs
    assert pred.rio.transform() == img.rio.transform()
    view = pred.isel(y=slice(300, 420), x=slice(280, 400))
    with KeyLog() as log:
        got = view.values
    # accumulate tasks may be fused into their piece tasks: count the source chunks of pieces
    ran = {k[1:3] for k in log.keys if isinstance(k, tuple) and "geoseg-acc" in k[0]}
    assert ran == {(0, 0), (0, 1), (1, 0), (1, 1)}, "only chunks reaching the viewport run"
    with rasterio.open(full_run) as ds:
        ref = ds.read(1, window=((300, 420), (280, 400)))
    np.testing.assert_array_equal(got, ref)
    # sel by coordinates works the same way
    x0, y0 = float(img.x[280]), float(img.y[300])
    sub = pred.sel(x=slice(x0, None), y=slice(y0, None)).isel(x=slice(0, 10), y=slice(0, 10))
    np.testing.assert_array_equal(sub.values, ref[:10, :10])


def test_probabilities_dataset_and_vectors(unet_rgb: Path) -> None:
    img = rioxarray.open_rasterio(RGB, chunks={"x": 256, "y": 256})
    ds = img.geoseg.predict(unet_rgb, chunk=256, probabilities=True)
    assert isinstance(ds, xr.Dataset) and ds["probabilities"].shape[0] == 4
    view = ds.isel(y=slice(100, 200), x=slice(300, 400)).compute()
    p = view["probabilities"].values.astype(int)
    valid = view["classes"].values != 255
    assert (np.abs(p.sum(0)[valid] - 254) <= 4).all()  # quantised probabilities sum to ~1
    gdf = view["classes"].geoseg.to_vectors()
    assert set(gdf.class_name) <= {f"class_{i}" for i in range(4)}
    assert gdf.crs == img.rio.crs and (gdf.area_m2 > 0).all()


def test_plot_and_explore(unet_rgb: Path, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    img = rioxarray.open_rasterio(RGB, chunks={"x": 256, "y": 256})
    view = img.geoseg.predict(unet_rgb, chunk=256)[200:400, 200:400]
    ax = view.geoseg.plot()
    ax.figure.savefig(tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000
    pytest.importorskip("folium")
    m = view.geoseg.explore(image=img[:, 200:400, 200:400])
    html = m.get_root().render()
    assert "prediction" in html


def test_dataset_with_two_modalities(tmp_path: Path) -> None:
    from geoseg.bundle.untrained import init_bundle

    olinda = Path(__file__).parents[1] / "data" / "olinda"
    bundle = init_bundle("unet", {"image": 3, "dem": 1}, 3, tile=128, output=tmp_path / "b")
    img = rioxarray.open_rasterio(olinda / "L7_ETMs.tif", chunks={"x": 128, "y": 128})[:3]
    dem = rioxarray.open_rasterio(olinda / "olinda_dem_utm25s.tif").rio.reproject_match(img)
    dem = dem.squeeze("band", drop=True)  # 2-D: a Dataset aligns variables on "band"
    out = xr.Dataset({"image": img, "dem": dem}).geoseg.predict(bundle, chunk=128)
    assert out.shape == (352, 349) and int((out[:50, :50] != 255).sum()) == 2500
    card = json.loads((bundle / "card.json").read_text())
    assert out.attrs["class_names"] == [c["name"] for c in card["classes"]]
