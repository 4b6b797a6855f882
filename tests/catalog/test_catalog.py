"""Scene catalogs: YAML and STAC give the same scenes; schema and validation errors are clear."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.catalog.spec import load_catalog, resolve_href, validate_catalog
from geoseg.catalog.stac import load_stac, write_stac
from geoseg.errors import ConfigError, InputError
from tests.support import DATA, invoke

REPO = Path(__file__).resolve().parents[2]
OLINDA = DATA / "olinda" / "L7_ETMs.tif"
DEM = DATA / "olinda" / "olinda_dem_utm25s.tif"
RGB = DATA / "RGB.byte.tif"
HAG = DATA / "alexandria" / "hag.tif"
BUILDINGS = DATA / "alexandria" / "buildings.geojson"



def write_tif(path: Path, data: np.ndarray, crs: str | None = "EPSG:32633",
              origin: tuple[float, float] = (500000.0, 5800000.0), res: float = 1.0,
              nodata: float | None = None) -> Path:  # fmt: skip
    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, nodata=nodata,
                       transform=from_origin(*origin, res, res)) as ds:  # fmt: skip
        ds.write(data)
    return path


YAML = f"""
version: 1
name: same-scenes
classes:
  - {{id: 0, name: background, color: "#d9d9d9"}}
  - {{id: 1, name: building, color: "#e31a1c"}}
scenes:
  - id: olinda
    split: test
    datetime: 2001-07-15T12:00:00Z
    modalities:
      image: {{path: {OLINDA}, bands: [3, 2, 1], roles: [red, green, blue]}}
      dem: {{path: {DEM}, roles: [dem]}}
  - id: alexandria
    split: train
    datetime: 2019-01-01T00:00:00Z
    modalities:
      height: {{path: {HAG}, roles: [ndsm]}}
    labels: {{path: {BUILDINGS}, class_value: 1}}
