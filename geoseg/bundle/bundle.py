"""Model bundles: a folder with ``card.json`` and ``weights.safetensors``. Never unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geoseg import __version__
from geoseg._files import replace_dir
from geoseg.bundle.card import ModelCard
from geoseg.config import format_validation_error
from geoseg.errors import BundleError, GeosegError
from geoseg.models import SegModel, create

CARD = "card.json"
WEIGHTS = "weights.safetensors"


@dataclass
class Bundle:
    """A loaded bundle: its card and the model (eval mode) built from it."""

    path: Path
    card: ModelCard
    model: SegModel
    digest: str

    @property
    def classes(self):
        return self.card.classes


def build_model(card: ModelCard) -> SegModel:
    """The card's architecture with its arguments (weights not loaded)."""
    return create(card.architecture, card.band_counts, card.num_classes, **card.arguments)


def save_bundle(model: SegModel, card: ModelCard, path: str | Path) -> Path:
    """Write ``model`` and ``card`` as a bundle folder (atomically: temp folder, then rename)."""
    path = Path(path)
    card = card.model_copy(update={"geoseg_version": __version__})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.inference_state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "geoseg": __version__})
    (tmp / CARD).write_text(card.model_dump_json(indent=2))
    return replace_dir(tmp, path)


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise BundleError(
            f"{path}: this is a pickled PyTorch checkpoint; geoseg never unpickles files "
            "(it can run arbitrary code). Give a bundle folder (card.json + weights.safetensors)"
        )
    raise BundleError(
        f"{path}: not a geoseg bundle; give a folder with {CARD} and {WEIGHTS} "
        "(create one with `geoseg model init`)"
    )


def read_card(path: str | Path) -> ModelCard:
    """Read and validate a bundle's card."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: bundle not found; check the --model path")
    if path.is_file():
        _refuse_pickle(path)
    card_file = path / CARD
    if not card_file.is_file() or not (path / WEIGHTS).is_file():
        raise BundleError(f"{path}: bundle needs {CARD} and {WEIGHTS}; re-export the bundle")
    try:
        return ModelCard.model_validate_json(card_file.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise BundleError(f"{card_file}: corrupt card ({first['msg']}); re-export the "
                              "bundle") from None  # fmt: skip
        msg = format_validation_error(exc, f"{card_file}: invalid card", model=ModelCard)
        raise BundleError(msg) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{card_file}: corrupt card ({exc}); re-export the bundle") from None


def bundle_digest(path: str | Path) -> str:
    """SHA-256 over card and weights: identifies a bundle (cache keys, run ids)."""
    h = hashlib.sha256()
    for name in (CARD, WEIGHTS):
        with open(Path(path) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder; the model is in eval mode on ``device``."""
    path = Path(path)
    card = read_card(path)
    try:
        state = load_file(str(path / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path / WEIGHTS}: corrupt weights ({exc}); re-export the bundle") from None
    try:
        model = build_model(card)
    except GeosegError as exc:
        raise BundleError(f"{path / CARD}: {exc}") from None
    missing, unexpected = _load_state(model, state)
    if missing or unexpected:
        raise BundleError(
            f"{path / WEIGHTS}: weights do not match the card's architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
            f"{(missing or unexpected)[0]!r}); re-export the bundle"
        )
    model.to(device).eval()
    return Bundle(path=path, card=card, model=model, digest=bundle_digest(path))


def _load_state(model: SegModel, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = model.inference_state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        return missing + bad_shape, unexpected
    model.load_state_dict(state, strict=False)
    return [], []
