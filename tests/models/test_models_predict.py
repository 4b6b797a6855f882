"""Every registered model runs through the predictor on a real multi-modal sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geoseg.bundle.untrained import init_bundle
from geoseg.models import get_model_class, list_models
from geoseg.runs.options import PredictOptions
from geoseg.runs.predict import predict
from tests.support import DATA, run_cli

OLINDA = DATA / "olinda"
IMAGE = OLINDA / "L7_ETMs.tif"  # Landsat 7, 6 bands, 28.5 m
DEM = OLINDA / "olinda_dem_utm25s.tif"  # 90 m DEM of the same footprint, warped on the fly
SMALL = {"encoder": "resnet18"}


def modalities_for(name: str) -> dict[str, int]:
    required = get_model_class(name).required
    if "height" in required:
        return {"image": 3, "height": 1}
    return {"image": 3, "dem": 1}  # single-stream models: early fusion of image + DEM


def arguments_for(name: str) -> dict:
    fields = get_model_class(name).Args.model_fields
    args = {k: v for k, v in SMALL.items() if k in fields}
    if "dem_encoder" in fields:
        args["dem_encoder"] = "resnet18"
    return args


@pytest.mark.parametrize("name", [n for n in list_models() if not n.startswith("test-")])
def test_every_model_predicts_a_real_multimodal_scene(name: str, tmp_path: Path) -> None:
    mods = modalities_for(name)
    bundle = init_bundle(name, mods, 3, arguments_for(name), seed=0, tile=128,
                         stats_from=IMAGE, stats_bands=[3, 2, 1], output=tmp_path / "b")  # fmt: skip
    extra = {m: DEM for m in mods if m != "image"}
    report = predict(IMAGE, bundle, tmp_path / "out", extra, PredictOptions(
        bands=[3, 2, 1], chunk=256, tiles_dir=tmp_path / "t", progress=False))  # fmt: skip
    classes = Path(report["outputs"]["classes"])
    assert cog_validate(classes)[0]
    with rasterio.open(classes) as ds, rasterio.open(IMAGE) as src:
        assert ds.shape == src.shape and ds.transform == src.transform and ds.crs == src.crs
        data = ds.read(1)
    assert set(np.unique(data)) <= {0, 1, 2}
    assert report["polygons"] > 0 and Path(report["outputs"]["vectors"]).exists()
    assert report["settings"]["overlap"] == min(json.loads((bundle / "card.json").read_text())["halo"], 32)


def test_hpclnet_through_the_cli(tmp_path: Path) -> None:
    run_cli("model", "init", "hpclnet", "--bands", "3", "--classes", "2", "--modality", "dem=1",
            "--encoder", "resnet18", "--arg", 'dem_encoder="resnet18"', "--tile", "128",
            "-o", tmp_path / "hpcl")  # fmt: skip
    run_cli("predict", IMAGE, "--bands", "3,2,1", "--modality", f"dem={DEM}", "--model",
            tmp_path / "hpcl", "--out", tmp_path / "o", "--tiles-dir", tmp_path / "t",
            "--no-progress")  # fmt: skip
    assert (tmp_path / "o" / "L7_ETMs_classes.tif").exists()
    proc = run_cli("predict", IMAGE, "--bands", "3,2,1", "--model", tmp_path / "hpcl", "--out",
                   tmp_path / "o2", "--tiles-dir", tmp_path / "t", check=False)  # fmt: skip
    assert proc.returncode == 2 and "needs modalities ['dem']" in proc.stderr.splitlines()[-1]
