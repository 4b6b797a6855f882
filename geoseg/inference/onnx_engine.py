"""An engine running an exported ONNX model on ONNX Runtime (CPU), same interface as Engine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geoseg._files import file_digest
from geoseg.bundle.card import normalise
from geoseg.bundle.onnx_export import read_onnx_card


class OnnxEngine:
    """Same interface as ``geoseg.inference.engine.Engine``, running an exported model on ONNX Runtime."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        self.card = read_onnx_card(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.digest = file_digest(path)

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    def normalise(self, arrays: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        return normalise(self.card, arrays, valid)

    def probabilities(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Tiles smaller than the exported size are padded (reflect) and cropped back."""
        t = self.card.tile_size
        first = next(iter(batch.values()))
        h, w = first.shape[-2:]
        feed = {}
        for name, x in batch.items():
            if (h, w) != (t, t):
                mode = "reflect" if h > t - h and w > t - w else "edge"
                x = np.pad(x, ((0, 0), (0, 0), (0, t - h), (0, t - w)), mode=mode)
            feed[name] = np.ascontiguousarray(x, np.float32)
        return self.session.run(None, feed)[0][:, :, :h, :w]
