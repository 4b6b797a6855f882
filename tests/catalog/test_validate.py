"""Validating a catalog: each kind of broken file or scene is one line naming the scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.catalog.loader import load_catalog
from geoseg.catalog.validate import validate_catalog
from tests.support import DATA, invoke, write_geotiff

REPO = Path(__file__).resolve().parents[2]
OLINDA = DATA / "olinda" / "L7_ETMs.tif"
BUILDINGS = DATA / "alexandria" / "buildings.geojson"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog where every scene but one has a different problem."""
    d = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    grid = {"transform": from_origin(500000.0, 5800000.0, 1.0, 1.0)}  # UTM 33N, 1 m pixels
    write_geotiff(d / "ok.tif", img, **grid)
    write_geotiff(d / "ok_labels.tif", np.where(img[0] > 128, 1, 0).astype(np.uint8)[None], **grid)
    write_geotiff(d / "bad_labels.tif", np.full((1, 64, 64), 7, np.uint8), **grid)
    write_geotiff(d / "nocrs.tif", img, crs=None, **grid)
    write_geotiff(d / "far.tif", img[:1], transform=from_origin(900000.0, 1000000.0, 1.0, 1.0))
    write_geotiff(d / "fourband.tif", np.concatenate([img, img[:1]]), **grid)
    (d / "text.tif").write_text("not a raster")
    # a tiled GeoTIFF cut in half: the header opens, the pixels do not
    full = d / "full.tif"
    with rasterio.open(OLINDA) as src:
        prof = src.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128,
                              "compress": "deflate"}  # fmt: skip
        write_geotiff(full, src.read(), **prof)
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
    code, out, _ = invoke("catalog", "validate", REPO / "catalogs" / "vendored.yaml",
                          "--allow-outside-paths")  # its data lies in ../tests/data
    assert code == 0 and "no problem found" in out and "EPSG:31985" in out
    code, out, _ = invoke("catalog", "show", REPO / "catalogs" / "alexandria.yaml",
                          "--allow-outside-paths")  # fmt: skip
    assert code == 0 and "1 building #e31a1c" in out and "height" in out
    code, _, err = invoke("catalog", "show", REPO / "catalogs" / "nope.yaml")
    assert code == 2 and "catalog file not found" in err
