"""Spectral indices as derived bands (geoseg.scene.indices).

Real data: the FTW Sentinel-2 sample of ../shared/data/ftw (two seasons of B04, B03, B02, B08;
skipped when absent). Generated: small rasters with red-edge bands, nodata and zero sums,
written by the tests themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import spyndex
import xarray as xr

from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow
from geoseg.scene.arrays import ArrayScene
from geoseg.scene.indices import IndexBands, spectral_index, supported_indices
from geoseg.scene.scene import Scene
from tests.support import invoke, shared, write_geotiff

FTW_ROLES = ["red", "green", "blue", "nir"]
#: spyndex symbols of the roles used here
SYMBOL = {"red": "R", "green": "G", "blue": "B", "nir": "N", "rededge": "RE1"}


def _whole(scene: Scene) -> tuple[dict[str, np.ndarray], np.ndarray]:
    g = scene.grid
    return scene.read(PixelWindow(0, g.height, 0, g.width))


def _spyndex(name: str, bands: dict[str, np.ndarray], **constants: float) -> np.ndarray:
    """spyndex's own evaluation of the catalogue formula on whole arrays."""
    idx = spectral_index(name)
    params = {s: bands[s] for s in idx.bands}
    params.update({c: constants.get(c, spyndex.constants[c].default) for c in idx.constants})
    with np.errstate(all="ignore"):
        return np.asarray(spyndex.computeIndex(idx.catalogue_name, params=params), np.float32)


def test_indices_equal_spyndex_on_the_real_ftw_sample() -> None:
    path = shared("ftw/inference-img.tif")
    names = ["ndvi", "savi", "evi", "gndvi", "ndwi", "msavi"]
    scene = Scene.open({"image": path}, bands={"image": [1, 2, 3, 4]}).with_indices(
        {"vi": IndexBands(indices=names, scale=1e-4)}, {"image": FTW_ROLES})
    arrays, valid = _whole(scene)
    raw = arrays["image"] * np.float32(1e-4)
    bands = {SYMBOL[r]: raw[i] for i, r in enumerate(FTW_ROLES)}
    for k, name in enumerate(names):
        ref = _spyndex(name, bands)
        ok = np.isfinite(ref)
        np.testing.assert_array_equal(arrays["vi"][k][ok], ref[ok], err_msg=name)
        assert not valid[~ok].any(), name
    assert 0.2 < arrays["vi"][0].mean() < 0.9  # farmland in June: green


def test_window_by_window_equals_whole_array(tmp_path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (5, 67, 91)).astype(np.uint16)
    path = write_geotiff(tmp_path / "ms.tif", data)
    roles = ["blue", "green", "red", "rededge", "nir"]
    scene = Scene.open({"image": path}).with_indices(
        {"vi": {"indices": ["ndvi", "ndre", "evi", "savi"], "scale": 1e-4,
                "constants": {"L": 0.5}}}, {"image": roles})  # fmt: skip
    whole, whole_valid = _whole(scene)
    stitched = np.zeros_like(whole["vi"])
    valid = np.zeros_like(whole_valid)
    for win in scene.grid.chunks(16):
        a, v = scene.read(win)
        stitched[(slice(None), *win.slices)] = a["vi"]
        valid[win.slices] = v
    np.testing.assert_array_equal(stitched, whole["vi"])
    np.testing.assert_array_equal(valid, whole_valid)
    bands = {SYMBOL[r]: data[i].astype(np.float32) * np.float32(1e-4) for i, r in enumerate(roles)}
    ref = _spyndex("savi", bands, L=0.5)
    np.testing.assert_array_equal(whole["vi"][3][whole_valid], ref[whole_valid])


