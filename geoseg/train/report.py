"""Metrics history (CSV + JSON) and the run report (JSON + Markdown) of a training run."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.store import atomic_write_text


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
