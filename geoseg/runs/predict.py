"""The predict job: scene + bundle -> tile store -> COGs, vector layer and run report."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from geoseg import __version__
from geoseg._files import atomic_write_text
from geoseg.bundle.card import ModelCard
from geoseg.bundle.formats import model_digest, read_model_card
from geoseg.config import NODATA, StrictModel
from geoseg.errors import InputError, OutputError
from geoseg.inference.chunks import ChunkJob, build_graph, run_graph
from geoseg.inference.engine import StageTimer, open_engine
from geoseg.runtime import (
    auto_chunk,
    available_cores,
    default_batch,
    gdal_env,
    plan_threads,
    release_free_memory,
)
from geoseg.scene.scene import Scene
from geoseg.store.tiles import TileStore
from geoseg.tiling.plan import TilePlan

log = logging.getLogger(__name__)

VECTOR_EXT = {"gpkg": ".gpkg", "shp": ".shp", "parquet": ".parquet", "fgb": ".fgb"}


class PredictOptions(StrictModel):
    """Settings of one prediction run (CLI options and pipeline keys share these names)."""

    tile: int | None = Field(None, description="model tile size (default: the bundle's)")
    overlap: int | None = Field(None, description="tile overlap px (default: the bundle's halo)")
    chunk: int | None = Field(None, ge=16, description="output chunk size in pixels (default: "
                              "1024, smaller for small scenes so every worker has work)")
    batch: int | None = Field(None, ge=1, description="tiles per model call (default: 1 on "
                              "CPU, 8 on CUDA)")
    device: str = "cpu"
    amp: bool = Field(True, description="autocast (bf16/fp16) on CUDA")
    workers: int | None = Field(None, ge=1, description="parallel chunk tasks (default: cores)")
    bands: Sequence[int | str] | None = None
    modality_bands: Mapping[str, Sequence[int | str]] = Field(default_factory=dict)
    probabilities: bool = False
    confidence: bool = True
    vector: Literal["gpkg", "shp", "parquet", "fgb", "none"] = "gpkg"
    min_area: float = Field(0.0, ge=0, description="drop polygons smaller than this (m²)")
    simplify: float = Field(0.0, ge=0, description="simplification tolerance (CRS units)")
    resume: bool = True
    overwrite: bool = False
    tiles_dir: Path = Path("tiles")
    progress: bool = True
    scheduler: str | None = Field(
        None, description='Dask scheduler address (tcp://host:port), or "local" for a '
        "LocalCluster of worker processes; default: threads in this process")


def open_scene_for(card: ModelCard, image: str | Path, modalities: Mapping[str, str | Path],
                   opts: PredictOptions) -> Scene:  # fmt: skip
    """Open the scene with the bundle's modality names and check it against the card."""
    ref = card.reference
    sources: dict[str, str | Path] = {ref: image}
    for name, path in modalities.items():
        if name == ref:
            raise InputError(f"--modality {name}=...: {name!r} is the main IMAGE argument")
        if name not in card.modalities:
            raise InputError(f"--modality {name}: the model has no modality {name!r}; "
                             f"it takes {list(card.modalities)}")
        sources[name] = path
    missing = [m for m in card.modalities if m not in sources]
    if missing:
        raise InputError(f"the model needs modalities {missing} too: add --modality "
                         f"{missing[0]}=PATH")
    bands = {ref: opts.bands, **opts.modality_bands}
    resampling = {n: m.resampling for n, m in card.modalities.items()}
    ordered = {n: sources[n] for n in card.modalities}
    scene = Scene.open(ordered, bands=bands, resampling=resampling, reference=ref)
    for name, mod in scene.modalities.items():
        want = len(card.modalities[name].bands)
        if mod.count != want:
            flag = "--bands" if name == ref else f"--modality-bands {name}="
            raise InputError(
                f"{mod.path}: {name!r} has {mod.count} band(s) but the model expects {want} "
                f"({', '.join(card.modalities[name].bands)}); select them with {flag}"
                f"{','.join(str(i + 1) for i in range(want))}"
            )
    return scene


