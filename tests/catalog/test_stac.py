"""YAML and STAC describe the same scenes; catalogs round-trip through YAML and STAC."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pystac

from geoseg.catalog.loader import load_catalog, load_stac
from geoseg.catalog.stac_export import write_stac
from tests.support import DATA, invoke

REPO = Path(__file__).resolve().parents[2]
OLINDA = DATA / "olinda" / "L7_ETMs.tif"
DEM = DATA / "olinda" / "olinda_dem_utm25s.tif"
HAG = DATA / "alexandria" / "hag.tif"
BUILDINGS = DATA / "alexandria" / "buildings.geojson"


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
    ic_cat = load_catalog(sub / "items.json", allow_outside=True)  # hrefs into tests/data
    # a Collection with one file per item; asset hrefs relative to each item's file
    coll = pystac.Collection("same-scenes", "two scenes", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))
    coll.extra_fields["classification:classes"] = CLASSES_STAC
    for it in _stac_items(None):
        coll.add_item(it)
    coll.normalize_hrefs(str(tmp_path / "collection"))
    coll.make_all_asset_hrefs_relative()
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    coll_cat = load_catalog(tmp_path / "collection" / "collection.json", allow_outside=True)

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
    cat = load_catalog(REPO / "catalogs" / "vendored.yaml", allow_outside=True)
    again = load_catalog(cat.to_yaml(tmp_path / "a" / "copy.yaml"))
    assert again.scenes == cat.scenes
    text = (tmp_path / "a" / "copy.yaml").read_text()
    # files outside the YAML's folder are written absolute (relative ../ paths would need
    # --allow-outside-paths to load); a file inside it stays relative
    assert "path: ../" not in text and f"path: {DATA}/olinda/L7_ETMs.tif" in text
    local = tmp_path / "a" / "here.tif"
    local.write_bytes(OLINDA.read_bytes())
    inside = cat.spec.model_copy(update={"scenes": [cat.scene("olinda").model_copy(update={
        "modalities": {"image": cat.scene("olinda").modalities["image"].model_copy(
            update={"path": str(local)})}})]})  # fmt: skip
    text = type(cat)(inside).to_yaml(tmp_path / "a" / "inside.yaml").read_text()
    assert "path: here.tif" in text
    stac = load_stac(write_stac(cat, tmp_path / "b" / "items.json"))
    assert stac.scenes == cat.scenes
    item = pystac.ItemCollection.from_file(str(tmp_path / "b" / "items.json")).items[0]
    assert item.bbox is not None and -80 < item.bbox[0] < -76  # WGS84 footprint of RGB.byte



def test_convert_cli(tmp_path: Path) -> None:
    code, _, err = invoke("catalog", "convert", REPO / "catalogs" / "vendored.yaml", "-o",
                          tmp_path / "v.json")  # fmt: skip
    assert code == 2 and "leads outside the catalog's folder" in err  # ../tests/data
    code, _, _ = invoke("catalog", "convert", REPO / "catalogs" / "vendored.yaml", "-o",
                        tmp_path / "v.json", "--allow-outside-paths")  # fmt: skip
    assert code == 0
    code, _, _ = invoke("catalog", "convert", tmp_path / "v.json", "-o", tmp_path / "v.yaml")
    assert code == 0
    assert load_catalog(tmp_path / "v.yaml").scenes == \
        load_catalog(REPO / "catalogs" / "vendored.yaml", allow_outside=True).scenes
