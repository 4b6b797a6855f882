"""ONNX export of a bundle: self-describing (the card travels in the metadata), loads in QGIS Deepness."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from geoseg._files import atomic_path, writable_folder
from geoseg.bundle.card import ModelCard
from geoseg.errors import BundleError

CARD_KEY = "geoseg_card"


class _Exported(nn.Module):
    """Positional inputs in modality order -> softmax probabilities (what Deepness expects)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.softmax(self.model(dict(zip(self.names, xs, strict=True))), dim=1)


def deepness_metadata(card: ModelCard) -> dict[str, str]:
    """Metadata keys read by the QGIS Deepness plugin (values JSON-encoded), plus the card.

    Deepness feeds RGB scaled to 0..1, so its standardisation is the card's divided by 255
    (exact for 8-bit imagery, which is what Deepness reads). The overlap, in percent of the
    tile, is the one ``geoseg predict`` uses (``ModelCard.default_overlap``). The tile size
    goes under both ``tiles_size`` (Deepness's documentation) and ``tile_size`` (what its
    code reads: ``ModelBase.get_metadata_tile_size``).
    """
    ref = card.modalities[card.reference]
    tile = card.tile_size
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(c.id): c.name for c in card.classes}),
        "tile_size": json.dumps(tile),
        "tiles_size": json.dumps(tile),
        "tiles_overlap": json.dumps(round(100 * card.default_overlap(tile) / tile)),
        "standardization_mean": json.dumps([m / 255 for m in ref.mean]),
        "standardization_std": json.dumps([s / 255 for s in ref.std]),
        "seg_thresh": json.dumps(0.0),
        CARD_KEY: card.model_dump_json(),
    }
    if card.gsd:
        meta["resolution"] = json.dumps(card.gsd * 100)  # Deepness wants cm/px
    return meta


def export_onnx(bundle: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Write ``bundle`` as ONNX: one input per modality (B, C, tile, tile), dynamic batch."""
    import onnx

    from geoseg.bundle.bundle import load_bundle

    b = load_bundle(bundle)
    card = b.card
    names = list(card.modalities)
    t = card.tile_size
    example = tuple(torch.randn(1, len(card.modalities[n].bands), t, t) for n in names)
    out = Path(out)
    writable_folder(out)
    with atomic_path(out) as tmp:
        torch.onnx.export(
            _Exported(b.model.eval(), names), example, str(tmp), input_names=names,
            output_names=["probabilities"], opset_version=opset, dynamo=False,
            dynamic_axes={**{n: {0: "batch"} for n in names}, "probabilities": {0: "batch"}},
        )  # fmt: skip
        model = onnx.load(str(tmp))
        for key, value in deepness_metadata(card).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    return out


def read_onnx_card(path: str | Path) -> ModelCard:
    """The geoseg card stored in an exported model's metadata."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BundleError(f"{path}: not a readable ONNX model ({exc})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if CARD_KEY not in meta:
        raise BundleError(f"{path}: ONNX model has no geoseg card; export it with "
                          "`geoseg export BUNDLE --format onnx`")  # fmt: skip
    return ModelCard.model_validate_json(meta[CARD_KEY])
