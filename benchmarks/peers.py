"""Peers of `geoseg predict` for benchmarks/predict.py: Raster Vision 0.31 (issue 17).

The RV child (:func:`rv_predict`) runs under Raster Vision's own python, given to predict.py as
``--rv-python PATH``: an overlay venv (recipe in benchmarks/predict.py's docstring), because Raster
Vision pins pandas < 3. The model is the geoseg bundle's own torch module; RV reads, normalises,
tiles, blends (mean of the chips' softmax scores) and writes.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Any

SCORE_BYTES = 2  # RV's smooth labels: a float16 score per class and pixel (+ a uint8 hit count)


def rss_mib() -> float:
    """Peak RSS of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def geoseg_bare(bundle: str) -> dict:
    """geoseg's bare process: the modules a predict run imports, and the bundle's model."""
    import geoseg.runs.compute
    import geoseg.runs.predict
    import geoseg.runs.write  # noqa: F401
    from geoseg.bundle.bundle import load_bundle

    load_bundle(bundle)
    return {"bare_rss_mib": rss_mib()}


def dict_model(model: Any) -> Any:
    """A thin nn.Module taking an (N, C, H, W) tensor: geoseg models take {modality: tensor}."""
    import torch

    class DictInput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner({"image": x})

    return DictInput(model)


def learner(card: Any, model: Any, tile: int) -> Any:
    """A SemanticSegmentationLearner in inference mode around ``model``.

    Normalisation: RV's base transform is ``A.Resize(img_sz)`` (a no-op at img_sz = tile) then
    ``base_transform``; ``A.Normalize(mean, std, max_pixel_value=1)`` on the uint8 chip gives
    (x - mean) / std in raw DN, geoseg's formula (RV's own /255 applies only to chips still unsigned).
    """
    import albumentations as A
    from rastervision.core.data import ClassConfig
    from rastervision.pytorch_learner import (
        SemanticSegmentationGeoDataConfig,
        SemanticSegmentationLearner,
        SemanticSegmentationLearnerConfig,
        SolverConfig,
    )

    mod = card.modalities["image"]
    norm = A.Normalize(mean=tuple(mod.mean), std=tuple(mod.std), max_pixel_value=1.0)
    names = [c.name for c in card.classes]
    # RV needs a null class (the id of pixels no chip covered: none here); class 0, not a 7th class
    classes = ClassConfig(names=names, null_class=names[0])
    data = SemanticSegmentationGeoDataConfig(
        class_config=classes, img_channels=len(mod.bands), img_sz=tile, num_workers=0,
        base_transform=A.to_dict(norm), augmentors=[])  # fmt: skip
    cfg = SemanticSegmentationLearnerConfig(data=data, solver=SolverConfig(batch_sz=1), model=None)
    return SemanticSegmentationLearner(cfg, model=dict_model(model), training=False)


def rv_scene(scene: str, cls_cfg: Any, out: str) -> Any:
    """RV Scene (bands 3,2,1 = channel_order [2, 1, 0], 0-based) with a smooth label store."""
    from rastervision.core.data import RasterioSource, Scene, SemanticSegmentationLabelStore

    src = RasterioSource(scene, channel_order=[2, 1, 0])
    store = SemanticSegmentationLabelStore(
        out, crs_transformer=src.crs_transformer, class_config=cls_cfg, smooth_output=True,
        discrete_output=True)  # fmt: skip
    return Scene(id="bench", raster_source=src, label_store=store)


