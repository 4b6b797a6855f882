"""The model of a run and its bundle card."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from geoseg import __version__
from geoseg.bundle.bundle import load_bundle
from geoseg.bundle.card import ModalityCard, ModelCard, PretrainedWeights
from geoseg.errors import ConfigError
from geoseg.models import SegModel, create
from geoseg.models.torchgeo_encoders import apply_normalisation
from geoseg.training.config import TrainConfig
from geoseg.training.prepare import Prepared

log = logging.getLogger("geoseg.training")


def ignore_indices(cfg: TrainConfig, prep: Prepared, source: str) -> list[int]:
    """Indices of ``ignore_classes`` (ids or names) in the class table."""
    out = []
    for item in cfg.ignore_classes:
        idx = next((i for i, c in enumerate(prep.classes)
                    if c.id == item or c.name == str(item)), None)  # fmt: skip
        if idx is None:
            raise ConfigError(f"{source}: ignore_classes names {item!r}, which is not in the class "
                              "table; use a class id or name")  # fmt: skip
        out.append(idx)
    return out


def score(metrics: dict[str, Any], best_metric: str, source: str) -> float:
    """The value of ``best_metric`` in validation ``metrics`` (higher is better)."""
    if best_metric.startswith("iou:"):
        name = best_metric[4:]
        if name not in metrics["per_class"]:
            raise ConfigError(f"{source}: best_metric {best_metric!r}: no class {name!r}; classes "
                              f"are {list(metrics['per_class'])}")  # fmt: skip
        v = metrics["per_class"][name]["iou"]
    else:
        v = metrics[best_metric]
    return -math.inf if v is None else float(v)


def build_model(cfg: TrainConfig, prep: Prepared, resolve: Callable[[str], Path]) -> SegModel:
    """The configured model, seeded by ``cfg.seed``; ``model.init`` tensors of matching shape
    are loaded from that bundle."""
    torch.manual_seed(cfg.seed)
    model = create(cfg.model.architecture, prep.modalities, len(prep.classes),
                   band_roles=prep.roles, **cfg.model.arguments)  # fmt: skip
    if model.pretrained:
        adopt_pretrained_normalisation(cfg, prep, model.pretrained)
    if cfg.model.init:
        init = load_bundle(resolve(cfg.model.init)).model
        own = model.inference_state_dict()
        state = {k: v for k, v in init.inference_state_dict().items()
                 if k in own and own[k].shape == v.shape}  # fmt: skip
        model.load_state_dict(state, strict=False)
        log.info("initialised %d/%d tensors from %s", len(state), len(own), cfg.model.init)
    if hasattr(model, "enable_training_parts"):
        model.enable_training_parts()  # before DDP wraps it: momentum copies, queues
    return model


def adopt_pretrained_normalisation(cfg: TrainConfig, prep: Prepared,
                                   records: list[dict[str, Any]]) -> None:  # fmt: skip
    """Bands that pretrained (torchgeo) weights know are normalised as in their pretraining,
    in ``prep.norm`` (hence in training and in the bundle cards); a modality set explicitly in
    ``normalise:`` keeps its setting."""
    for m in prep.modalities:
        norm = prep.norm[m]
        mean, std, used = apply_normalisation(records, m, norm["mean"], norm["std"])
        if used is None:
            continue
        if m in cfg.normalise:
            log.warning("normalise.%s is set, so modality %s is not normalised as %s was "
                        "pretrained", m, m, used)  # fmt: skip
            continue
        known = {i for r in records for i, pair in enumerate(r["normalisation"].get(m, []))
                 if pair is not None}  # fmt: skip
        how = f"pretrained {used}" if len(known) == len(mean) else \
            f"pretrained {used}, else {norm['how']}"
        prep.norm[m] = {"mean": mean, "std": std, "how": how}


def modality_cards(prep: Prepared) -> dict[str, ModalityCard]:
    """The cards of the prepared modalities: band roles, normalisation, resampling."""
    return {n: ModalityCard(bands=prep.roles[n], mean=prep.norm[n]["mean"],
                            std=prep.norm[n]["std"], resampling=prep.resampling[n])
            for n in prep.modalities}  # fmt: skip


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The validation figures a card records: mIoU, OA, kappa, mean F1, IoU per class."""
    summary = {k: metrics.get(k) for k in ("miou", "overall_accuracy", "kappa", "mean_f1")}
    summary["per_class_iou"] = {n: c["iou"] for n, c in metrics.get("per_class", {}).items()}
    return summary


def make_card(cfg: TrainConfig, prep: Prepared, model: SegModel, metrics: dict[str, Any],
              step: int, source: str, split: dict[str, Any]) -> ModelCard:  # fmt: skip
    """The model card of a bundle saved at ``step`` with validation ``metrics``."""
    mods, summary = modality_cards(prep), metrics_summary(metrics)
    return ModelCard(
        architecture=cfg.model.architecture, arguments=model.args.model_dump(mode="json"),
        modalities=mods, derived=dict(cfg.indices),
        classes=prep.classes, tile_size=cfg.model.tile or cfg.sampling.window,
        halo=model.halo,
        gsd=prep.gsd, trained=True,
        pretrained=[PretrainedWeights(**r) for r in model.pretrained],
        metrics={"validation": summary, "step": step, "split": split["statement"],
                 "pixels": metrics.get("pixels")},
        training={"pipeline": shown(source), "recipe": cfg.recipe, "steps": step, "batch": cfg.batch,
                  "window": cfg.sampling.window, "sampling": cfg.sampling.mode,
                  "optimizer": cfg.optimizer.model_dump(mode="json"),
                  "schedule": cfg.schedule.model_dump(mode="json"), "seed": cfg.seed,
                  "scenes": prep.source or [s.id for s in prep.scenes],
                  "catalog": shown(prep.catalog) if prep.catalog else None,
                  "normalisation": {k: v["how"] for k, v in prep.norm.items()},
                  "date": datetime.now(UTC).isoformat(timespec="seconds")},
        description=cfg.model.description or f"{cfg.model.architecture} trained by geoseg "
        f"{__version__} ({step} steps)",
    )  # fmt: skip


def shown(path: str) -> str:
    """A path for a card that may be shared: relative to the working directory if inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
