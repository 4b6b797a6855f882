"""Evaluation of a bundle on labelled scenes, with the tiled predictor, chunk by chunk.

Each scene is predicted by ``geoseg.runs.predict.predict`` (resumable, memory O(chunk)); the class
COG and the labels (raster, or polygons burnt on the scene grid) are then read chunk by chunk
into one confusion matrix — no whole-scene array. ``regions`` (or a training run's held-out
area, ``holdout=train_report.json``) restrict the scored pixels.

Outputs in ``out``: ``<scene>/`` prediction outputs, ``evaluation.json`` (overall and per-scene
metrics, settings), ``evaluation.md`` and ``evaluation_confusion.png``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.bundle.card import ModelCard
from geoseg.catalog.spec import CatalogScene
from geoseg.config import IGNORE
from geoseg.errors import InputError
from geoseg.evaluation.metrics import ConfusionMatrix, write_metrics
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.runs.options import PredictOptions
from geoseg.scene.labels import VectorLabels, open_labels

log = logging.getLogger(__name__)


def class_indices(card: ModelCard, names: Sequence[int | str]) -> list[int]:
    """Indices of classes given by id or name (for ``ignore_classes``)."""
    out = []
    for item in names:
        idx = next((i for i, c in enumerate(card.classes)
                    if str(c.id) == str(item) or c.name == str(item)), None)  # fmt: skip
        if idx is None:
            raise InputError(f"ignored class {item!r} is not in the model's classes "
                             f"({', '.join(f'{c.id}={c.name}' for c in card.classes)})")
        out.append(idx)
    return out


def holdout_regions(report: str | Path) -> tuple[list[CatalogScene], dict[str, list[PixelWindow]],
                                                 VectorLabels]:  # fmt: skip
    """Scenes, validation rectangles and label settings of a training run's report."""
    path = Path(report)
    try:
        rep = json.loads(path.read_text())
        # a features split: the scenes with labels of the held-out features only
        specs = rep.get("holdout_scene_specs") or rep["scene_specs"]
        rects = {s["scene"]: [PixelWindow(*r) for r in s["val_rects"]] for s in rep["split"]["scenes"]}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a geoseg training report ({exc}); give the "
                         "train_report.json of a training run") from None  # fmt: skip
    if not specs and rep.get("source"):
        raise InputError(f"{path}: the run trained on the torchgeo dataset "
                         f"{rep['source'].get('torchgeo')}, whose held-out samples are not "
                         "catalog scenes (their scores are the run's validation metrics); "
                         "evaluate on catalog scenes with catalog: and split: instead")  # fmt: skip
    scenes = [CatalogScene.model_validate(s) for s in specs]
    scenes = [s for s in scenes if rects.get(s.id)]
    return scenes, rects, VectorLabels.model_validate(rep.get("vector_labels", {}))


def _id_lut(card: ModelCard) -> np.ndarray:
    """Predicted class id -> class index (255 stays nodata)."""
    lut = np.full(256, IGNORE, np.uint8)
    for i, c in enumerate(card.classes):
        lut[c.id] = i
    return lut


def score_scene(classes_tif: str | Path, cs: CatalogScene, card: ModelCard,
                vector_labels: VectorLabels, regions: Sequence[PixelWindow] | None = None,
                chunk: int = 1024) -> tuple[ConfusionMatrix, int]:  # fmt: skip
    """Confusion matrix of a predicted class COG against the scene's labels, chunk by chunk.

    Returns the matrix and the number of labelled pixels left without a prediction (nodata).
    """
    if cs.labels is None:
        raise InputError(f"scene {cs.id!r} has no labels to evaluate against; add labels:")
    with rasterio.open(classes_tif) as ds:
        grid = GridBox.from_dataset(ds)
    labels = open_labels(cs.labels, grid, card.classes, vector_labels)
    lut = _id_lut(card)
    cm = ConfusionMatrix(card.num_classes)
    missing = 0
    with rasterio.open(classes_tif) as ds:
        for part in _scored_windows(grid, regions, chunk):
            win = rasterio.windows.Window(part.c0, part.r0, part.width, part.height)
            pred = lut[ds.read(1, window=win)]
            target = labels.read(part)
            missing += int(((pred == IGNORE) & (target != IGNORE)).sum())
            cm.update(pred, target)
    return cm, missing


