"""The models a server offers: the bundle folders and exported ``.onnx`` files of ``--models``,
by name (jobs name a model; a path never comes from a request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg.bundle.card import ModelCard
from geoseg.errors import InputError


def model_paths(models: Path) -> dict[str, Path]:
    """``{name: path}``: subfolders holding a ``card.json``, and ``.onnx`` files."""
    out: dict[str, Path] = {}
    if not models.is_dir():
        return out
    for p in sorted(models.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and (p / "card.json").is_file():
            out[p.name] = p
        elif p.is_file() and p.suffix.lower() == ".onnx":
            out.setdefault(p.stem, p)
    return out


def read_card(path: Path) -> ModelCard:
    """The card of a bundle folder (read without loading torch) or of an ONNX file."""
    if path.is_dir():
        return ModelCard.model_validate_json((path / "card.json").read_text())
    from geoseg.bundle.formats import read_model_card

    return read_model_card(path)


def raster_modalities(card: ModelCard) -> list[str]:
    """The card's modalities read from rasters (the first is the reference)."""
    return list(getattr(card, "raster_modalities", None) or card.modalities)


def describe(name: str, card: ModelCard) -> dict[str, Any]:
    """What ``GET /models`` shows of a model."""
    return {
        "name": name,
        "architecture": card.architecture,
        "description": card.description,
        "trained": card.trained,
        "classes": [{"id": c.id, "name": c.name, "color": c.color} for c in card.classes],
        "modalities": {n: {"bands": list(m.bands), "resampling": m.resampling}
                       for n, m in card.modalities.items()},
        "reference": card.reference,
        "inputs": raster_modalities(card),
        "tile": card.tile_size,
        "halo": card.halo,
        "gsd": card.gsd,
        "metrics": {k: v for k, v in card.metrics.get("validation", {}).items()
                    if isinstance(v, int | float)},
    }  # fmt: skip


def list_models(models: Path) -> list[dict[str, Any]]:
    """Every readable model of the folder (an unreadable card is listed with its error)."""
    out = []
    for name, path in model_paths(models).items():
        try:
            out.append(describe(name, read_card(path)))
        except Exception as exc:
            out.append({"name": name, "error": str(exc).splitlines()[0] if str(exc) else
                        type(exc).__name__})  # fmt: skip
    return out


def find_model(models: Path, name: str) -> tuple[Path, ModelCard]:
    """The model called ``name``; an unknown name is a one-line error listing the others."""
    paths = model_paths(models)
    if name not in paths:
        raise InputError(f"model {name!r}: no such model; choose one of {sorted(paths)} "
                         "(GET /api/v1/models)")  # fmt: skip
    try:
        return paths[name], read_card(paths[name])
    except Exception as exc:
        raise InputError(f"model {name!r}: unreadable card ({str(exc).splitlines()[0]}); "
                         "fix or remove the bundle") from None  # fmt: skip
