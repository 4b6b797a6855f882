"""Engine: a loaded model on a device, turning normalised tiles into class probabilities."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import torch

from geoseg.bundle import Bundle
from geoseg.errors import InputError


class StageTimer:
    """Thread-safe accumulated seconds per stage (summed over workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def clock(self, stage: str) -> _Clock:
        return _Clock(self, stage)


class _Clock:
    def __init__(self, timer: StageTimer, stage: str):
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.stage, time.perf_counter() - self.t0)


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise InputError(f"--device {device!r}: use cpu or cuda")
    return torch.device(device)


class Engine:
    """Normalisation + batched forward + softmax for one bundle on one device."""

    def __init__(self, bundle: Bundle, device: str = "cpu"):
        self.bundle = bundle
        self.card = bundle.card
        self.device = resolve_device(device)
        self.model = bundle.model.to(self.device).eval()
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._stats = {
            name: (
                np.asarray(m.mean, np.float32)[:, None, None],
                np.asarray(m.std, np.float32)[:, None, None],
            )
            for name, m in self.card.modalities.items()
        }

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    def normalise(self, arrays: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        """Per-band standardisation with the bundle's statistics; nodata pixels become 0."""
        out = {}
        for name, (mean, std) in self._stats.items():
            x = (arrays[name] - mean) / std
            x[:, ~valid] = 0.0
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            out[name] = x
        return out

    @torch.inference_mode()
    def probabilities(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """(B, C, h, w) normalised tiles per modality -> (B, K, h, w) float32 probabilities."""
        if self.cuda:
            x = {
                k: torch.from_numpy(v).pin_memory().to(self.device, non_blocking=True)
                for k, v in batch.items()
            }
            with torch.autocast("cuda", dtype=torch.float16):
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
        else:
            x = {k: torch.from_numpy(v) for k, v in batch.items()}
            probs = torch.softmax(self.model(x).float(), dim=1)
        return probs.cpu().numpy()
