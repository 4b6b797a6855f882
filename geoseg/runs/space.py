"""Disk space of a run, checked roughly before it starts.

What a run writes grows with the scene: the tile store (class ids and confidence, one byte per
pixel each, plus one per class with probabilities; spilled hand-overs of one chunk row), the
COGs (the same bytes plus a third for overviews, and a streamed temporary file while each is
laid out) and the polygon layer (measured 3.7 bytes per pixel for an untrained, noisy model on
RGB.byte.tif; far less for a trained one). Compression makes the real sizes smaller: the
estimate assumes 2:1 and is meant to catch a disk that clearly cannot hold the run, not to
predict the bytes. A disk that fills anyway is told in one line by the writer that failed
(``geoseg._files.write_failed``), and the tile store stays resumable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from geoseg._files import free_bytes, human_bytes
from geoseg.runs.job import RunSetup

log = logging.getLogger(__name__)

#: compression assumed by the estimate (class rasters compress 18:1 here, confidence 2.5:1)
ASSUMED_RATIO = 2.0
#: polygon layer bytes per pixel assumed (measured 3.7 for a noisy untrained model)
VECTOR_BYTES_PER_PIXEL = 1.0


def estimate(run: RunSetup, pending: int | None = None) -> dict[Path, int]:
    """Rough bytes the run will still write, per destination folder (tile store, outputs).

    Args:
        pending: chunks still to compute (default: all of them).
    """
    h, w = run.scene.grid.shape
    k, opts, plan = run.card.num_classes, run.opts, run.plan
    pixels = h * w
    share = 1.0 if pending is None else pending / max(len(plan.chunks), 1)
    per_px = 2 + (k if opts.probabilities else 0)
    handovers = w * plan.tile * ((k + 1) * 4 + 1)  # one chunk row of float32 sums + masks
    store = pixels * per_px * share / ASSUMED_RATIO + handovers * share
    bands = [1] + [1] * opts.confidence + [k] * opts.probabilities
    cogs = pixels * sum(bands) * 4 / 3 / ASSUMED_RATIO
    cogs += pixels * max(bands) / ASSUMED_RATIO  # the largest COG's streamed temporary
    vectors = pixels * VECTOR_BYTES_PER_PIXEL if "vectors" in run.paths else 0
    out = {run.store_root.parent: int(store)}
    folder = run.paths["classes"].parent
    out[folder] = out.get(folder, 0) + int(cogs + vectors)
    return out


def check_free_space(run: RunSetup, pending: int | None = None) -> list[str]:
    """Warn (log) for each file system that looks too small for what the run will write.

    Folders on one file system are summed. Returns the warnings (empty when all fits).
    """
    by_device: dict[int, tuple[list[Path], int]] = {}
    for folder, need in estimate(run, pending).items():
        dev = _device(folder)
        folders, total = by_device.get(dev, ([], 0))
        by_device[dev] = ([*folders, folder], total + need)
    warnings = []
    for folders, need in by_device.values():
        free = free_bytes(folders[0])
        if free is not None and free < need:
            where = " and ".join(str(f) for f in folders)
            warnings.append(f"{where}: about {human_bytes(need)} needed (rough estimate), "
                            f"{human_bytes(free)} free; the run may fail when the disk fills: "
                            "free space or choose other folders (--out, --tiles-dir)")  # fmt: skip
    for text in warnings:
        log.warning("%s", text)
    return warnings


def _device(folder: Path) -> int:
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return os.stat(p).st_dev
    except OSError:
        return -1
