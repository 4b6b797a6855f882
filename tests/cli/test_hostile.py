"""Files crafted to hurt, and files that break half way: each ends in one line and exit 2, in
seconds and bounded memory, with nothing left behind (the fast version of benchmarks/fuzz.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from affine import Affine

from geoseg.bundle.untrained import init_bundle
from tests.support import DATA, RGB, invoke, write_geotiff

BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9 if p else ['lol'] * 9)}]\n"
               for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_bundle("tinycnn", {"image": 3}, 3, tile=64,
                       output=tmp_path_factory.mktemp("hostile") / "model")  # fmt: skip


def expect_refusal(*args: object, match: str, cwd: Path | None = None) -> str:
    """Run the CLI in-process: exit 2, ``match`` in its one-line error, fast, small."""
    rss = psutil.Process().memory_info().rss
    t = time.perf_counter()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        code, _, err = invoke(*args)
    finally:
        os.chdir(old)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert last.startswith("geoseg: error: ") and "Traceback" not in err, err
    assert match in err, err  # `catalog validate` lists its problems before its last line
    assert time.perf_counter() - t < 10, "took too long"
    assert psutil.Process().memory_info().rss - rss < 300 * 2**20, "memory grew"
    return last


def predict_refused(tmp_path: Path, image: Path, model: Path, match: str) -> str:
    out, tiles = tmp_path / "out", tmp_path / "tiles"
    last = expect_refusal("predict", image, "--model", model, "--out", out, "--tiles-dir", tiles,
                          "--no-progress", match=match)  # fmt: skip
    left = [p for p in (*out.rglob("*"), *tiles.rglob("*")) if p.is_file()] \
        if out.exists() or tiles.exists() else []  # fmt: skip
    assert not left, f"left behind: {left}"
    return last


def _geo(**kw: object) -> dict:
    return {"driver": "GTiff", "crs": "EPSG:32633", "dtype": "uint8",
            "transform": Affine(10, 0, 500000, 0, -10, 5800000), **kw}  # fmt: skip


def test_absurd_dimensions(tmp_path: Path, tiny: Path) -> None:
    huge = tmp_path / "huge.tif"  # 10^6 x 10^6 px declared, a few hundred bytes on disk
    with rasterio.open(huge, "w", **_geo(width=10**6, height=10**6, count=3, tiled=False,
                                         blockysize=10**6, compress="deflate", SPARSE_OK=True)):
        pass
    assert huge.stat().st_size < 2000
    last = predict_refused(tmp_path, huge, tiny, "huge.tif: 1000000 x 1000000 pixels (1e+03 "
                           "gigapixels) is more than geoseg reads")  # fmt: skip
    assert "GEOSEG_MAX_PIXELS=1000000000000 to accept it" in last
    (tmp_path / "c.yaml").write_text("scenes:\n  - {id: h, modalities: {image: huge.tif}}\n")
    expect_refusal("catalog", "validate", tmp_path / "c.yaml", match="is more than geoseg reads")


def test_huge_band_counts(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = write_geotiff(tmp_path / "many.tif", np.zeros((40, 4, 4), np.uint8))
    monkeypatch.setenv("GEOSEG_MAX_BANDS", "32")  # the limit is configurable
    predict_refused(tmp_path, many, tiny, "many.tif: 40 bands is more than geoseg reads (32)")


def test_compression_bomb(tmp_path: Path, tiny: Path) -> None:
    bomb = tmp_path / "bomb.tif"  # 1.2 GB of pixels declared, a few kB of file
    with rasterio.open(bomb, "w", **_geo(width=20000, height=20000, count=3, tiled=True,
                                         blockxsize=1024, blockysize=1024, compress="zstd",
                                         SPARSE_OK=True)):  # fmt: skip
        pass
    predict_refused(tmp_path, bomb, tiny, "bomb.tif: declares 1.2 GB of pixels in")


def test_a_local_crs_without_datum(tmp_path: Path, tiny: Path) -> None:
    local = write_geotiff(tmp_path / "local.tif", np.ones((3, 32, 32), np.uint8),
                          crs='LOCAL_CS["site grid",UNIT["metre",1]]')  # fmt: skip
    predict_refused(tmp_path, local, tiny, "local.tif: its CRS has no datum")


def test_a_truncated_geotiff_names_file_window_and_fix(tmp_path: Path, tiny: Path) -> None:
    full = tmp_path / "full.tif"
    with rasterio.open(RGB) as ds:
        prof = ds.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128,
                             "compress": "deflate"}  # fmt: skip
        with rasterio.open(full, "w", **prof) as out:
            out.write(ds.read())
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    last = predict_refused(tmp_path, cut, tiny, "cut.tif: pixels cannot be read in window rows ")
    assert "(GDAL: " in last and "the file is corrupt or truncated" in last
    assert "re-download or replace it" in last and f"gdal_translate {cut}" in last
    assert "previous exception" not in last


def test_card_without_modalities(tmp_path: Path, tiny: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    card = json.loads((tiny / "card.json").read_text())
    (bad / "card.json").write_text(json.dumps({**card, "modalities": {}}))
    (bad / "weights.safetensors").write_bytes((tiny / "weights.safetensors").read_bytes())
    predict_refused(tmp_path, RGB, bad, "card.json: invalid card: modalities: Dictionary should "
                    "have at least 1 item")  # fmt: skip


@pytest.mark.parametrize("text, match", [
    (BOMB + "scenes: *i\n", "YAML aliases (*name) expand the document to more than 1000000 nodes"),
    ("a: &a [*a]\nscenes: *a\n", "recursive"),
    ("scenes: " + "[" * 800 + "]" * 800 + "\n", "YAML nested too deeply"),
    ("scenes:\n  - {id: s, modalities: {image: '\x00'}}\n", "not valid YAML"),
])  # fmt: skip
def test_yaml_bombs(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    expect_refusal("catalog", "validate", tmp_path / "c.yaml", match=match)
    (tmp_path / "p.yaml").write_text(text.replace("scenes", "steps"))
    expect_refusal("run", tmp_path / "p.yaml", match=match)


def test_oversized_configuration_files(tmp_path: Path, tiny: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("GEOSEG_MAX_CONFIG_BYTES", "1000")
    (tmp_path / "c.yaml").write_text("# padding\n" * 200 + "scenes: []\n")
    expect_refusal("catalog", "show", tmp_path / "c.yaml", match="is more than a catalog file "
                   "may hold (1.0 kB); check the file, or set GEOSEG_MAX_CONFIG_BYTES=")  # fmt: skip
    big = tmp_path / "big"
    big.mkdir()
    (big / "card.json").write_text((tiny / "card.json").read_text() + " " * 2000)
    (big / "weights.safetensors").write_bytes((tiny / "weights.safetensors").read_bytes())
    predict_refused(tmp_path, RGB, big, "is more than a bundle card may hold (1.0 kB)")


def _catalog(folder: Path, path: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cat = folder / "c.yaml"
    cat.write_text(f"scenes:\n  - id: s\n    modalities:\n      image: '{path}'\n")
    return cat


def test_catalog_paths_that_escape_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(RGB.read_bytes())
    inner = tmp_path / "cat"
    cat = _catalog(inner, "../a.tif")
    last = expect_refusal("catalog", "validate", cat, match="scene 's' modality 'image': ../a.tif "
                          "leads outside the catalog's folder")  # fmt: skip
    assert "through '..'" in last and "--allow-outside-paths" in last
    code, _, _ = invoke("catalog", "validate", cat, "--allow-outside-paths")  # explicit: allowed
    assert code == 0
    os.symlink(RGB, inner / "link.tif")
    cat = _catalog(inner, "link.tif")
    expect_refusal("catalog", "validate", cat, match="link.tif leads outside the catalog's folder "
                   f"{inner} (through a symbolic link, to {RGB})")  # fmt: skip
    os.symlink(DATA, inner / "data")
    expect_refusal("catalog", "show", _catalog(inner, "data/RGB.byte.tif"),
                   match="through a symbolic link")  # fmt: skip
    (inner / "sub").mkdir()
    (inner / "sub" / "b.tif").write_bytes(RGB.read_bytes())
    code, _, err = invoke("catalog", "validate", _catalog(inner, "sub/../sub/b.tif"))
    assert code == 0, err  # .. that stays inside is fine
    code, _, err = invoke("catalog", "validate", _catalog(inner, str(RGB)))
    assert code == 0, err  # an absolute path is the author's explicit choice
    pipe = inner / "p.yaml"
    pipe.write_text("catalog: c.yaml\nsteps:\n  - {type: predict, model: m}\n")
    _catalog(inner, "../a.tif")
    expect_refusal("run", pipe, match="leads outside the catalog's folder")


@pytest.mark.parametrize("href", ["ftp://example.invalid/a.tif", "/vsimem/a.tif",
                                  "/vsistdin/", "gopher://x/y.tif"])  # fmt: skip
def test_catalog_url_schemes_not_documented(tmp_path: Path, href: str) -> None:
    expect_refusal("catalog", "validate", _catalog(tmp_path, href), match="is not read")


def test_stac_hrefs_that_escape_the_folder(tmp_path: Path) -> None:
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "s", "geometry": None,
            "properties": {"datetime": "2020-01-01T00:00:00Z"}, "links": [],
            "assets": {"image": {"href": "../../RGB.byte.tif", "roles": ["data"]}}}  # fmt: skip
    (tmp_path / "items.json").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [item]}))  # fmt: skip
    expect_refusal("catalog", "validate", tmp_path / "items.json",
                   match="item 's' asset 'image': ../../RGB.byte.tif leads outside")  # fmt: skip


def test_image_url_scheme_on_the_command_line(tmp_path: Path, tiny: Path) -> None:
    predict_refused(tmp_path, Path("ftp:/x/a.tif"), tiny, "file not found")
    code, _, err = invoke("predict", "gopher://x/a.tif", "--model", tiny, "--out",
                          tmp_path / "o", "--no-progress")  # fmt: skip
    assert code == 2 and "URL scheme 'gopher://' is not read" in err