"""


CLASSES_STAC = [{"value": 0, "name": "background", "color_hint": "D9D9D9"},
                {"value": 1, "name": "building", "color_hint": "E31A1C"}]


def _stac_items(folder: Path | None) -> list[pystac.Item]:
    """The same two scenes as a STAC producer would write them (hrefs relative to ``folder``)."""

    def href(p: Path) -> str:
        return os.path.relpath(p, folder) if folder else str(p)

    eo = [{"name": f"B{i}", "common_name": n} for i, n in
          zip((1, 2, 3, 4, 5, 7), ("blue", "green", "red", "nir", "swir16", "swir22"), strict=True)]
    olinda = pystac.Item("olinda", None, None, dt.datetime(2001, 7, 15, 12, tzinfo=dt.UTC),
                         {"ml-aoi:split": "test"})  # fmt: skip
    olinda.add_asset("image", pystac.Asset(href(OLINDA), roles=["data"], extra_fields={
        "eo:bands": eo, "geoseg:bands": [3, 2, 1]}))  # fmt: skip
    olinda.add_asset("elevation", pystac.Asset(href(DEM), roles=["data"], extra_fields={
        "geoseg:modality": "dem", "bands": [{"eo:common_name": "dem"}]}))  # fmt: skip
    olinda.add_asset("thumbnail", pystac.Asset("thumb.png", roles=["thumbnail"]))
    alex = pystac.Item("alexandria", None, None, dt.datetime(2019, 1, 1, tzinfo=dt.UTC),
                       {"geoseg:split": "train", "label:type": "vector"})  # fmt: skip
    alex.add_asset("height", pystac.Asset(href(HAG), roles=["data"],
                                          extra_fields={"geoseg:roles": ["ndsm"]}))
    alex.add_asset("labels", pystac.Asset(href(BUILDINGS), roles=["labels"], extra_fields={
        "geoseg:class_value": 1, "classification:classes": CLASSES_STAC}))
    return [olinda, alex]


def test_yaml_and_stac_describe_the_same_scenes(tmp_path: Path) -> None:
    (tmp_path / "cat.yaml").write_text(YAML)
    yaml_cat = load_catalog(tmp_path / "cat.yaml")
    # an ItemCollection in a sub-folder: relative hrefs resolve against the file's folder
    sub = tmp_path / "stac"
    sub.mkdir()
    ic = pystac.ItemCollection(_stac_items(sub), extra_fields={"id": "same-scenes"})
    ic.save_object(dest_href=str(sub / "items.json"))
    ic_cat = load_catalog(sub / "items.json")
    # a Collection with one file per item; asset hrefs relative to each item's file
    coll = pystac.Collection("same-scenes", "two scenes", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))
    coll.extra_fields["classification:classes"] = CLASSES_STAC
    for it in _stac_items(None):
        coll.add_item(it)
    coll.normalize_hrefs(str(tmp_path / "collection"))
    coll.make_all_asset_hrefs_relative()
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    coll_cat = load_catalog(tmp_path / "collection" / "collection.json")

    for cat in (ic_cat, coll_cat):
        assert cat.name == "same-scenes"
        assert cat.classes == yaml_cat.classes
        by_id = {s.id: s for s in cat.scenes}
        assert set(by_id) == {"olinda", "alexandria"}
        for s in yaml_cat.scenes:
            assert by_id[s.id] == s
            assert by_id[s.id].open().describe() == s.open().describe()
    olinda = yaml_cat.scene("olinda").open()
    assert olinda.band_counts == {"image": 3, "dem": 1}
    assert olinda.modalities["image"].bands == (3, 2, 1)
    assert not olinda.modalities["dem"].aligned  # the 90 m DEM is warped onto the 28.5 m grid


def test_round_trips_keep_scenes(tmp_path: Path) -> None:
    cat = load_catalog(REPO / "catalogs" / "vendored.yaml")
    again = load_catalog(cat.to_yaml(tmp_path / "a" / "copy.yaml"))
    assert again.scenes == cat.scenes
    text = (tmp_path / "a" / "copy.yaml").read_text()
    assert "path: ../" in text and "path: /" not in text  # relative to the YAML's folder
    stac = load_stac(write_stac(cat, tmp_path / "b" / "items.json"))
    assert stac.scenes == cat.scenes
    item = pystac.ItemCollection.from_file(str(tmp_path / "b" / "items.json")).items[0]
    assert item.bbox is not None and -80 < item.bbox[0] < -76  # WGS84 footprint of RGB.byte


def test_relative_paths_resolve_against_the_catalog_folder(tmp_path: Path) -> None:
    shutil.copy(RGB, tmp_path / "scene.tif")
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "c.yaml").write_text("scenes:\n  - id: s\n    modalities:\n"
                                              "      image: ../scene.tif\n")
    cat = load_catalog(tmp_path / "cats" / "c.yaml")
    assert cat.scene("s").modalities["image"].path == str(tmp_path / "scene.tif")
    assert cat.select(split="train") == []
    # remote hrefs go through GDAL's virtual file systems
    assert resolve_href("https://x.org/a.tif", tmp_path) == "/vsicurl/https://x.org/a.tif"
    assert resolve_href("s3://bucket/a.tif", tmp_path) == "/vsis3/bucket/a.tif"


@pytest.mark.parametrize(("text", "expect"), [
    ("scenes:\n  - id: a\n    modalites:\n      image: x.tif\n",
     [":3:", "unknown key 'modalites'", "did you mean 'modalities'"]),
    ("scenes:\n  - id: a\n    modalities:\n      image:\n        path: x.tif\n        band: [1]\n",
     [":6:", "'band'", "scenes[0].modalities.image", "did you mean 'bands'", "allowed keys"]),
    ("scenes:\n  - id: a\n    modalities: {image: x.tif}\n    split: training\n",
     [":4:", "scenes[0].split", "'train', 'val' or 'test'"]),
    ("scenes:\n  - id: a\n    modalities: {image: x.tif}\n  - id: a\n    modalities: {image: y}\n",
     ["scene id 'a' appears more than once"]),
    ("scenes:\n  - id: a b\n    modalities: {image: x.tif}\n", ["scenes[0].id", "pattern"]),
    ("scenes:\n  - id: a\n    modalities: {image: x.tif}\n    labels: {path: l.gpkg}\n",
     [":4:", "class_field", "class_value"]),
    ("scenes:\n  - id: a\n    modalities: {image: x.tif}\n    labels: {path: l.xyz}\n",
     ["kind: raster or kind: vector"]),
    ("scenes:\n  - id: a\n    modalities: {image: x.tif}\n"
     "    labels: {path: l.tif, encoding: rgb}\n", ["encoding: rgb need a class table"]),
    ("scenes:\n  - id: a\n    modalities: {image: {path: x.tif, bands: [1, 2], roles: [red]}}\n",
     ["roles names 1 band(s) but bands selects 2"]),
    ("scenes: [\n", ["not valid YAML"]),
    ("- just a list\n", ["a catalog is a mapping"]),
    ("name: x\n", ["missing required key 'scenes'"]),
])  # fmt: skip
def test_schema_errors_name_the_key_and_the_file(tmp_path: Path, text: str,
                                                 expect: list[str]) -> None:  # fmt: skip
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalog(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for part in expect:
        assert part in msg


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog where every scene but one has a different problem."""
    d = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    write_tif(d / "ok.tif", img)
    write_tif(d / "ok_labels.tif", np.where(img[0] > 128, 1, 0).astype(np.uint8))
    write_tif(d / "bad_labels.tif", np.full((64, 64), 7, np.uint8))
    write_tif(d / "nocrs.tif", img, crs=None)
    write_tif(d / "far.tif", img[:1], origin=(900000.0, 1000000.0))
    write_tif(d / "fourband.tif", np.concatenate([img, img[:1]]))
    (d / "text.tif").write_text("not a raster")
    # a tiled GeoTIFF cut in half: the header opens, the pixels do not
    full = d / "full.tif"
    with rasterio.open(OLINDA) as src:
        prof = src.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128,
                              "compress": "deflate"}  # fmt: skip
        with rasterio.open(full, "w", **prof) as dst:
            dst.write(src.read())
    data = full.read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    (d / "c.yaml").write_text("""\
classes: [{id: 0, name: bg}, {id: 1, name: fg}]
scenes:
  - {id: good, modalities: {image: ok.tif}, labels: {path: ok_labels.tif}}
  - {id: missing-file, modalities: {image: nope.tif}}
  - {id: not-raster, modalities: {image: text.tif}}
  - {id: truncated, modalities: {image: {path: truncated.tif, bands: [1, 2, 3]}}}
  - {id: no-crs, modalities: {image: nocrs.tif}}
  - {id: no-overlap, modalities: {image: ok.tif, dem: far.tif}}
  - {id: bad-band, modalities: {image: {path: ok.tif, bands: [1, 2, 9]}}}
  - {id: roles-count, modalities: {image: {path: ok.tif, roles: [red, green]}}}
  - {id: band-count, modalities: {image: fourband.tif}}
  - {id: no-image, modalities: {dem: ok.tif}}
  - {id: bad-classes, modalities: {image: ok.tif}, labels: {path: bad_labels.tif}}
  - id: bad-field
    modalities: {image: ok.tif}
    labels: {path: BUILDINGS, class_field: KIND}
""".replace("BUILDINGS", str(BUILDINGS)))
    return d / "c.yaml"


