"""Untrained bundles: the starting point for training and for predictor benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geoseg.bundle.bundle import save_bundle
from geoseg.bundle.card import ModalityCard, ModelCard, PretrainedWeights
from geoseg.models import create
from geoseg.models.torchgeo_encoders import apply_normalisation
from geoseg.scene.classes import default_classes
from geoseg.scene.scene import Scene
from geoseg.scene.stats import band_stats

#: fixed scaling of heights (m) and elevations when no statistics are given: keeps values O(1)
ELEVATION_SCALE = {"height": (0.0, 10.0), "dem": (0.0, 100.0)}


def init_bundle(
    arch: str,
    modalities: Mapping[str, int],
    num_classes: int,
    arguments: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    tile: int = 512,
    stats_from: str | Path | Mapping[str, str | Path] | None = None,
    stats_bands: Sequence[int | str] | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    output: str | Path,
) -> Path:
    """Build ``arch`` with random weights (``torch.manual_seed(seed)`` right before) and save it.

    ``roles`` names each band per modality (default ``b1``, ``b2``... / ``dem_1``...);
    pretrained torchgeo weights in ``arguments`` (``encoder_weights: torchgeo:...``) are
    matched to the bands by these roles, and their normalisation replaces the statistics of
    the bands they know.
    """
    arguments = dict(arguments or {})
    stats: dict[str, tuple[list[float], list[float]]] = {}
    if stats_from is not None:
        sources = {"image": stats_from} if isinstance(stats_from, str | Path) else stats_from
        bands = {"image": stats_bands} if stats_bands else None
        stats = band_stats(Scene.open(dict(sources), bands=bands))
    torch.manual_seed(seed)
    names = {m: list((roles or {}).get(m) or _default_roles(m, n)) for m, n in modalities.items()}
    model = create(arch, dict(modalities), num_classes, band_roles=names, **arguments)
    cards = _modality_cards(modalities, stats, names, model.pretrained)
    card = ModelCard(
        architecture=arch,
        arguments=model.args.model_dump(),
        modalities=cards,
        classes=default_classes(num_classes),
        tile_size=tile,
        halo=model.halo,
        trained=False,
        pretrained=[PretrainedWeights(**r) for r in model.pretrained],
        description=f"untrained {arch} (seed {seed})",
    )
    return save_bundle(model, card, output)


def _default_roles(name: str, n: int) -> list[str]:
    return [f"{name}_{i + 1}" for i in range(n)] if name != "image" else [
        f"b{i + 1}" for i in range(n)]  # fmt: skip


def _modality_cards(
    modalities: Mapping[str, int], stats: Mapping[str, tuple[list[float], list[float]]],
    roles: Mapping[str, Sequence[str]] | None = None, pretrained: Sequence[Mapping] = (),
) -> dict[str, ModalityCard]:
    """Band names and normalisation of each modality: the pretrained weights' normalisation
    for the bands they know, else measured statistics, else fixed scales."""
    cards = {}
    for name, n in modalities.items():
        if name in stats and len(stats[name][0]) == n:
            mean, std = stats[name]
        else:
            m, s = ELEVATION_SCALE.get(name, (0.0, 1.0))
            mean, std = [m] * n, [s] * n
        mean, std, _ = apply_normalisation(pretrained, name, mean, std)
        names = list((roles or {}).get(name) or _default_roles(name, n))
        cards[name] = ModalityCard(bands=names, mean=mean, std=std,
                                   resampling="bilinear")  # fmt: skip
    return cards
