"""The predict job: scene + bundle -> tile store -> COGs, vector layer and run report.

:func:`predict` is the one implementation that the CLI, batch runs, pipelines, evaluation
and the service call: plan (``runs.job``) -> compute chunks (``runs.compute``) -> write
outputs and report (``runs.write``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._files import atomic_write_text, write_failed
from geoseg.errors import InputError
from geoseg.runs.job import RunSetup, plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runtime import gdal_env
from geoseg.store.lock import store_lock

if TYPE_CHECKING:
    from geoseg.runs.compute import Computed, ProgressCallback
    from geoseg.runs.polygons import PolygonsAhead
    from geoseg.store.tiles import TileStore

log = logging.getLogger(__name__)


def predict(
    image: str | Path,
    model: str | Path,
    out_dir: str | Path,
    modalities: Mapping[str, str | Path] | None = None,
    options: PredictOptions | None = None,
    name: str | None = None,
    progress_callback: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Predict a scene with a bundle; returns the run report (also written as JSON).

    Outputs are named ``<name>_classes.tif`` etc.; ``name`` defaults to the image's stem.
    ``progress_callback(stage, chunks done, chunks total)`` follows the run (the service).
    """
    t_start = time.perf_counter()
    run = plan_run(image, model, out_dir, modalities or {}, options or PredictOptions(), name)
    # one run at a time per tile store: a second identical run waits (wait=) or exits naming
    # the running process; a lock left by a dead process is taken over
    with store_lock(run.store_root, wait=run.opts.wait):
        return _predict_locked(run, t_start, progress_callback)


def _predict_locked(run: RunSetup, t_start: float,
                    progress_callback: ProgressCallback | None) -> dict[str, Any]:  # fmt: skip
    """The run, once its lock is held: resume or compute the chunks, write the outputs."""
    image = run.image
    _remove_stale_temporaries(run)
    if not run.opts.overwrite and _finished(run.paths, run.rid):
        log.info("%s: already done (run %s); use --overwrite to recompute", image, run.rid)
        return json.loads(run.paths["report"].read_text())
    # torch, Dask and the model load only once the inputs are known good: a bad input fails
    # in well under a second (plan_run reads headers and the card only)
    from geoseg.runs.compute import compute_chunks, open_store
    from geoseg.runs.space import check_free_space

    check_free_space(run)
    before = _stamps(run.paths)
    polygons = None
    try:
        store = open_store(run)
        if "vectors" in run.paths and vectorise_during(run.opts):
            polygons = _start_polygons(run, store, progress=False)
        done = compute_chunks(run, progress_callback, store)
        stats = _valid_stats(run, done)
        if "vectors" in run.paths and polygons is None:
            # after the chunks, beside the COG writes: the vectoriser holds the GIL for most
            # of its work, GDAL's compression and overviews do not (8192²: 10.0 -> 7.8 s)
            polygons = _start_polygons(run, store, progress=run.opts.progress)
        return _write_all(run, done, stats, polygons, t_start, progress_callback)
    except BaseException:
        if polygons is not None:
            polygons.cancel()
        # an incomplete set is no result: remove what this attempt wrote (a tile store with
        # chunks stays, so the same command resumes; one without is dropped)
        for out in _written_since(before):
            out.unlink(missing_ok=True)
        _drop_empty_store(run.store_root)
        raise


def vectorise_during(opts: PredictOptions) -> bool:
    """Whether the polygons are vectorised while the chunks are computed (``polygons_when``)."""
    if opts.polygons_when != "auto":
        return opts.polygons_when == "during"
    return opts.device != "cpu" or opts.scheduler not in (None, "local")


def _start_polygons(run: RunSetup, store: TileStore, progress: bool) -> PolygonsAhead:
    """The polygon layer's thread, reading chunks as the store holds them."""
    from geoseg.inference.engine import StageTimer
    from geoseg.runs.polygons import PolygonsAhead

    return PolygonsAhead(run, store, StageTimer(), progress=progress).start()


def _valid_stats(run: RunSetup, done: Computed) -> dict:
    """The stored chunks' statistics; an all-nodata scene is an input error (store removed)."""
    stats = done.store.done_stats()
    if sum(s["valid_pixels"] for s in stats.values()) == 0:
        done.store.remove()
        raise InputError(f"{run.image}: the scene has no valid pixel (all nodata); "
                         "check the file's nodata value and mask")  # fmt: skip
    return stats


def _write_all(run: RunSetup, done: Computed, stats: dict, polygons: PolygonsAhead | None,
               t_start: float, progress_callback: ProgressCallback | None) -> dict[str, Any]:  # fmt: skip
    """The outputs and the report of computed chunks (polygons: joined, not written here)."""
    from geoseg.runs.write import build_report, write_outputs

    if progress_callback is not None:
        progress_callback("outputs", len(run.plan.chunks), len(run.plan.chunks))
    t_chunks = time.perf_counter()
    with gdal_env():
        write_outputs(done.store, run.scene, run.card, run.paths, run.opts, done.timer,
                      polygons=polygons and polygons.finish)  # fmt: skip
    if polygons is not None:
        for stage, value in polygons.timer.seconds.items():
            done.timer.add(stage, value)
        # what the polygons added to the run's wall time: their work after the last chunk
        done.timer.add("polygons_after_chunks", max(0.0, (polygons.ended or t_chunks) - t_chunks))
    report = build_report(run, done, stats, time.perf_counter() - t_start)
    path, text = run.paths["report"], json.dumps(report, indent=2)
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise write_failed(path, path.parent, err, len(text.encode())) from err
    return report


def _output_files(paths: dict[str, Path]) -> list[Path]:
    """The files of the run's outputs (a Shapefile's parts included)."""
    files = list(paths.values())
    shp = paths.get("vectors")
    if shp is not None and shp.suffix == ".shp":
        files += [shp.with_suffix(ext) for ext in (".dbf", ".shx", ".prj", ".cpg")]
    return files


def _stamps(paths: dict[str, Path]) -> dict[Path, tuple[int, int] | None]:
    stamps = {}
    for p in _output_files(paths):
        try:
            st = p.stat()
            stamps[p] = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamps[p] = None
    return stamps


def _written_since(before: dict[Path, tuple[int, int] | None]) -> list[Path]:
    """The outputs (re)written since ``before`` was taken."""
    return [p for p, stamp in before.items() if _stamps({"x": p}).get(p) not in (None, stamp)]


def _drop_empty_store(root: Path) -> None:
    """Remove a tile store that holds no finished chunk nor any spilled hand-over (a run that
    failed before any)."""
    done = root / "done"
    if (root.is_dir() and not any(done.glob("[0-9]*_*.json"))
            and not any((root / "handover").glob("*.npy"))):  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def _remove_stale_temporaries(run: RunSetup) -> None:
    """Hidden temporaries of our outputs left by a killed run (never the outputs themselves)."""
    stem = run.paths["classes"].name.removesuffix("_classes.tif")
    for p in run.paths["classes"].parent.glob(f".{stem}_*"):
        if p.is_file():
            p.unlink(missing_ok=True)


def _finished(paths: dict[str, Path], rid: str) -> bool:
    if not all(p.exists() for p in paths.values()):
        return False
    try:
        return json.loads(paths["report"].read_text()).get("run") == rid
    except (OSError, ValueError):
        return False


__all__ = ["predict"]