def run_id(scene: Scene, digest: str, plan: TilePlan, opts: PredictOptions, device: str) -> str:
    """Stable id of a run: same inputs, model and output-affecting settings -> same id."""
    h = hashlib.sha256()
    for mod in scene.modalities.values():
        st = os.stat(mod.path) if os.path.exists(mod.path) else None
        h.update(f"{os.path.abspath(mod.path)}|{st and st.st_size}|{st and st.st_mtime_ns}|"
                 f"{mod.bands}|{mod.resampling}".encode())  # fmt: skip
    h.update(f"{digest}|{plan.tile}|{plan.overlap}|{plan.chunk}|{opts.probabilities}|{opts.amp}|"
             f"{torch.device(device).type}".encode())  # fmt: skip
    stem = Path(scene.reference.path).stem
    return f"{stem}-{h.hexdigest()[:12]}"


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".geoseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder is not writable ({exc.strerror}); "
                          "choose another --out") from None


def output_paths(out_dir: Path, stem: str, opts: PredictOptions) -> dict[str, Path]:
    paths = {"classes": out_dir / f"{stem}_classes.tif",
             "classes_style": out_dir / f"{stem}_classes.qml",
             "quicklook": out_dir / f"{stem}_quicklook.png",
             "report": out_dir / f"{stem}_report.json"}  # fmt: skip
    if opts.confidence:
        paths["confidence"] = out_dir / f"{stem}_confidence.tif"
    if opts.probabilities:
        paths["probabilities"] = out_dir / f"{stem}_probabilities.tif"
    if opts.vector != "none":
        paths["vectors"] = out_dir / f"{stem}_polygons{VECTOR_EXT[opts.vector]}"
        paths["vectors_style"] = out_dir / f"{stem}_polygons.qml"
    return paths


