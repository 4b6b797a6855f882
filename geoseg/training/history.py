"""A training run's history: the running sums of its training steps since the last validation,
and the history row and log line they become at each validation."""

from __future__ import annotations

import math
import time
from typing import Any


def new_running() -> dict[str, Any]:
    """Empty sums of training loss, correct and labelled pixels, steps and samples; ``t``: now."""
    return {"loss": 0.0, "n": 0, "correct": 0.0, "labelled": 0.0, "samples": 0,
            "t": time.perf_counter()}  # fmt: skip


def history_row(run: dict[str, Any], metrics: dict[str, Any], val_loss: float, *, step: int,
                samples: int, lr: float, elapsed: float) -> dict[str, Any]:  # fmt: skip
    """One row of history.csv: the training means of ``run``, the validation ``metrics`` and
    loss, and the samples per second since the sums began."""
    wall = time.perf_counter() - run["t"]
    return {
        "step": step, "samples": samples, "lr": lr,
        "train_loss": run["loss"] / run["n"] if run["n"] else None,
        "train_pixel_accuracy": run["correct"] / run["labelled"] if run["labelled"] else None,
        "val_loss": None if math.isnan(val_loss) else val_loss,
        "val_miou": metrics["miou"], "val_overall_accuracy": metrics["overall_accuracy"],
        "val_kappa": metrics["kappa"], "val_mean_f1": metrics["mean_f1"],
        **{f"val_iou_{n}": c["iou"] for n, c in metrics["per_class"].items()},
        "samples_per_s": run["samples"] / wall if wall > 0 else None,
        "elapsed_s": round(elapsed, 2),
    }  # fmt: skip


def summary_line(step: int, metrics: dict[str, Any], train_loss: float | None) -> str:
    """The log line of a validation: mIoU, overall accuracy, training loss."""
    return (f"step {step}: val mIoU {_fmt(metrics['miou'])}, OA "
            f"{_fmt(metrics['overall_accuracy'])}, train loss {_fmt(train_loss)}")


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"
