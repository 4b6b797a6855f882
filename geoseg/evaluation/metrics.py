"""Confusion matrices accumulated block by block, and the segmentation metrics derived from them.

Rows are the reference class, columns the predicted class (both as indices into the class
table). Pixels whose reference is the ignore index (unlabelled) or whose prediction is missing
(nodata) are left out. A class absent from both reference and prediction has no IoU/F1 (NaN) and
does not enter the means; a class predicted but absent from the reference has IoU 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path, atomic_write_text
from geoseg.config import IGNORE
from geoseg.errors import InputError


class ConfusionMatrix:
    """K×K pixel counts (int64), updated from arrays of class indices."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray,
               valid: np.ndarray | None = None) -> ConfusionMatrix:  # fmt: skip
        """Add pixels where the target is labelled, the prediction is a class and ``valid``."""
        pred = np.asarray(pred).ravel().astype(np.int64)
        target = np.asarray(target).ravel().astype(np.int64)
        if pred.shape != target.shape:
            raise InputError(f"prediction {pred.shape} and target {target.shape} differ")
        k = self.num_classes
        keep = (target != self.ignore_index) & (target >= 0) & (target < k)
        keep &= (pred >= 0) & (pred < k)
        if valid is not None:
            keep &= np.asarray(valid).ravel().astype(bool)
        idx = target[keep] * k + pred[keep]
        self.matrix += np.bincount(idx, minlength=k * k).reshape(k, k)
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | Sequence[Sequence[int]]) -> ConfusionMatrix:
        """A confusion matrix holding a copy of ``matrix`` (K×K counts)."""
        m = np.asarray(matrix, dtype=np.int64)
        cm = cls(m.shape[0])
        cm.matrix = m.copy()
        return cm

    @property
    def total(self) -> int:
        """Pixels counted so far."""
        return int(self.matrix.sum())

    def metrics(self, names: Sequence[str] | None = None,
                ignore_classes: Iterable[int] = ()) -> dict[str, Any]:  # fmt: skip
        """See :func:`compute_metrics`."""
        return compute_metrics(self.matrix, names, ignore_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


#: the key of each per-class rate's mean in the metrics
_MEANS = {"iou": "miou", "f1": "mean_f1", "precision": "mean_precision", "recall": "mean_recall"}


def compute_metrics(matrix: np.ndarray, names: Sequence[str] | None = None,
                    ignore_classes: Iterable[int] = ()) -> dict[str, Any]:  # fmt: skip
    """Per-class IoU, F1, precision, recall; mIoU, mean F1, OA and Cohen's kappa.

    Args:
        matrix: K×K counts, rows = reference, columns = prediction.
        names: class names (default ``class_<i>``).
        ignore_classes: class indices left out of the means (mIoU, mean F1/precision/recall),
            e.g. GAMUS's class 0; they stay in the per-class table, OA and kappa.
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = m.shape[0]
    names = list(names) if names is not None else [f"class_{i}" for i in range(k)]
    rates = _class_rates(m)
    n, oa, kappa = _agreement(m)
    ignored = sorted({int(i) for i in ignore_classes})
    bad = [i for i in ignored if not 0 <= i < k]
    if bad:
        raise InputError(f"ignored class index {bad[0]} outside 0..{k - 1}")
    used = np.array([i not in ignored for i in range(k)])
    ref, pred = m.sum(axis=1), m.sum(axis=0)
    per_class = {
        names[i]: {"index": i, **{key: _num(v[i]) for key, v in rates.items()},
                   "reference_pixels": int(ref[i]), "predicted_pixels": int(pred[i]),
                   "in_mean": bool(used[i])}
        for i in range(k)
    }  # fmt: skip
    return {
        **{_MEANS[key]: _num(_mean(v, used)) for key, v in rates.items()},
        "overall_accuracy": _num(oa),
        "kappa": _num(kappa),
        "pixels": int(n),
        "ignored_classes": [names[i] for i in ignored],
        "classes_absent": [names[i] for i in range(k) if ref[i] == 0],
        "per_class": per_class,
        "confusion_matrix": m.astype(np.int64).tolist(),
        "class_names": names,
    }


def _class_rates(m: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, F1, precision and recall per class (NaN where undefined) of a K×K matrix."""
    tp = np.diag(m)
    ref = m.sum(axis=1)
    pred = m.sum(axis=0)
    fp, fn = pred - tp, ref - tp
    return {"iou": _ratio(tp, tp + fp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "precision": _ratio(tp, pred), "recall": _ratio(tp, ref)}  # fmt: skip


def _agreement(m: np.ndarray) -> tuple[float, float, float]:
    """Pixel count, overall accuracy and Cohen's kappa of a K×K matrix (NaN when empty)."""
    tp, ref, pred = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    n = m.sum()
    oa = float(tp.sum() / n) if n else math.nan
    pe = float((ref * pred).sum() / (n * n)) if n else math.nan
    kappa = (oa - pe) / (1 - pe) if n and pe < 1 else (1.0 if n else math.nan)
    return n, oa, kappa


def _mean(values: np.ndarray, used: np.ndarray) -> float:
    """Mean over the used classes where defined (NaN if none is)."""
    sel = values[used]
    sel = sel[~np.isnan(sel)]
    return float(sel.mean()) if sel.size else math.nan


def _num(v: float) -> float | None:
    """JSON-safe float: NaN becomes None (JSON has no NaN)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# --------------------------------------------------------------------------- reports


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _fixed(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def metrics_markdown(metrics: dict[str, Any], title: str = "Evaluation") -> str:
    """A Markdown report: summary, per-class table, confusion matrix."""
    lines = [f"# {title}", ""]
    ignored = metrics.get("ignored_classes") or []
    lines += [
        f"- mIoU: **{_pct(metrics['miou'])} %**"
        + (f" (without {', '.join(ignored)})" if ignored else ""),
        f"- overall accuracy: {_pct(metrics['overall_accuracy'])} %",
        f"- Cohen's kappa: {_fixed(metrics['kappa'])}",
        f"- mean F1: {_pct(metrics['mean_f1'])} %, mean precision: "
        f"{_pct(metrics['mean_precision'])} %, mean recall: {_pct(metrics['mean_recall'])} %",
        f"- labelled pixels evaluated: {metrics['pixels']:,}",
    ]
    if metrics.get("classes_absent"):
        lines.append(f"- classes absent from the reference: {', '.join(metrics['classes_absent'])}")
    lines += ["", "| class | IoU % | F1 % | precision % | recall % | reference px | predicted px |",
              "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, c in metrics["per_class"].items():
        mark = "" if c["in_mean"] else " (not in mean)"
        lines.append(f"| {name}{mark} | {_pct(c['iou'])} | {_pct(c['f1'])} | "
                     f"{_pct(c['precision'])} | {_pct(c['recall'])} | "
                     f"{c['reference_pixels']:,} | {c['predicted_pixels']:,} |")  # fmt: skip
    names = metrics["class_names"]
    lines += ["", "Confusion matrix (rows: reference, columns: prediction, pixels):", "",
              "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]  # fmt: skip
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"| **{name}** | " + " | ".join(f"{v:,}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(metrics: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """PNG of the row-normalised confusion matrix, with pixel counts in the cells."""
    # a bare Figure, not pyplot: no backend switch (Jupyter keeps its inline plots) and
    # nothing left in pyplot's global figure list
    from matplotlib.figure import Figure

    m = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = metrics["class_names"]
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(names)
    size = 2.5 + 0.7 * k
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(m[i, j]):,}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    miou = metrics.get("miou")
    ax.set_title(title or f"mIoU {_pct(miou)} %, OA {_pct(metrics.get('overall_accuracy'))} %")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference row")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path


def write_metrics(metrics: dict[str, Any], out_dir: str | Path, stem: str = "evaluation",
                  title: str = "Evaluation") -> dict[str, Path]:  # fmt: skip
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>_confusion.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "confusion_png": out / f"{stem}_confusion.png"}  # fmt: skip
    atomic_write_text(paths["json"], json.dumps(metrics, indent=2))
    atomic_write_text(paths["markdown"], metrics_markdown(metrics, title))
    plot_confusion(metrics, paths["confusion_png"])
    return paths
