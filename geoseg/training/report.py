"""Metrics history (CSV + JSON) and the run report (JSON + Markdown) of a training run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg import __version__
from geoseg._files import atomic_write_text

if TYPE_CHECKING:
    from geoseg.training.loop import Trainer


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
        f"- best validation (step {best.get('step')}): mIoU {_pct(m.get('miou'))}, "
        f"OA {_pct(m.get('overall_accuracy'))}, kappa "
        f"{'–' if m.get('kappa') is None else round(m['kappa'], 4)}",
        f"- bundles: best `{rep['outputs']['best']}`, last `{rep['outputs']['last']}`",
        "", "| class | val IoU | val F1 | training pixels |", "|---|---:|---:|---:|",
    ]  # fmt: skip
    pixels = rep.get("class_pixels", {})
    for name, c in (m.get("per_class") or {}).items():
        lines.append(f"| {name} | {_pct(c['iou'])} | {_pct(c['f1'])} | {pixels.get(name, 0):,} |")
    lines += ["", "Normalisation: " + ", ".join(
        f"{k} ({v['how']})" for k, v in rep["normalisation"].items()), ""]  # fmt: skip
    return "\n".join(lines)


def write_report(rep: dict[str, Any], out: Path) -> tuple[Path, Path]:
    jp, mp = out / "train_report.json", out / "train_report.md"
    atomic_write_text(jp, json.dumps(rep, indent=2, default=str))
    atomic_write_text(mp, report_markdown(rep))
    return jp, mp


def run_report(tr: Trainer) -> dict[str, Any]:
    """Everything about a run, for train_report.json."""
    cfg, prep = tr.cfg, tr.prep
    names = [c.name for c in prep.classes]
    n_params = sum(p.numel() for p in tr.model.inference_state_dict().values())
    return {
        "geoseg_version": __version__, "pipeline": tr.source, "out": str(tr.out),
        "status": tr.status, "steps_done": tr.step, "steps_planned": cfg.steps,
        "resumed_from_step": tr.resumed_from, "samples_seen": tr.samples,
        "seconds": round(tr.elapsed, 2),
        "samples_per_s": tr.samples / tr.elapsed if tr.elapsed else 0.0,
        "device": str(tr.device), "world_size": tr.dist.world,
        "model": {"architecture": cfg.model.architecture,
                  "arguments": tr.model.args.model_dump(mode="json"),
                  "inference_parameters": int(n_params)},
        "loss": tr.module.loss_name, "optimizer": cfg.optimizer.model_dump(mode="json"),
        "schedule": cfg.schedule.model_dump(mode="json"), "recipe": cfg.recipe,
        "batch": cfg.batch, "window": cfg.sampling.window, "sampling": cfg.sampling.mode,
        "amp": tr.amp_dtype is not None, "clip_grad": cfg.clip_grad, "seed": cfg.seed,
        "classes": [c.model_dump() for c in prep.classes],
        "class_pixels": dict(zip(names, prep.class_pixels, strict=True)),
        "ignored_in_mean": [names[i] for i in tr.ignore],
        "scenes": [{"id": s.id, "shape": list(s.shape), "catalog_split": s.split}
                   for s in prep.scenes],
        "modalities": {m: {"bands": prep.roles[m], **prep.norm[m]} for m in prep.modalities},
        "normalisation": prep.norm, "split": tr.split,
        "vector_labels": cfg.vector_labels.model_dump(),
        "scene_specs": [s.model_dump(mode="json", exclude_none=True)
                        for s in prep.catalog_scenes],
        "best": tr.best, "best_metric": cfg.best_metric,
        "outputs": {"best": str(tr.out / "best"), "last": str(tr.out / "last"),
                    "history_csv": str(tr.out / "history.csv"),
                    "history_json": str(tr.out / "history.json"),
                    "checkpoint": str(tr.ckpt)},
    }  # fmt: skip