def test_nodata_and_division_by_zero_give_nodata_never_inf_or_nan(tmp_path) -> None:
    data = np.full((4, 8, 8), 1000, np.uint16)
    data[3, 0, :] = 3000  # nir
    data[:, 1, 1] = 0  # nodata (all bands 0): the file's mask
    data[0, 2, 2] = data[3, 2, 2] = 0  # red + nir = 0: NDVI divides by zero
    path = write_geotiff(tmp_path / "nd.tif", data, nodata=0)
    scene = Scene.open({"image": path}).with_indices({"vi": {"indices": ["ndvi"]}},
                                                     {"image": FTW_ROLES})
    arrays, valid = _whole(scene)
    assert np.isfinite(arrays["vi"]).all()
    assert not valid[1, 1] and not valid[2, 2]
    assert arrays["vi"][0, 2, 2] == 0.0
    assert valid.sum() == 62
    np.testing.assert_allclose(arrays["vi"][0, 0, 3], (3000 - 1000) / 4000)


def test_roles_resolved_from_a_shuffled_band_order(tmp_path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(1, 4000, (4, 20, 30)).astype(np.uint16)
    path = write_geotiff(tmp_path / "a.tif", data)
    straight = Scene.open({"image": path}).with_indices({"vi": {"indices": ["ndvi", "gndvi"]}},
                                                        {"image": FTW_ROLES})  # fmt: skip
    order = [4, 2, 1, 3]  # nir, green, red, blue
    shuffled = Scene.open({"image": path}, bands={"image": order}).with_indices(
        {"vi": {"indices": ["ndvi", "gndvi"]}}, {"image": [FTW_ROLES[b - 1] for b in order]})
    a, _ = _whole(straight)
    b, _ = _whole(shuffled)
    np.testing.assert_array_equal(a["vi"], b["vi"])


def test_missing_role_is_one_line_naming_role_index_and_roles_fix(tmp_path) -> None:
    path = write_geotiff(tmp_path / "a.tif", np.ones((4, 4, 4), np.uint16))
    with pytest.raises(InputError) as err:
        Scene.open({"image": path}).with_indices({"vi": {"indices": ["ndre"]}}, {"image": FTW_ROLES})
    msg = str(err.value)
    assert "\n" not in msg and "index=ndre" in msg and "'rededge'" in msg and "roles:" in msg
    with pytest.raises(ValueError, match="not a spectral index"):
        IndexBands(indices=["nvdi"])
    assert {"ndvi", "ndre", "savi", "evi", "gndvi", "ndwi"} <= set(supported_indices())


def test_array_scene_applies_the_same_transform(tmp_path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(1, 4000, (4, 24, 24)).astype(np.uint16)
    path = write_geotiff(tmp_path / "a.tif", data)
    spec = {"vi": {"indices": ["ndvi"]}}
    scene = Scene.open({"image": path}).with_indices(spec, {"image": FTW_ROLES})
    import rioxarray  # noqa: F401  (registers .rio)

    arr = xr.open_dataarray(path, engine="rasterio")
    lazy = ArrayScene({"image": arr}).with_indices(spec, {"image": FTW_ROLES})
    assert lazy.band_counts == {"image": 4, "vi": 1} == scene.band_counts
    win = PixelWindow(3, 20, 5, 17)
    np.testing.assert_array_equal(lazy.read(win)[0]["vi"], scene.read(win)[0]["vi"])


def test_bundle_card_records_indices_and_predict_recomputes_them(tmp_path) -> None:
    from geoseg.bundle.bundle import load_bundle, save_bundle
    from geoseg.bundle.untrained import init_bundle
    from geoseg.runs.job import open_scene_for
    from geoseg.runs.options import PredictOptions
    from geoseg.runs.predict import predict

    rng = np.random.default_rng(4)
    img = write_geotiff(tmp_path / "img.tif", rng.integers(1, 4000, (4, 48, 40)).astype(np.uint16))
    out = init_bundle("unet", {"image": 4, "vi": 2}, 3, tile=32, output=tmp_path / "plain",
                      roles={"image": FTW_ROLES, "vi": ["ndvi", "gndvi"]})  # fmt: skip
    b = load_bundle(out)
    card = b.card.model_copy(update={"derived": {"vi": IndexBands(indices=["ndvi", "gndvi"])}})
    card = type(card).model_validate(card.model_dump())  # the card's own checks
    bundle = save_bundle(b.model, card, tmp_path / "with-indices")
    opts = PredictOptions(tile=32, overlap=8, chunk=32, progress=False, vector="none",
                          tiles_dir=tmp_path / "tiles")  # fmt: skip
    scene = open_scene_for(card, img, {}, opts)
    assert scene.band_counts == {"image": 4, "vi": 2}
    report = predict(img, bundle, tmp_path / "out", options=opts)
    assert report["valid_pixels"] == 48 * 40
    with rasterio.open(tmp_path / "out" / "img_classes.tif") as ds:
        classes = ds.read(1)
    assert classes.max() < 3
    # the notebook accessor recomputes them too: the same classes, lazily
    import rioxarray

    import geoseg.jupyter  # noqa: F401  (registers .geoseg)

    lazy = rioxarray.open_rasterio(img).geoseg.predict(bundle, tile=32, overlap=8, chunk=32)
    np.testing.assert_array_equal(lazy.values, classes)


def test_indices_command_writes_cogs_and_fails_in_one_line(tmp_path) -> None:
    data = np.full((4, 40, 40), 1000, np.uint16)
    data[3] = 3000
    data[:, :5, :5] = 0
    path = write_geotiff(tmp_path / "s2.tif", data, nodata=0)
    code, _, err = invoke("indices", path, "--index", "ndvi,gndvi", "--roles", "red,green,blue,nir",
                          "--dtype", "int16", "--out", tmp_path / "ix", "--block", "16")  # fmt: skip
    assert code == 0, err
    with rasterio.open(tmp_path / "ix" / "s2_ndvi.tif") as ds:
        v = ds.read(1)
        assert ds.nodata == -32768 and ds.dtypes[0] == "int16" and ds.descriptions == ("ndvi",)
        assert (v[:5, :5] == -32768).all() and v[20, 20] == 5000
    code, _, err = invoke("indices", path, "--index", "ndre", "--roles", "red,green,blue,nir",
                          "--out", tmp_path / "ix2")  # fmt: skip
    assert code == 2 and "--index ndre" in err and "rededge" in err and "roles:" in err
    assert len(err.strip().splitlines()) == 1


def test_training_scenes_read_the_indices_of_the_catalog_roles(tmp_path) -> None:
    from geoseg.catalog.spec import CatalogScene
    from geoseg.scene.classes import default_classes
    from geoseg.scene.labels import VectorLabels
    from geoseg.training.config import TrainConfig
    from geoseg.training.data import TrainScene, scan_scene

    rng = np.random.default_rng(5)
    img = write_geotiff(tmp_path / "img.tif", rng.integers(1, 4000, (4, 32, 32)).astype(np.uint16))
    lab = write_geotiff(tmp_path / "lab.tif", rng.integers(0, 3, (1, 32, 32)).astype(np.uint8))
    # the file's bands are B, G, R, NIR: the catalog's roles say so
    cs = CatalogScene.model_validate({"id": "s", "modalities": {"image": {
        "path": str(img), "roles": ["blue", "green", "red", "nir"]}}, "labels": str(lab)})
    cfg = TrainConfig.model_validate({"model": {"architecture": "unet"},
                                      "indices": {"vi": {"indices": ["NDVI"]}}})  # fmt: skip
    ts = TrainScene.open(cs, ["image"], {}, default_classes(3), VectorLabels(), cfg.indices)
    arrays, _, valid = ts.read(PixelWindow(-4, 20, 0, 16))  # padded outside the scene
    assert arrays["vi"].shape == (1, 24, 16) and not valid[:4].any()
    raw = arrays["image"]
    with np.errstate(all="ignore"):
        expect = (raw[3] - raw[2]) / (raw[3] + raw[2])
    np.testing.assert_allclose(arrays["vi"][0][valid], expect[valid], rtol=1e-6)
    scan = scan_scene(ts, 3, cell=8)
    assert set(scan.sums) == {"image", "vi"} and scan.sums["vi"].shape == (1, 4, 4)
