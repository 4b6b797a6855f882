"""Writing a computed run's outputs: COGs, styles, quicklook, polygons, and its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from geoseg import __version__
from geoseg.bundle.card import ModelCard
from geoseg.config import NODATA
from geoseg.geometry.window import BlockReader
from geoseg.inference.engine import StageTimer
from geoseg.runs.compute import Computed
from geoseg.runs.job import RunSetup
from geoseg.runs.options import PredictOptions
from geoseg.scene.scene import Scene
from geoseg.store.tiles import TileStore


def write_outputs(store: TileStore, scene: Scene, card: ModelCard, paths: dict[str, Path],
                  opts: PredictOptions, timer: StageTimer,
                  polygons: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Class (confidence, probability) COGs, QGIS styles and quicklook from the store.

    ``polygons``: waits for the polygon layer, written on a thread of its own
    (``runs.polygons``) while the chunks were computed or while these are written.
    """
    with timer.clock("write_cog"):
        _write_cogs(store, scene, card, paths, opts)
    from geoseg.outputs.qgis import raster_qml, write_qml
    from geoseg.outputs.quicklook import write_quicklook

    write_qml(paths["classes_style"], raster_qml(card.classes))
    with timer.clock("quicklook"):
        write_quicklook(paths["classes"], paths["quicklook"], card.classes,
                        title=f"{paths['classes'].name} ({card.architecture})")  # fmt: skip
    if polygons is not None:
        polygons()


def _write_cogs(store: TileStore, scene: Scene, card: ModelCard, paths: dict[str, Path],
                opts: PredictOptions) -> None:  # fmt: skip
    from geoseg.outputs.cog import write_cog

    grid = scene.grid
    write_cog(paths["classes"], grid, store.reader("classes"), count=1, dtype="uint8",
              nodata=NODATA, block=512, colormap={c.id: c.rgb for c in card.classes},
              descriptions=["class"], overview_resampling="mode", progress=opts.progress)  # fmt: skip
    if "confidence" in paths:
        write_cog(paths["confidence"], grid, store.reader("confidence"), count=1,
                  dtype="uint8", nodata=NODATA, descriptions=["confidence (x/254)"],
                  overview_resampling="average", progress=opts.progress)  # fmt: skip
    if "probabilities" in paths:
        write_cog(paths["probabilities"], grid, store.reader("probabilities"),
                  count=card.num_classes, dtype="uint8", nodata=NODATA,
                  descriptions=[f"p({c.name}) x/254" for c in card.classes],
                  overview_resampling="average", progress=opts.progress)  # fmt: skip


def write_polygons(read: BlockReader, scene: Scene, card: ModelCard, paths: dict[str, Path],
                   opts: PredictOptions, timer: StageTimer, progress: bool) -> None:  # fmt: skip
    """The polygon layer (and its QGIS style) from the class ids ``read`` returns per window."""
    from geoseg.outputs.qgis import embed_gpkg_style, vector_qml, write_qml
    from geoseg.outputs.vectors import polygonize_to_file

    with timer.clock("vectorise"):
        # streamed chunk by chunk: memory does not grow with the number of polygons
        vec = polygonize_to_file(read, scene.grid, card.classes, paths["vectors"],
                                 chunk=opts.chunk, nodata=NODATA, min_area=opts.min_area,
                                 simplify=opts.simplify, layer=paths["vectors"].stem,
                                 progress=progress)  # fmt: skip
    qml = vector_qml(card.classes)
    write_qml(paths["vectors_style"], qml)
    if opts.vector == "gpkg":
        embed_gpkg_style(paths["vectors"], paths["vectors"].stem, qml)
    timer.add("polygons", vec["polygons"])


def build_report(run: RunSetup, done: Computed, stats: dict, wall: float) -> dict[str, Any]:
    """The run report (inputs, model, settings, chunks, timings, per-class pixels and areas)."""
    card, plan, opts = run.card, run.plan, run.opts
    sec = dict(done.timer.seconds)
    chunks = _chunk_counts(done, len(plan.chunks), sec)  # takes the tile counts out of sec
    return {
        "run": run.rid,
        "geoseg_version": __version__,
        "inputs": run.scene.describe(),
        "image": str(run.image),
        "model": {"path": str(run.model), "architecture": card.architecture, "sha256": run.digest,
                  "trained": card.trained, "classes": [c.model_dump() for c in card.classes]},
        "settings": {**opts.model_dump(mode="json"), "batch": done.batch or opts.batch,
                     "tile": plan.tile, "overlap": plan.overlap,
                     "workers": done.workers, "torch_threads": done.threads},
        "overlap_factor": round(plan.overlap_factor, 4),
        "chunks": chunks,
        # tiles of the plan resumed (their results were in the store) and run, with why
        "tiles": done.tiles,
        "timings_s": {k: round(v, 3) for k, v in sec.items() if k != "polygons"} | {
            "total": round(wall, 3)},
        "polygons": int(sec.get("polygons", 0)),
        "valid_pixels": sum(s["valid_pixels"] for s in stats.values()),
        "classes": _class_totals(stats, card),
        "outputs": {k: str(p) for k, p in run.paths.items()},
    }  # fmt: skip


def _chunk_counts(done: Computed, total: int, sec: dict[str, float]) -> dict[str, int]:
    """Chunks resumed, computed and recomputed, and tiles run or skipped (popped from ``sec``)."""
    return {"total": total, "resumed": len(done.done_before),
            "computed": total - len(done.done_before),
            # stored chunks found truncated or corrupt on resume, computed again
            "recomputed_damaged": len(done.damaged),
            "tiles_run": int(sec.pop("tiles", 0)),
            "tiles_skipped_nodata": int(sec.pop("tiles_skipped_nodata", 0))}  # fmt: skip


def _class_totals(stats: dict, card: ModelCard) -> dict[str, dict[str, Any]]:
    """Pixels and area of each class over all chunks, by class name, in class id order."""
    names = {str(c.id): c.name for c in card.classes}
    pixels: dict[str, int] = {}
    areas: dict[str, float] = {}
    for s in stats.values():
        for cid, n in s["pixels"].items():
            pixels[cid] = pixels.get(cid, 0) + n
            areas[cid] = areas.get(cid, 0.0) + s["area_m2"][cid]
    return {names.get(cid, cid): {"id": int(cid), "pixels": pixels[cid],
                                  "area_m2": round(areas[cid], 2)}
            for cid in sorted(pixels, key=int)}  # fmt: skip
