"""Model bundles: a folder with ``card.json`` and ``weights.safetensors``. Never unpickled."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geoseg import __version__
from geoseg._files import replace_dir
from geoseg.bundle.card import ModelCard
from geoseg.bundle.folder import CARD, WEIGHTS, bundle_digest, read_card
from geoseg.errors import BundleError, GeosegError
from geoseg.models import SegModel, create


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
    """The card's architecture with its arguments (weights not loaded: no pretrained encoder
    weights are read or downloaded, the bundle's own weights replace them)."""
    return create(card.architecture, card.band_counts, card.num_classes, load_weights=False,
                  **card.arguments)  # fmt: skip


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


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder; the model is in eval mode on ``device``."""
    path = Path(path)
    card = read_card(path)
    try:
        state = load_file(str(path / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path / WEIGHTS}: corrupt weights ({exc}); re-export the bundle") from None
    # the card's shapes checked against the weights first, on torch's "meta" device (no
    # memory): a card asking for a huge model (a damaged or hostile width) fails here
    # instead of allocating it; the real model is then the size of the weights file
    try:
        with torch.device("meta"):
            skeleton = build_model(card)
    except GeosegError as exc:
        raise BundleError(f"{path / CARD}: {exc}") from None
    except Exception:  # an architecture that cannot be built on "meta"
        skeleton = None
    if skeleton is not None:
        missing, unexpected = _mismatch(skeleton.inference_state_dict(), state)
        _check_match(path, missing, unexpected)
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


def _mismatch(own: dict[str, torch.Tensor],
              state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:  # fmt: skip
    """Keys missing from ``state`` (or of another shape), and keys ``own`` does not have."""
    missing = [k for k in own if k not in state or own[k].shape != state[k].shape]
    return missing, [k for k in state if k not in own]


def _check_match(path: Path, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        raise BundleError(
            f"{path / WEIGHTS}: weights do not match the card's architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. "
            f"{(missing or unexpected)[0]!r}); re-export the bundle"
        )


def _load_state(model: SegModel, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = model.inference_state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        return missing + bad_shape, unexpected
    model.load_state_dict(state, strict=False)
    return [], []
