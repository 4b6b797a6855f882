"""Engine: a loaded model on a device, turning normalised tiles into class probabilities."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoseg.bundle.bundle import Bundle, load_bundle
from geoseg.bundle.card import normalise
from geoseg.bundle.formats import is_onnx
from geoseg.errors import InputError

log = logging.getLogger(__name__)


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
    """The torch device of ``device`` (cpu, cuda, cuda:N), refused when not usable here."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device=cuda: no CUDA GPU is visible here; use device=cpu")
    if device not in {"cpu", "cuda"} and not device.startswith("cuda:"):
        raise InputError(f"device={device}: use cpu or cuda")
    return torch.device(device)


def open_engine(model: str | Path, device: str = "cpu", threads: int = 1,
                amp: bool = True):  # fmt: skip
    """An engine for a bundle folder (torch) or an ``.onnx`` file (ONNX Runtime, CPU)."""
    if is_onnx(model):
        from geoseg.inference.onnx_engine import OnnxEngine

        if device != "cpu":
            raise InputError("ONNX models run on the CPU here (onnxruntime); use device=cpu")
        return OnnxEngine(model, threads)
    return Engine(load_bundle(model, device), device, amp=amp)


def fuse_for_inference(model: nn.Module, sample: Mapping[str, torch.Tensor]) -> nn.Module:
    """Fold BatchNorm into the preceding convolutions (inference only), in a copy of ``model``.

    torch.fx traces each submodule that can be traced to find conv -> BN pairs; the conv's
    weights absorb the BN and the BN becomes Identity, in place, so module classes and their
    attributes stay as they were. The copy is kept only if it reproduces the original outputs
    on ``sample``; otherwise the original model is returned.
    """
    fused = copy.deepcopy(model).eval()
    pairs = 0
    try:
        pairs = _fold(fused)
        with torch.inference_mode():
            ref, out = model(sample), fused(sample)
        if pairs and ref.shape == out.shape and torch.allclose(ref, out, rtol=1e-3, atol=1e-3):
            return fused
    except Exception as exc:
        log.debug("BatchNorm folding skipped: %s", exc)
    if pairs:
        log.info("BatchNorm folding changed the outputs; running the model unfused")
    return model


def _fold(root: nn.Module) -> int:
    """Fold conv -> BN pairs in every traceable submodule of ``root``; returns the count."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    count = 0
    for _name, child in list(root.named_children()):
        if not any(isinstance(m, nn.BatchNorm2d) for m in child.modules()):
            continue
        try:
            graph = torch.fx.symbolic_trace(child).graph
        except Exception:
            count += _fold(child)
            continue
        modules = dict(child.named_modules())
        for node in graph.nodes:
            prev = node.args[0] if node.args else None
            if (node.op == "call_module" and isinstance(modules.get(node.target), nn.BatchNorm2d)
                    and isinstance(prev, torch.fx.Node) and prev.op == "call_module"
                    and isinstance(modules.get(prev.target), nn.Conv2d) and len(prev.users) == 1):
                conv, bn = modules[prev.target], modules[node.target]
                folded = fuse_conv_bn_eval(conv, bn)
                conv.weight, conv.bias = folded.weight, folded.bias
                parent, _, attr = node.target.rpartition(".")
                setattr(child.get_submodule(parent) if parent else child, attr, nn.Identity())
                count += 1
    return count


class Engine:
    """Normalisation + batched forward + softmax for one bundle on one device."""

    def __init__(self, bundle: Bundle, device: str = "cpu", amp: bool = True):
        self.bundle = bundle
        self.card = bundle.card
        self.device = resolve_device(device)
        model = bundle.model.to(self.device).eval()
        sample = {name: torch.randn(1, len(m.bands), 64, 64, device=self.device)
                  for name, m in self.card.modalities.items()}  # fmt: skip
        self.model = fuse_for_inference(model, sample)
        self.cuda = self.device.type == "cuda"
        # bf16 where supported (no overflow), else fp16
        self.amp_dtype = (torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported()
                          else torch.float16) if amp else None  # fmt: skip
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    @property
    def digest(self) -> str:
        return self.bundle.digest

    def normalise(self, arrays: Mapping[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        return normalise(self.card, arrays, valid)

    @torch.inference_mode()
    def probabilities(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """(B, C, h, w) normalised tiles per modality -> (B, K, h, w) float32 probabilities."""
        if self.cuda:
            x = {
                k: torch.from_numpy(v).pin_memory().to(self.device, non_blocking=True)
                for k, v in batch.items()
            }
            if self.amp_dtype is not None:
                with torch.autocast("cuda", dtype=self.amp_dtype):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
        else:
            x = {k: torch.from_numpy(v) for k, v in batch.items()}
            probs = torch.softmax(self.model(x).float(), dim=1)
        return probs.cpu().numpy()