def test_validation_catches_each_kind_of_error(broken: Path) -> None:
    check = validate_catalog(load_catalog(broken))
    status = {r["scene"]: r["status"] for r in check.rows}
    assert status["good"] == "ok"
    assert all(v == "PROBLEM" for k, v in status.items() if k != "good")
    expected = {
        "missing-file": "nope.tif: file not found",
        "not-raster": "text.tif: cannot be opened as a raster",
        "truncated": "truncated.tif: pixels cannot be read",
        "no-crs": "nocrs.tif: raster has no CRS",
        "no-overlap": "far.tif: does not overlap the reference raster",
        "bad-band": "band 9 does not exist",
        "roles-count": "roles names 2 band(s) but the file has 3",
        "band-count": "modality 'image' has 4 band(s) but",
        "no-image": "has no modality 'image' that",
        "bad-classes": "label values [7] are not in the class table",
        "bad-field": "no attribute 'KIND'",
    }
    for sid, text in expected.items():
        hits = [p for p in check.problems if p.startswith(f"scene {sid!r}:") and text in p]
        assert hits, (sid, check.problems)
    assert all("\n" not in p for p in check.problems)
    quick = validate_catalog(load_catalog(broken), pixels=False)  # headers only
    assert not any("truncated" in p and "pixels" in p for p in quick.problems)


def test_validate_and_show_cli(broken: Path) -> None:
    code, out, err = invoke("catalog", "validate", broken)
    assert code == 2
    assert "good" in out and "PROBLEM" in out  # the table
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any("scene 'truncated'" in ln for ln in lines)
    assert lines[-1].startswith("geoseg: error:") and "problem(s)" in lines[-1]
    code, out, _ = invoke("catalog", "validate", REPO / "catalogs" / "vendored.yaml")
    assert code == 0 and "no problem found" in out and "EPSG:31985" in out
    code, out, _ = invoke("catalog", "show", REPO / "catalogs" / "alexandria.yaml")
    assert code == 0 and "1 building #e31a1c" in out and "height" in out
    code, _, err = invoke("catalog", "show", REPO / "catalogs" / "nope.yaml")
    assert code == 2 and "catalog file not found" in err


def test_convert_cli(tmp_path: Path) -> None:
    code, _, _ = invoke("catalog", "convert", REPO / "catalogs" / "vendored.yaml", "-o",
                        tmp_path / "v.json")  # fmt: skip
    assert code == 0
    code, _, _ = invoke("catalog", "convert", tmp_path / "v.json", "-o", tmp_path / "v.yaml")
    assert code == 0
    assert load_catalog(tmp_path / "v.yaml").scenes == \
        load_catalog(REPO / "catalogs" / "vendored.yaml").scenes


def test_scene_open_errors_name_the_scene() -> None:
    cat = load_catalog(REPO / "catalogs" / "vendored.yaml")
    with pytest.raises(InputError, match="scene 'rgb-byte' has no modality 'dem'"):
        cat.scene("rgb-byte").open(["image", "dem"])
    with pytest.raises(InputError, match="no scene 'nope'"):
        cat.scene("nope")
    spec = cat.scene("olinda").modalities["image"]
    assert spec.bands_for(["blue", "red"]) == [1, 3]  # roles -> the file's band indices
    assert spec.bands_for(["b1", "b2", "b3"]) == [3, 2, 1]  # unknown roles: declared bands


def test_example_catalogs_parse() -> None:
    paths = sorted((REPO / "catalogs").glob("*.yaml")) + sorted((REPO / "catalogs").glob("*.json"))
    for path in paths:
        assert len(load_catalog(path)) >= 1, path
    stac = load_catalog(REPO / "catalogs" / "vendored-stac.json")
    assert stac.scenes == load_catalog(REPO / "catalogs" / "vendored.yaml").scenes