def predict(
    image: str | Path,
    model: str | Path,
    out_dir: str | Path,
    modalities: Mapping[str, str | Path] | None = None,
    options: PredictOptions | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Predict a scene with a bundle; returns the run report (also written as JSON).

    Outputs are named ``<name>_classes.tif`` etc.; ``name`` defaults to the image's stem.
    """
    opts = options or PredictOptions()
    t_start = time.perf_counter()
    card = read_model_card(model)
    scene = open_scene_for(card, image, modalities or {}, opts)
    tile = opts.tile or card.tile_size
    if str(model).lower().endswith(".onnx") and tile > card.tile_size:
        raise InputError(f"{model}: exported for tiles of {card.tile_size} px; use --tile "
                         f"{card.tile_size} or less (or export again)")
    overlap = opts.overlap if opts.overlap is not None else min(card.halo, tile // 4)
    chunk = opts.chunk or auto_chunk(scene.grid.height, scene.grid.width, tile,
                                     plan_threads(opts.workers or available_cores())[0])
    opts = opts.model_copy(update={"chunk": chunk, "batch": opts.batch or default_batch(opts.device)})
    plan = TilePlan(scene.grid.height, scene.grid.width, tile, overlap, chunk)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    stem = name or Path(image).stem
    paths = output_paths(out_dir, stem, opts)
    _remove_stale_temporaries(out_dir, stem)
    digest = model_digest(model)
    rid = run_id(scene, digest, plan, opts, opts.device)
    if not opts.overwrite and _finished(paths, rid):
        log.info("%s: already done (run %s); use --overwrite to recompute", image, rid)
        return json.loads(paths["report"].read_text())
    store_root = (Path(opts.tiles_dir) / rid).resolve()
    if opts.overwrite or not opts.resume:
        TileStore(store_root).remove()
    manifest = {"run": rid, "image": str(image), "model": str(model), "digest": digest,
                "tile": tile, "overlap": overlap, "chunk": opts.chunk}  # fmt: skip
    store = TileStore.create(store_root, scene.grid.shape, opts.chunk, card.num_classes,
                             opts.probabilities, manifest)  # fmt: skip
    store.clear_handovers()
    done_before = set(store.done_stats())
    pending = [idx for idx in plan.chunks if idx not in done_before]
    # fewer chunks than workers: give the idle workers' cores to torch instead
    workers, threads = plan_threads(min(opts.workers or available_cores(), max(1, len(pending))))
    torch.set_num_threads(threads)
    log.info("run %s: %d chunks (%d already done), %d tiles of %d px, overlap %d px, "
             "%d worker(s) x %d thread(s)", rid, len(plan.chunks), len(done_before),
             plan.n_tiles, tile, overlap, workers, threads)  # fmt: skip
    timer = StageTimer()
    if not card.trained:
        log.warning("model %s has untrained (random) weights: predictions are meaningless", model)
    job = ChunkJob(scene=scene, plan=plan, batch=opts.batch,
                   class_ids=np.array([c.id for c in card.classes], np.uint8),
                   probabilities=opts.probabilities)  # fmt: skip
    t_run = time.perf_counter()
    if pending:
        bar = tqdm(total=len(plan.chunks), initial=len(done_before), unit="chunk",
                   desc="predict", disable=not opts.progress, leave=False)  # fmt: skip
        with gdal_env(), bar:
            if opts.scheduler:
                results = _run_on_cluster(job, store, model, digest, pending, opts, workers, bar)
            else:
                results = _run_here(job, store, model, pending, opts, workers, threads, bar, timer)
        for res in results[len(pending):]:
            for stage, sec in res.items():
                timer.add(stage, sec)
        del results
        # a recomputed accumulate (its worker died) may re-spill pieces for stored chunks
        store.clear_handovers()
        # the workers' freed buffers stay in their malloc arenas, under the vectoriser's peak
        release_free_memory()
    timer.add("chunks_wall", time.perf_counter() - t_run)
    stats = store.done_stats()
    valid_pixels = sum(s["valid_pixels"] for s in stats.values())
    if valid_pixels == 0:
        store.remove()
        raise InputError(f"{image}: the scene has no valid pixel (all nodata); "
                         "check the file's nodata value and mask")
    with gdal_env():
        _write_outputs(store, scene, card, paths, opts, timer)
    report = _report(image, model, card, digest, scene, plan, opts, rid, paths, stats,
                     done_before, workers, threads, timer, time.perf_counter() - t_start)  # fmt: skip
    atomic_write_text(paths["report"], json.dumps(report, indent=2))
    return report


def _run_here(job: ChunkJob, store: TileStore, model: str | Path, pending: list,
              opts: PredictOptions, workers: int, threads: int, bar: tqdm,
              timer: StageTimer) -> list:  # fmt: skip
    """Run the chunk graph in this process (threads); the model is released on return."""
    with timer.clock("load_model"):
        engine = open_engine(model, opts.device, threads, opts.amp)
    graph, keys = build_graph(job, engine, store, pending, ahead=2 * workers)
    return run_graph(graph, keys, workers, on_done=lambda _: bar.update(1))


def _run_on_cluster(job: ChunkJob, store: TileStore, model: str | Path, digest: str,
                    pending: list, opts: PredictOptions, workers: int, bar: tqdm) -> list:  # fmt: skip
    """Run the chunk graph on a dask.distributed cluster (workers share the tile store)."""
    from geoseg.inference.cluster import EngineSpec, open_client, run_distributed

    spec = EngineSpec(str(Path(model).resolve()), digest, opts.device, threads=0, amp=opts.amp)
    client = open_client(str(opts.scheduler), workers)
    bar.write(f"dask dashboard: {client.dashboard_link}")
    try:
        graph, keys = build_graph(job, spec, store, pending, ahead=2 * workers)
        return run_distributed(client, graph, keys, on_done=lambda _: bar.update(1))
    finally:
        cluster = client.cluster if opts.scheduler == "local" else None
        client.close()
        if cluster is not None:
            cluster.close()


def _remove_stale_temporaries(out_dir: Path, stem: str) -> None:
    """Hidden temporaries of our outputs left by a killed run (never the outputs themselves)."""
    for p in out_dir.glob(f".{stem}_*"):
        if p.is_file():
            p.unlink(missing_ok=True)


def _finished(paths: dict[str, Path], rid: str) -> bool:
    if not all(p.exists() for p in paths.values()):
        return False
    try:
        return json.loads(paths["report"].read_text()).get("run") == rid
    except (OSError, ValueError):
        return False


def _write_outputs(store: TileStore, scene: Scene, card: ModelCard, paths: dict[str, Path],
                   opts: PredictOptions, timer: StageTimer) -> None:  # fmt: skip
    from geoseg.outputs.cog import write_cog

    grid = scene.grid
    colormap = {c.id: c.rgb for c in card.classes}
    names = [c.name for c in card.classes]
    with timer.clock("write_cog"):
        write_cog(paths["classes"], grid, store.reader("classes"), count=1, dtype="uint8",
                  nodata=NODATA, block=512, colormap=colormap, descriptions=["class"],
                  overview_resampling="mode", progress=opts.progress)  # fmt: skip
        if "confidence" in paths:
            write_cog(paths["confidence"], grid, store.reader("confidence"), count=1,
                      dtype="uint8", nodata=NODATA, descriptions=["confidence (x/254)"],
                      overview_resampling="average", progress=opts.progress)  # fmt: skip
        if "probabilities" in paths:
            write_cog(paths["probabilities"], grid, store.reader("probabilities"),
                      count=card.num_classes, dtype="uint8", nodata=NODATA,
                      descriptions=[f"p({n}) x/254" for n in names],
                      overview_resampling="average", progress=opts.progress)  # fmt: skip
    from geoseg.outputs.qgis import embed_gpkg_style, raster_qml, vector_qml, write_qml
    from geoseg.outputs.quicklook import write_quicklook

    write_qml(paths["classes_style"], raster_qml(card.classes))
    with timer.clock("quicklook"):
        write_quicklook(paths["classes"], paths["quicklook"], card.classes,
                        title=f"{paths['classes'].name} ({card.architecture})")  # fmt: skip
    if "vectors" in paths:
        from geoseg.outputs.vectors import polygonize_to_file

        with timer.clock("vectorise"):
            read = store.reader("classes")
            # streamed chunk by chunk: memory does not grow with the number of polygons
            vec = polygonize_to_file(lambda r0, r1, c0, c1: read(r0, r1, c0, c1)[0], grid,
                                     card.classes, paths["vectors"], chunk=opts.chunk,
                                     nodata=NODATA, min_area=opts.min_area, simplify=opts.simplify,
                                     layer=paths["vectors"].stem, progress=opts.progress)  # fmt: skip
        qml = vector_qml(card.classes)
        write_qml(paths["vectors_style"], qml)
        if opts.vector == "gpkg":
            embed_gpkg_style(paths["vectors"], paths["vectors"].stem, qml)
        timer.add("polygons", vec["polygons"])


def _report(image, model, card, digest, scene, plan, opts, rid, paths, stats, done_before,
            workers, threads, timer, wall) -> dict[str, Any]:
    names = {str(c.id): c.name for c in card.classes}
    pixels: dict[str, int] = {}
    areas: dict[str, float] = {}
    for s in stats.values():
        for cid, n in s["pixels"].items():
            pixels[cid] = pixels.get(cid, 0) + n
            areas[cid] = areas.get(cid, 0.0) + s["area_m2"][cid]
    sec = dict(timer.seconds)
    return {
        "run": rid,
        "geoseg_version": __version__,
        "inputs": scene.describe(),
        "image": str(image),
        "model": {"path": str(model), "architecture": card.architecture, "sha256": digest,
                  "trained": card.trained, "classes": [c.model_dump() for c in card.classes]},
        "settings": {**opts.model_dump(mode="json"), "tile": plan.tile, "overlap": plan.overlap,
                     "workers": workers, "torch_threads": threads},
        "overlap_factor": round(plan.overlap_factor, 4),
        "chunks": {"total": len(plan.chunks), "resumed": len(done_before),
                   "computed": len(plan.chunks) - len(done_before),
                   "tiles_run": int(sec.pop("tiles", 0)),
                   "tiles_skipped_nodata": int(sec.pop("tiles_skipped_nodata", 0))},
        "timings_s": {k: round(v, 3) for k, v in sec.items() if k != "polygons"} | {
            "total": round(wall, 3)},
        "polygons": int(sec.get("polygons", 0)),
        "valid_pixels": sum(s["valid_pixels"] for s in stats.values()),
        "classes": {
            names.get(cid, cid): {"id": int(cid), "pixels": pixels[cid],
                                  "area_m2": round(areas[cid], 2)}
            for cid in sorted(pixels, key=int)
        },
        "outputs": {k: str(p) for k, p in paths.items()},
    }  # fmt: skip