def _scored_windows(grid: GridBox, regions: Sequence[PixelWindow] | None,
                    chunk: int) -> Iterator[PixelWindow]:  # fmt: skip
    """The chunks of ``grid`` (row-major), each cut to the regions it overlaps."""
    for w in grid.chunks(chunk):
        for r in regions if regions is not None else [w]:
            part = w.intersection(r)
            if part is not None:
                yield part


def evaluate(
    model: str | Path,
    scenes: Sequence[CatalogScene],
    out_dir: str | Path,
    options: PredictOptions | None = None,
    *,
    ignore_classes: Sequence[int | str] = (),
    vector_labels: VectorLabels | None = None,
    regions: Mapping[str, Sequence[PixelWindow]] | None = None,
    chunk: int = 1024,
    title: str | None = None,
) -> dict[str, Any]:
    """Predict and score every scene; returns the report (also written to ``out_dir``)."""
    from geoseg.bundle.formats import read_model_card

    card = read_model_card(model)
    if not scenes:
        raise InputError("no labelled scene to evaluate; check the catalog, split or scenes")
    opts = (options or PredictOptions()).model_copy(update={"vector": "none"})
    run = _Run(model, card, Path(out_dir), opts, vector_labels or VectorLabels(),
               class_indices(card, ignore_classes), chunk)  # fmt: skip
    total = ConfusionMatrix(card.num_classes)
    per_scene: dict[str, Any] = {}
    t0 = time.perf_counter()
    for cs in scenes:
        rects = None if regions is None else list(regions.get(cs.id, []))
        cm, per_scene[cs.id] = run.score(cs, rects)
        total += cm
    report = {**total.metrics(run.names, run.ignored), "model": str(model),
              "architecture": card.architecture, "scenes": per_scene,
              "regions": "held-out areas" if regions is not None else "whole scenes",
              "seconds": round(time.perf_counter() - t0, 2),
              "settings": {**run.opts.model_dump(mode="json"), "chunk_scored": chunk,
                           "vector_labels": run.vector_labels.model_dump()}}  # fmt: skip
    write_metrics(report, run.out, "evaluation",
                  title or f"Evaluation of {Path(model).name} ({card.architecture})")  # fmt: skip
    return report


@dataclass(frozen=True)
class _Run:
    """The settings one evaluation applies to each of its scenes."""

    model: str | Path
    card: ModelCard
    out: Path
    opts: PredictOptions
    vector_labels: VectorLabels
    ignored: list[int]
    chunk: int

    @property
    def names(self) -> list[str]:
        """Class names, in index order."""
        return [c.name for c in self.card.classes]

    def score(self, cs: CatalogScene, rects: list[PixelWindow] | None) -> tuple[ConfusionMatrix, dict]:
        """Predict ``cs`` into ``out/<id>`` and score it: its matrix and its report entry."""
        from geoseg.runs.batch import scene_inputs
        from geoseg.runs.predict import predict

        if cs.labels is None:
            raise InputError(f"scene {cs.id!r} has no labels to evaluate against; add labels:")
        image, extra, sopts = scene_inputs(cs, self.card, self.opts)
        rep = predict(image, self.model, self.out / cs.id, extra, sopts, name=cs.id)
        classes_tif = rep["outputs"]["classes"]
        cm, missing = score_scene(classes_tif, cs, self.card, self.vector_labels, rects, self.chunk)
        m = cm.metrics(self.names, self.ignored)
        log.info("evaluated %s: mIoU %s over %d px", cs.id, m["miou"], m["pixels"])
        return cm, {"miou": m["miou"], "overall_accuracy": m["overall_accuracy"],
                    "kappa": m["kappa"], "pixels": m["pixels"],
                    "labelled_without_prediction": missing,
                    "regions": None if rects is None else [r.as_list() for r in rects],
                    "classes_tif": classes_tif,
                    "per_class_iou": {n: c["iou"] for n, c in m["per_class"].items()}}  # fmt: skip
