"""A model on disk in either format: a bundle folder (torch) or an exported ``.onnx`` file."""

from __future__ import annotations

from pathlib import Path

from geoseg._files import file_digest
from geoseg.bundle.card import ModelCard
from geoseg.bundle.folder import bundle_digest, read_card


def is_onnx(model: str | Path) -> bool:
    """True for an exported ``.onnx`` file (else a bundle folder)."""
    return str(model).lower().endswith(".onnx")


def read_model_card(model: str | Path) -> ModelCard:
    """The card of a bundle folder or of an exported ONNX model."""
    if is_onnx(model):
        from geoseg.bundle.onnx_export import read_onnx_card

        return read_onnx_card(model)
    return read_card(model)


def model_digest(model: str | Path) -> str:
    """SHA-256 identifying the model's weights and card (bundle) or file (ONNX)."""
    if is_onnx(model):
        return file_digest(model)
    return bundle_digest(model)
