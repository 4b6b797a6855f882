"""Loading catalogs: paths resolve against the catalog's folder; schema errors are one line
naming the key, the file and the line; the example catalogs parse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from geoseg.catalog.loader import load_catalog
from geoseg.catalog.paths import resolve_href
from geoseg.errors import ConfigError, InputError
from tests.support import RGB

REPO = Path(__file__).resolve().parents[2]


def test_relative_paths_resolve_against_the_catalog_folder(tmp_path: Path) -> None:
    shutil.copy(RGB, tmp_path / "scene.tif")
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "c.yaml").write_text("scenes:\n  - id: s\n    modalities:\n"
                                              "      image: ../scene.tif\n")
    cat = load_catalog(tmp_path / "cats" / "c.yaml", allow_outside=True)  # ../ leaves cats/
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


def test_scene_open_errors_name_the_scene() -> None:
    cat = load_catalog(REPO / "catalogs" / "vendored.yaml", allow_outside=True)
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
        assert len(load_catalog(path, allow_outside=True)) >= 1, path  # data in ../tests
    stac = load_catalog(REPO / "catalogs" / "vendored-stac.json", allow_outside=True)
    assert stac.scenes == load_catalog(REPO / "catalogs" / "vendored.yaml",
                                       allow_outside=True).scenes  # fmt: skip
