"""k-fold cross-validation by label features, and the comparison of a recipe with the
per-pixel baselines on the same split (``geoseg train PIPELINE --folds 5 --compare``).

Each fold is an ordinary run (``<out>/fold-<i>``, or ``<out>/<model>/fold-<i>`` when comparing)
whose ``split`` holds out fold ``i`` of the features (stratified by class, grouped by
``group_field``). A fold's score is that of its **last** model on its held-out features: the
best-on-validation model was chosen on those same features, so its score is optimistic (it is
reported beside, never as the result). Means and standard deviations are over folds.
``cv_report.json``/``.md`` (one model) or ``compare.json``/``.md`` (several) hold the table:
per-class IoU, mIoU, OA, kappa and training time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_write_text
from geoseg.errors import ConfigError
from geoseg.training.config import TrainConfig
from geoseg.training.sparse import is_pixel

#: the per-pixel baselines a comparison trains besides the step's own model
BASELINES = ("random_forest", "lightgbm")
METRICS = ("miou", "overall_accuracy", "kappa")


def fold_config(cfg: TrainConfig, folds: int, fold: int, source: str) -> TrainConfig:
    """``cfg`` with fold ``fold`` of ``folds`` held out (the split must be by features)."""
    if cfg.split.by != "features":
        raise ConfigError(f"{source}: --folds needs split.by: features (whole label features held "
                          f"out; it is {cfg.split.by!r}); set split: {{by: features}}")  # fmt: skip
    split = cfg.split.model_copy(update={"folds": folds, "fold": fold})
    return cfg.model_copy(update={"split": split})


def baseline_config(cfg: TrainConfig, estimator: str, window: int | None) -> TrainConfig:
    """The per-pixel ``estimator`` on the data, labels and split of ``cfg`` (and its window, so
    that block and stripe splits fall on the same cells)."""
    model = cfg.model.model_copy(update={"architecture": "pixel", "arguments": {
        "estimator": estimator, "seed": cfg.seed}, "init": None, "tile": None})  # fmt: skip
    sampling = cfg.sampling.model_copy(update={"window": window}) if window else cfg.sampling
    return cfg.model_copy(update={"model": model, "sampling": sampling, "recipe": None})


def label_of(cfg: TrainConfig) -> str:
    """The model's name in tables: the estimator, or the architecture (and recipe)."""
    if is_pixel(cfg):
        return str(cfg.model.arguments.get("estimator", "random_forest"))
    return cfg.model.architecture + (f" ({cfg.recipe})" if cfg.recipe else "")


