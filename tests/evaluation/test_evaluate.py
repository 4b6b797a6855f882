"""Evaluation: chunked scoring equals whole-array scoring; regions; class ids; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.catalog.spec import CatalogScene
from geoseg.errors import InputError
from geoseg.evaluation.evaluate import class_indices, score_scene
from geoseg.evaluation.metrics import ConfusionMatrix
from geoseg.geometry.window import PixelWindow
from geoseg.scene.classes import ClassInfo
from geoseg.scene.labels import VectorLabels
from tests.support import DATA, write_geotiff

ALEX = DATA / "alexandria"
# class ids that are not indices: the scorer must map ids -> indices on both sides
CARD = ModelCard(architecture="tinycnn",
                 modalities={"height": ModalityCard(bands=["ndsm"], mean=[0.0], std=[10.0])},
                 classes=[ClassInfo(id=10, name="background"), ClassInfo(id=20, name="building")])
SCENE = CatalogScene.model_validate({
    "id": "alexandria", "modalities": {"height": str(ALEX / "hag.tif")},
    "labels": {"path": str(ALEX / "buildings.geojson"), "class_value": 20}})  # fmt: skip
VL = VectorLabels(background=10, extent="labels")


@pytest.fixture(scope="module")
def prediction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 'prediction': buildings where the nDSM is above 4 m, nodata in one corner."""
    path = tmp_path_factory.mktemp("pred") / "classes.tif"
    with rasterio.open(ALEX / "hag.tif") as src:
        hag = src.read(1)
        crs, transform = src.crs, src.transform
    classes = np.where(hag > 4, 20, 10).astype(np.uint8)
    classes[200:, 200:] = 255
    return write_geotiff(path, classes[None], crs=crs, transform=transform, nodata=255,
                         tiled=True, blockxsize=64, blockysize=64)


def _whole(prediction: Path, region: PixelWindow | None = None) -> ConfusionMatrix:
    from geoseg.scene.labels import open_labels

    with rasterio.open(prediction) as ds:
        pred = ds.read(1)
        from geoseg.geometry.grid import GridBox

        grid = GridBox.from_dataset(ds)
    labels = open_labels(SCENE.labels, grid, CARD.classes, VL)
    target = labels.read(PixelWindow(0, grid.height, 0, grid.width))
    idx = np.full(256, 255, np.uint8)
    idx[10], idx[20] = 0, 1
    pred = idx[pred]
    if region is not None:
        sl = (slice(region.r0, region.r1), slice(region.c0, region.c1))
        pred, target = pred[sl], target[sl]
    return ConfusionMatrix(2).update(pred, target)


@pytest.mark.parametrize("chunk", [37, 64, 1024])
def test_chunked_scoring_equals_whole_array(prediction: Path, chunk: int) -> None:
    cm, missing = score_scene(prediction, SCENE, CARD, VL, chunk=chunk)
    whole = _whole(prediction)
    assert np.array_equal(cm.matrix, whole.matrix)
    assert cm.total > 20000 and missing > 0  # labelled pixels in the nodata corner
    m = cm.metrics(["background", "building"])
    assert 0 < m["miou"] < 1


def test_regions_score_only_their_pixels(prediction: Path) -> None:
    region = PixelWindow(150, 259, 0, 283)
    cm, _ = score_scene(prediction, SCENE, CARD, VL, regions=[region], chunk=50)
    assert np.array_equal(cm.matrix, _whole(prediction, region).matrix)


def test_bad_input(prediction: Path) -> None:
    with pytest.raises(InputError, match="ignored class 'sky' is not in the model's classes"):
        class_indices(CARD, ["sky"])
    assert class_indices(CARD, [20, "background"]) == [1, 0]
    unlabelled = SCENE.model_copy(update={"labels": None})
    with pytest.raises(InputError, match="has no labels to evaluate against"):
        score_scene(prediction, unlabelled, CARD, VL)
    wrong = SCENE.model_copy(update={"labels": SCENE.labels.model_copy(update={"class_value": 3})})
    with pytest.raises(InputError, match="class_value 3 is not in the class table"):
        score_scene(prediction, wrong, CARD, VL)
