"""A bundle folder on disk, read without torch: its card (strict JSON) and its digest.

Kept apart from :mod:`geoseg.bundle.bundle` (which builds models) so that reading a card —
``geoseg info``, input checks before a run — does not import torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from geoseg.bundle.card import ModelCard
from geoseg.config import format_validation_error
from geoseg.errors import BundleError
from geoseg.limits import check_file_size

CARD = "card.json"
WEIGHTS = "weights.safetensors"


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
        raise BundleError(f"{path}: bundle not found; check the model= path")
    if path.is_file():
        _refuse_pickle(path)
    card_file = path / CARD
    check_file_size(card_file, "bundle card", BundleError)
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
