"""Metrics history (CSV + JSON) and the run report (JSON + Markdown) of a training run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg import __version__
from geoseg._files import atomic_write_text
from geoseg.training.config import TrainConfig
from geoseg.training.prepare import Prepared


@dataclass(frozen=True)
class RunFacts:
    """What a run did, as plain values: the report's part besides the config and the data."""

    source: str
    out: Path
    checkpoint: Path
    status: str
    step: int
    resumed_from: int | None
    samples: int
    elapsed: float
    device: str
    world: int
    model_arguments: dict[str, Any]
    inference_parameters: int
    loss_name: str
    amp: bool
    ignore: list[int]
    split: dict[str, Any]
    best: dict[str, Any]


def write_history(rows: Sequence[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """``history.csv`` (one row per validation, columns = union of keys) and ``history.json``."""
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    csv_path, json_path = out / "history.csv", out / "history.json"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(list(rows), indent=1))
    return csv_path, json_path


def _cell(v: Any) -> Any:
    return "" if v is None else (round(v, 6) if isinstance(v, float) else v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def report_markdown(rep: dict[str, Any]) -> str:
    """Human summary of ``train_report.json``."""
    best = rep.get("best") or {}
    m = best.get("metrics") or {}
    split = rep["split"]
    lines = [
        f"# Training run: {rep['model']['architecture']}", "",
        f"- status: **{rep['status']}** after {rep['steps_done']} of {rep['steps_planned']} steps "
        f"({rep['samples_seen']:,} windows, {rep['seconds']:.0f} s, "
        f"{rep['samples_per_s']:.2f} windows/s, device {rep['device']}, "
        f"{rep['world_size']} process(es))",
        f"- loss: {rep['loss']}; optimiser {rep['optimizer']['name']} lr {rep['optimizer']['lr']}; "
        f"schedule {rep['schedule']['name']}",
        f"- split: {split['statement']}",
        *[f"- **warning**: {w}" for w in split.get("warnings", [])],
        f"- best validation (step {best.get('step')}): mIoU {_pct(m.get('miou'))}, "
        f"OA {_pct(m.get('overall_accuracy'))}, kappa "
        f"{'–' if m.get('kappa') is None else round(m['kappa'], 4)}",
        f"- bundles: best `{rep['outputs']['best']}`, last `{rep['outputs']['last']}`",
        "", "| class | val IoU | val F1 | training pixels |", "|---|---:|---:|---:|",
    ]  # fmt: skip
    pixels = rep.get("class_pixels", {})
    if "pixel" in rep:  # a per-pixel model: no steps, no optimiser
        px = rep["pixel"]
        lines[2] = (f"- status: **{rep['status']}**: {px['training_pixels']:,} training pixels, "
                    f"{px['features']} features, fitted in {px['fit_s']} s ({rep['seconds']:.0f} s "
                    "in all)")  # fmt: skip
        lines[3] = f"- model: {rep['loss']}, {rep['model']['inference_parameters']:,} tree nodes"
    for name, c in (m.get("per_class") or {}).items():
        lines.append(f"| {name} | {_pct(c['iou'])} | {_pct(c['f1'])} | {pixels.get(name, 0):,} |")
    lines += ["", "Normalisation: " + ", ".join(
        f"{k} ({v['how']})" for k, v in rep["normalisation"].items()), ""]  # fmt: skip
    return "\n".join(lines)


def write_report(rep: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``train_report.json`` and its Markdown summary ``train_report.md`` in ``out``."""
    jp, mp = out / "train_report.json", out / "train_report.md"
    atomic_write_text(jp, json.dumps(rep, indent=2, default=str))
    atomic_write_text(mp, report_markdown(rep))
    return jp, mp


def run_report(cfg: TrainConfig, prep: Prepared, run: RunFacts) -> dict[str, Any]:
    """Everything about a run, for train_report.json."""
    names = [c.name for c in prep.classes]
    return {
        "geoseg_version": __version__, "pipeline": run.source, "out": str(run.out),
        "status": run.status, "steps_done": run.step, "steps_planned": cfg.steps,
        "resumed_from_step": run.resumed_from, "samples_seen": run.samples,
        "seconds": round(run.elapsed, 2),
        "samples_per_s": run.samples / run.elapsed if run.elapsed else 0.0,
        "device": run.device, "world_size": run.world,
        "model": {"architecture": cfg.model.architecture, "arguments": run.model_arguments,
                  "inference_parameters": run.inference_parameters},
        "loss": run.loss_name, "optimizer": cfg.optimizer.model_dump(mode="json"),
        "schedule": cfg.schedule.model_dump(mode="json"), "recipe": cfg.recipe,
        "batch": cfg.batch, "window": cfg.sampling.window, "sampling": cfg.sampling.mode,
        "amp": run.amp, "clip_grad": cfg.clip_grad, "seed": cfg.seed,
        "classes": [c.model_dump() for c in prep.classes],
        "class_pixels": dict(zip(names, prep.class_pixels, strict=True)),
        "ignored_in_mean": [names[i] for i in run.ignore],
        "scenes": [{"id": s.id, "shape": list(s.shape), "catalog_split": s.split}
                   for s in prep.scenes],
        "modalities": {m: {"bands": prep.roles[m], **prep.norm[m]} for m in prep.modalities},
        "normalisation": prep.norm, "split": run.split,
        "vector_labels": cfg.vector_labels.model_dump(),
        "scene_specs": [s.model_dump(mode="json", exclude_none=True)
                        for s in prep.catalog_scenes],
        "source": prep.source,
        "best": run.best, "best_metric": cfg.best_metric,
        "outputs": {"best": str(run.out / "best"), "last": str(run.out / "last"),
                    "history_csv": str(run.out / "history.csv"),
                    "history_json": str(run.out / "history.json"),
                    "checkpoint": str(run.checkpoint)},
    }  # fmt: skip
