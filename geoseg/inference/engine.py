"""Engine: a loaded model on a device, turning normalised tiles into class probabilities."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoseg.bundle.bundle import Bundle, load_bundle
from geoseg.bundle.card import normalise
from geoseg.bundle.formats import is_onnx
from geoseg.errors import InputError
from geoseg.inference.gpu import CudaPath
from geoseg.runtime import auto_batch

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
                amp: bool = True, compile: bool = False):  # fmt: skip
    """An engine for a bundle folder (torch) or an ``.onnx`` file (ONNX Runtime, CPU)."""
    if is_onnx(model):
        from geoseg.inference.onnx_engine import OnnxEngine

        if device != "cpu":
            raise InputError("ONNX models run on the CPU here (onnxruntime); use device=cpu")
        if compile:
            raise InputError("compile=True applies to torch bundles, not to ONNX models")
        return OnnxEngine(model, threads)
    return Engine(load_bundle(model, device), device, amp=amp, compile=compile)


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
                    and isinstance(modules.get(prev.target), nn.Conv2d)
                    and len(prev.users) == 1):  # fmt: skip
                conv, bn = modules[prev.target], modules[node.target]
                folded = fuse_conv_bn_eval(conv, bn)
                conv.weight, conv.bias = folded.weight, folded.bias
                parent, _, attr = node.target.rpartition(".")
                setattr(child.get_submodule(parent) if parent else child, attr, nn.Identity())
                count += 1
    return count


class CompiledModel:
    """``torch.compile`` of a model that falls back to the model itself, with one warning,
    when compiling fails (torch compiles lazily: on the first call of each input shape).

    The first call of a shape runs under a lock (one compilation at a time, whatever the
    number of worker threads); later calls of that shape run freely.
    """

    def __init__(self, model: nn.Module):
        self.eager = model
        self.compiled: Callable | None = None
        self._lock, self._warn_lock = threading.Lock(), threading.Lock()
        self._shapes: set[tuple] = set()
        self._failed = False
        log.info("torch.compile: the first batch of each tile shape compiles the model (minutes)")
        try:
            self.compiled = torch.compile(model)
        except Exception as exc:
            self._give_up(exc)

    def __call__(self, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        compiled = self.compiled
        if compiled is None:
            return self.eager(x)
        shape = tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in x.items())
        if shape in self._shapes:
            return self._run(compiled, x)
        with self._lock:
            out = self._run(compiled, x)
            self._shapes.add(shape)
        return out

    def _run(self, compiled: Callable, x: Mapping[str, torch.Tensor]) -> torch.Tensor:
        try:
            return compiled(x)
        except torch.OutOfMemoryError:  # not the compiler's fault: the batch is too large
            raise
        except Exception as exc:
            self._give_up(exc)
            return self.eager(x)

    def _give_up(self, exc: Exception) -> None:
        with self._warn_lock:
            if self._failed:
                return
            self._failed, self.compiled = True, None
        text = str(exc).strip()
        log.warning("torch.compile failed (%s: %s); running the model uncompiled",
                    type(exc).__name__, text.splitlines()[0][:300] if text else "")  # fmt: skip


class Engine:
    """Normalisation + batched forward + softmax for one bundle on one device.

    On CPU the tiles go straight to the model, one call per batch from each worker thread.
    On CUDA they take the path of ``geoseg.inference.gpu`` (pinned buffers, copies on a side
    stream, channels_last, bf16/fp16 autocast, softmax on the GPU). ``compile``: the model
    runs through ``torch.compile`` (:class:`CompiledModel`).
    """

    def __init__(self, bundle: Bundle, device: str = "cpu", amp: bool = True,
                 compile: bool = False):  # fmt: skip
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
        self.forward: Callable = CompiledModel(self.model) if compile else self.model
        self.gpu = CudaPath(self.forward, self.device, self.amp_dtype) if self.cuda else None

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
        if self.gpu is not None:
            return self.gpu.submit(batch).result()
        x = {k: torch.from_numpy(v) for k, v in batch.items()}
        return torch.softmax(self.forward(x).float(), dim=1).numpy()

    def fitting_batch(self, tile_h: int, tile_w: int) -> int:
        """Tiles per model call on this engine's GPU: as many as its free memory holds with
        the model loaded, from one trial forward pass of one tile (``runtime.auto_batch``)."""
        try:
            per_tile = tile_bytes(self, tile_h, tile_w)
        except torch.OutOfMemoryError:
            log.warning("one %dx%d tile does not fit in the GPU's free memory; trying batch=1",
                        tile_h, tile_w)  # fmt: skip
            per_tile = None
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(self.device)[0]
        batch = 1 if per_tile is None else auto_batch(free, per_tile)
        log.info("batch=%d from free GPU memory: %.1f GiB free, %.0f MiB per %dx%d tile",
                 batch, free / 2**30, (per_tile or 0) / 2**20, tile_h, tile_w)  # fmt: skip
        return batch


def tile_bytes(engine: Engine, tile_h: int, tile_w: int) -> int:
    """GPU memory one tile takes through ``engine``: the peak of one forward pass of a batch
    of one tile (inputs, activations, probabilities) above what was allocated before."""
    dev = engine.device
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    engine.probabilities({name: np.zeros((1, len(m.bands), tile_h, tile_w), np.float32)
                          for name, m in engine.card.modalities.items()})  # fmt: skip
    torch.cuda.synchronize(dev)
    return max(1, torch.cuda.max_memory_allocated(dev) - before)