def rv_predict(scene: str, bundle: str, out: str, threads: int, stride: int) -> dict:
    """Predict ``scene`` with RV's predict_scene_ss; write ``out``/labels.tif (class ids)."""
    import torch
    from rastervision.core.data import SemanticSegmentationLabelStore
    from rastervision.core.rv_pipeline import SemanticSegmentationPredictOptions
    from rastervision.pytorch_learner.utils.prediction import predict_scene_ss

    from geoseg.bundle.bundle import load_bundle

    torch.set_num_threads(threads)
    b = load_bundle(bundle)
    lrn = learner(b.card, b.model, b.card.tile_size)
    sc = rv_scene(scene, lrn.cfg.data.class_config, out)
    bare = rss_mib()
    t0 = time.perf_counter()
    opts = SemanticSegmentationPredictOptions(chip_sz=b.card.tile_size, stride=stride, batch_sz=1)
    labels = predict_scene_ss(lrn, sc, opts)  # smooth: mean of the chips' softmax scores
    t1 = time.perf_counter()
    # the class raster only, like geoseg's "classes" run (the scores.tif of smooth_output is not
    # written: geoseg's confidence COG is off in that run too)
    store = sc.label_store
    writer = SemanticSegmentationLabelStore(
        out, crs_transformer=store.crs_transformer, class_config=store.class_config,
        smooth_output=False, discrete_output=True)  # fmt: skip
    writer.save(labels, profile={"compress": "deflate", "BIGTIFF": "IF_SAFER"})
    return {"bare_rss_mib": bare, "threads": torch.get_num_threads(), "predict_s": t1 - t0,
            "save_s": time.perf_counter() - t1, "labels": str(Path(out) / "labels.tif"),
            "chips": len(sc.extent.get_windows(opts.chip_sz, stride=stride))}  # fmt: skip


def rv_chips(size: int, tile: int, stride: int) -> int:
    """Chips RV's sliding window runs on a square scene (windows padded past the end)."""
    return (math.ceil(max(size - tile, 0) / stride) + 1) ** 2


def rv_estimate(prev: dict, size: int, classes: int, tile: int, stride: int) -> dict:
    """RV's wall and peak RSS at ``size`` extrapolated from its run at a smaller size: the start
    as it was, prediction by chips, saving and the smooth labels (float16 scores) by pixels."""
    rv = prev["rv"]
    chips = rv_chips(size, tile, stride) / rv_chips(prev["size"], tile, stride)
    pixels = (size / prev["size"]) ** 2
    start = rv["wall_s"] - rv["predict_s"] - rv["save_s"]
    extra_px = size * size - prev["size"] ** 2
    return {
        "from_size": prev["size"],
        "wall_s": start + rv["predict_s"] * chips + rv["save_s"] * pixels,
        "peak_rss_mib": rv["peak_rss_mib"] + (classes * SCORE_BYTES + 1) * extra_px / 2**20,
    }


def agreement(a: str, b: str) -> float:
    """Fraction of pixels with the same class in two class rasters of one grid (row blocks)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    same = 0
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        if ra.shape != rb.shape or ra.transform != rb.transform:
            raise SystemExit(f"class rasters differ in grid: {a} {b}")
        h, w = ra.shape
        for r in range(0, h, 1024):
            win = Window(0, r, w, min(1024, h - r))
            same += int(np.count_nonzero(ra.read(1, window=win) == rb.read(1, window=win)))
    return same / (h * w)


def ratios(row: dict) -> dict:
    """RV / geoseg for wall, peak RSS and RSS above the bare process."""
    g, rv = row["geoseg"], row["rv"]
    return {k: rv[k] / g[k] for k in ("wall_s", "peak_rss_mib", "above_bare_mib")}


def peers_table(rows: list[dict]) -> str:
    """The "Peers" table of docs/benchmarks.md."""
    head = (
        "| scene | geoseg wall | RV wall | RV / geoseg | geoseg peak RSS | RV peak RSS | "
        "RV / geoseg | geoseg above bare | RV above bare | RV / geoseg | same class |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        g, rv = r["geoseg"], r.get("rv")
        cells = [f"{r['size']}²", f"{g['wall_s']:.1f} s"]
        if rv is None:
            lines.append("| " + " | ".join([*cells, f"skipped: {r['rv_skipped']}"] + ["–"] * 8) + " |")
            continue
        q = r["ratios"]
        cells += [f"{rv['wall_s']:.1f} s", f"×{q['wall_s']:.2f}", f"{g['peak_rss_mib']:.0f} MiB",
                  f"{rv['peak_rss_mib']:.0f} MiB", f"×{q['peak_rss_mib']:.2f}",
                  f"{g['above_bare_mib']:.0f} MiB", f"{rv['above_bare_mib']:.0f} MiB",
                  f"×{q['above_bare_mib']:.2f}", f"{r['agreement']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
