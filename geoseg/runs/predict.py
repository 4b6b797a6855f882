"""The predict job: scene + bundle -> tile store -> COGs, vector layer and run report.

:func:`predict` is the one implementation that the CLI, batch runs, pipelines, evaluation
and the service call: plan (``runs.job``) -> compute chunks (``runs.compute``) -> write
outputs and report (``runs.write``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoseg._files import atomic_write_text
from geoseg.errors import InputError
from geoseg.runs.compute import compute_chunks
from geoseg.runs.job import RunSetup, plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runs.write import build_report, write_outputs
from geoseg.runtime import gdal_env

log = logging.getLogger(__name__)


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
    t_start = time.perf_counter()
    run = plan_run(image, model, out_dir, modalities or {}, options or PredictOptions(), name)
    _remove_stale_temporaries(run)
    if not run.opts.overwrite and _finished(run.paths, run.rid):
        log.info("%s: already done (run %s); use --overwrite to recompute", image, run.rid)
        return json.loads(run.paths["report"].read_text())
    done = compute_chunks(run)
    stats = done.store.done_stats()
    if sum(s["valid_pixels"] for s in stats.values()) == 0:
        done.store.remove()
        raise InputError(f"{image}: the scene has no valid pixel (all nodata); "
                         "check the file's nodata value and mask")  # fmt: skip
    with gdal_env():
        write_outputs(done.store, run.scene, run.card, run.paths, run.opts, done.timer)
    report = build_report(run, done, stats, time.perf_counter() - t_start)
    atomic_write_text(run.paths["report"], json.dumps(report, indent=2))
    return report


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