def run_scores(report: Path) -> dict[str, Any]:
    """A finished run's scores from its report: the last model's (the final validation) and
    the selected model's, per-class IoU, time."""
    rep = json.loads(report.read_text())
    hist_path = Path(rep["out"]) / "history.json"
    last = json.loads(hist_path.read_text())[-1] if hist_path.is_file() else {}
    best = (rep.get("best") or {}).get("metrics") or {}
    names = [c["name"] for c in rep["classes"]]
    return {
        "miou": last.get("val_miou"), "overall_accuracy": last.get("val_overall_accuracy"),
        "kappa": last.get("val_kappa"),
        "per_class_iou": {n: last.get(f"val_iou_{n}") for n in names},
        "best_selected_miou": best.get("miou"), "seconds": rep.get("seconds"),
        "val_pixels": best.get("pixels"), "warnings": rep["split"].get("warnings", []),
        "report": str(report),
    }  # fmt: skip


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of every score."""
    out: dict[str, Any] = {k: dict(zip(("mean", "std"), _mean_std([r[k] for r in runs]), strict=True))
                           for k in (*METRICS, "best_selected_miou", "seconds")}  # fmt: skip
    names = list(runs[0]["per_class_iou"]) if runs else []
    out["per_class_iou"] = {n: dict(zip(("mean", "std"), _mean_std(
        [r["per_class_iou"].get(n) for r in runs]), strict=True)) for n in names}  # fmt: skip
    out["folds"] = len(runs)
    out["val_pixels"] = [r["val_pixels"] for r in runs]
    return out


Trainer = Callable[[TrainConfig, Path], Any]


def run_model(cfg: TrainConfig, out: Path, folds: int | None, train: Trainer,
              source: str) -> tuple[list[dict[str, Any]], list[Any]]:  # fmt: skip
    """Train ``cfg`` once (no folds) or once per fold; the scores and results of the runs."""
    if not folds:
        res = train(cfg, out)
        return [run_scores(res.report)], [res]
    results = [train(fold_config(cfg, folds, i, source), out / f"fold-{i}") for i in range(folds)]
    return [run_scores(r.report) for r in results], results


def study(cfg: TrainConfig, out: Path, *, folds: int | None, compare: bool, train: Trainer,
          source: str) -> dict[str, Any]:  # fmt: skip
    """Cross-validate ``cfg`` (``folds``) and/or compare it with the per-pixel baselines on the
    same split; writes ``cv_report`` or ``compare`` (.json, .md) in ``out``."""
    models: dict[str, dict[str, Any]] = {}
    first: Any = None
    scores, results = run_model(cfg, out / "model" if compare else out, folds, train, source)
    first = results[0]
    models[label_of(cfg)] = {"runs": scores, "summary": summarise(scores)}
    if compare:
        window = json.loads(Path(first.report).read_text()).get("window")
        for est in BASELINES:
            if is_pixel(cfg) and cfg.model.arguments.get("estimator", "random_forest") == est:
                continue
            bcfg = baseline_config(cfg, est, window)
            s, _ = run_model(bcfg, out / est, folds, train, source)
            models[label_of(bcfg)] = {"runs": s, "summary": summarise(s)}
    names = list(scores[0]["per_class_iou"])
    rep = {"folds": folds, "split": cfg.split.model_dump(mode="json"), "classes": names,
           "models": models, "first_run": {"model": str(first.best), "report": str(first.report)},
           "note": "scores of each run's last model on its held-out features; "
                   "best_selected_miou was chosen on those same features (optimistic)"}  # fmt: skip
    stem = "compare" if compare else "cv_report"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.json", json.dumps(rep, indent=2, default=str))
    atomic_write_text(out / f"{stem}.md", table_markdown(rep))
    rep["paths"] = {"json": str(out / f"{stem}.json"), "md": str(out / f"{stem}.md")}
    return rep


def _pm(s: dict[str, float | None], pct: bool = True) -> str:
    if s.get("mean") is None:
        return "–"
    f = 100.0 if pct else 1.0
    std = s.get("std")
    return f"{f * s['mean']:.1f}" + (f" ± {f * std:.1f}" if std else "")


def table_markdown(rep: dict[str, Any]) -> str:
    """The comparison (or cross-validation) as a Markdown table."""
    folds = rep["folds"]
    head = (f"{folds}-fold cross-validation by label features" if folds else
            "one split") + f" ({rep['split']['by']})"  # fmt: skip
    names = rep["classes"]
    lines = [f"# Models on the same split: {head}", "",
             "| model | mIoU | OA | kappa | " + " | ".join(names) + " | train s | selected mIoU |",
             "|---|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|"]  # fmt: skip
    ranked = sorted(rep["models"].items(),
                    key=lambda kv: -(kv[1]["summary"]["miou"]["mean"] or -1.0))  # fmt: skip
    for name, m in ranked:
        s = m["summary"]
        cls = " | ".join(_pm(s["per_class_iou"][n]) for n in names)
        lines.append(f"| {name} | {_pm(s['miou'])} | {_pm(s['overall_accuracy'])} | "
                     f"{_pm(s['kappa'], pct=False) if s['kappa']['mean'] is None else _kappa(s)} | "
                     f"{cls} | {_pm(s['seconds'], pct=False)} | {_pm(s['best_selected_miou'])} |")
    warn = sorted({w for m in rep["models"].values() for r in m["runs"] for w in r["warnings"]})
    lines += ["", "IoU, mIoU and OA in %, mean ± std over folds; scores of each run's **last** "
              "model on its held-out features (the selected model was chosen on them: its "
              "mIoU, last column, is optimistic).", ""]  # fmt: skip
    lines += [f"- warning: {w}" for w in warn]
    return "\n".join(lines) + "\n"


def _kappa(s: dict[str, Any]) -> str:
    k = s["kappa"]
    return f"{k['mean']:.3f}" + (f" ± {k['std']:.3f}" if k.get("std") else "")
