"""ONNX export parity and metadata; QGIS styles; quicklook."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import onnx
import pytest
import rasterio

from geoseg.bundle.bundle import load_bundle
from geoseg.bundle.card import ModelCard
from geoseg.bundle.onnx_export import deepness_metadata
from geoseg.geometry.window import PixelWindow
from geoseg.inference.engine import Engine
from geoseg.inference.onnx_engine import OnnxEngine
from geoseg.scene.scene import Scene
from tests.support import RGB, run_cli

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


@pytest.fixture(scope="module")
def exported(unet_rgb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    run_cli("export", unet_rgb, "--format", "onnx", "-o", out)
    return out


def test_onnx_runtime_equals_torch_on_real_data(unet_rgb: Path, exported: Path) -> None:
    torch_engine = Engine(load_bundle(unet_rgb))
    ort_engine = OnnxEngine(exported, threads=2)
    scene = Scene.open({"image": RGB})
    tiles = []
    for r, c in ((200, 250), (400, 500), (0, 0)):
        arrays, valid = scene.read(PixelWindow(r, r + 256, c, c + 256))
        tiles.append(torch_engine.normalise(arrays, valid)["image"])
    batch = {"image": np.stack(tiles)}  # dynamic batch of 3
    np.testing.assert_allclose(ort_engine.probabilities(batch),
                               torch_engine.probabilities(batch), atol=1e-4)  # fmt: skip


def test_onnx_metadata_is_what_deepness_reads(exported: Path, unet_rgb: Path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(meta["model_type"]) == "Segmentor"
    assert json.loads(meta["class_names"]) == {str(i): f"class_{i}" for i in range(4)}
    assert json.loads(meta["tiles_size"]) == 256
    card = json.loads((unet_rgb / "card.json").read_text())
    mean = [m / 255 for m in card["modalities"]["image"]["mean"]]
    assert json.loads(meta["standardization_mean"]) == pytest.approx(mean)
    assert json.loads(meta["geoseg_card"])["architecture"] == "unet"
    model = onnx.load(str(exported))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("tile", [64, 128, 512])
def test_deepness_overlap_is_what_predict_uses(tile: int) -> None:
    # the demo bundle: tile 64, halo 64; Deepness was told 100 % (one model call per pixel)
    card = ModelCard.model_validate_json((DEMO / "card.json").read_text())
    card = card.model_copy(update={"tile_size": tile})
    meta = {k: json.loads(v) for k, v in deepness_metadata(card).items() if k != "geoseg_card"}
    assert meta["tiles_overlap"] == round(100 * card.default_overlap() / tile)
    assert meta["tiles_overlap"] == {64: 25, 128: 25, 512: 12}[tile]


def test_deepness_tile_size_keys() -> None:
    # Deepness's code reads "tile_size" (ModelBase.get_metadata_tile_size); its docs say
    # "tiles_size": both are written
    card = ModelCard.model_validate_json((DEMO / "card.json").read_text())
    meta = deepness_metadata(card)
    assert json.loads(meta["tile_size"]) == json.loads(meta["tiles_size"]) == 64


def test_predict_accepts_onnx(exported: Path, unet_rgb: Path, tmp_path: Path) -> None:
    common = ["--chunk", "300", "--no-progress", "--vector", "none"]
    run_cli("predict", RGB, "--model", exported, "--out", tmp_path / "o", "--tiles-dir",
            tmp_path / "t1", *common)  # fmt: skip
    run_cli("predict", RGB, "--model", unet_rgb, "--out", tmp_path / "p", "--tiles-dir",
            tmp_path / "t2", *common)  # fmt: skip
    with rasterio.open(tmp_path / "o" / "RGB.byte_classes.tif") as a, \
            rasterio.open(tmp_path / "p" / "RGB.byte_classes.tif") as b:  # fmt: skip
        x, y = a.read(1), b.read(1)
    assert (x == y).mean() > 0.9999


def test_styles_and_quicklook_are_written(unet_rgb: Path, tmp_path: Path) -> None:
    run_cli("predict", RGB, "--model", unet_rgb, "--out", tmp_path, "--tiles-dir",
            tmp_path / "t", "--no-progress", "--chunk", "400")  # fmt: skip
    names = [f"class_{i}" for i in range(4)]
    raster = ET.parse(tmp_path / "RGB.byte_classes.qml").getroot()
    entries = raster.findall(".//paletteEntry")
    assert [e.get("label") for e in entries] == names
    vector = ET.parse(tmp_path / "RGB.byte_polygons.qml").getroot()
    assert [c.get("label") for c in vector.findall(".//category")] == names
    assert vector.find(".//renderer-v2").get("attr") == "class_id"
    with sqlite3.connect(tmp_path / "RGB.byte_polygons.gpkg") as con:
        (qml,) = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = ?",
                             ("RGB.byte_polygons",)).fetchone()  # fmt: skip
    assert "categorizedSymbol" in qml
    png = tmp_path / "RGB.byte_quicklook.png"
    assert png.stat().st_size > 2000 and png.read_bytes()[:4] == b"\x89PNG"
