"""The CUDA path of an engine: CPU threads feed one model on one GPU without making it wait.

A CUDA run holds one :class:`~geoseg.inference.engine.Engine` per GPU, shared by every chunk
worker; the workers are CPU threads that read, normalise, cut and blend, and each hands its
batches to :meth:`CudaPath.submit`:

1. the tiles go into pinned host buffers that the thread keeps and reuses (page-locking
   memory for every batch costs more than the copy);
2. the host-to-device copy runs on a side stream, and its event is recorded;
3. the compute stream waits for that event, converts the inputs to channels_last (like the
   model), runs the forward pass under bf16 autocast (fp16 where bf16 is not supported, none
   with ``amp`` off), the softmax, and copies the probabilities into pinned host memory.

While the GPU computes one thread's batch, the next thread's batch is being copied in.
Forward passes are launched one at a time (a lock) and at most ``MAX_QUEUED`` are unfinished
on the GPU, so it holds the activations of one batch (later launches reuse that memory in
stream order): the batch that ``Engine.fitting_batch`` sized from the free memory.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np
import torch

log = logging.getLogger(__name__)

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


#: forward passes launched on the GPU and not finished: one computing, one queued behind it
#: (its inputs copied in meanwhile); a launcher waits for the GPU beyond that, which bounds
#: the GPU memory of queued batches whatever the number of worker threads
MAX_QUEUED = 2


class Pending:
    """A submitted batch: its probabilities, in pinned host memory, once the GPU is done."""

    def __init__(self, host: torch.Tensor, done: torch.cuda.Event):
        self.host, self.done = host, done

    def result(self) -> np.ndarray:
        """Wait for the copy (without holding the GIL) and return the array (a view, no copy)."""
        self.done.synchronize()
        return self.host.numpy()


class _Staging:
    """One thread's pinned input buffers (one per modality, grown as needed) and the event of
    the last copy out of them."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.copied = torch.cuda.Event(blocking=True)  # waiting threads sleep, not spin

    def fill(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        self.copied.synchronize()  # the previous copy has left these buffers
        views = {}
        for name, arr in batch.items():
            src = torch.from_numpy(np.ascontiguousarray(arr))
            buf = self.buffers.get(name)
            if (buf is None or buf.dtype != src.dtype or buf.shape[1:] != src.shape[1:]
                    or buf.shape[0] < src.shape[0]):  # fmt: skip
                buf = self.buffers[name] = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
            views[name] = buf[: src.shape[0]]
            views[name].copy_(src)
        return views


class CudaPath:
    """Batches of normalised tiles -> class probabilities on one GPU (see the module doc)."""

    def __init__(self, forward: Forward, device: torch.device, amp_dtype: torch.dtype | None):
        self.forward, self.device, self.amp_dtype = forward, device, amp_dtype
        self.copy_stream = torch.cuda.Stream(device)
        self.compute_stream = torch.cuda.Stream(device)
        self._launch = threading.Lock()
        self._queued: deque[torch.cuda.Event] = deque()
        self._local = threading.local()
        # a run's tiles share one shape: cuDNN's autotuned convolutions are picked once per
        # shape and then reused (a process setting; geoseg's CUDA runs all gain from it)
        torch.backends.cudnn.benchmark = True
        # the weights were uploaded on the default stream; ours do not wait for it
        torch.cuda.synchronize(device)

    def _upload(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], torch.cuda.Event]:
        staging = getattr(self._local, "staging", None)
        if staging is None:
            staging = self._local.staging = _Staging()
        host = staging.fill(batch)
        with torch.cuda.stream(self.copy_stream):
            x = {name: t.to(self.device, non_blocking=True) for name, t in host.items()}
            staging.copied.record(self.copy_stream)
        return x, staging.copied

    @torch.inference_mode()
    def device_probabilities(self, batch: Mapping[str, np.ndarray]) -> torch.Tensor:
        """(B, K, h, w) float32 probabilities left on the GPU, ordered on ``compute_stream``:
        use them in ``with torch.cuda.stream(path.compute_stream)`` (a blend on the GPU)."""
        x, copied = self._upload(batch)
        dtype = self.amp_dtype or torch.float16
        with self._launch, torch.cuda.stream(self.compute_stream):
            while len(self._queued) >= MAX_QUEUED:  # launches are far enough ahead of the GPU
                self._queued.popleft().synchronize()
            self.compute_stream.wait_event(copied)
            for t in x.values():  # allocated on the copy stream, freed after use here
                t.record_stream(self.compute_stream)
            x = {k: t.contiguous(memory_format=torch.channels_last) for k, t in x.items()}
            with torch.autocast("cuda", dtype=dtype, enabled=self.amp_dtype is not None):
                logits = self.forward(x)
            probs = torch.softmax(logits.float(), dim=1)
            launched = torch.cuda.Event(blocking=True)
            launched.record(self.compute_stream)
            self._queued.append(launched)
            return probs

    def download(self, t: torch.Tensor) -> Pending:
        """Copy ``t`` (made on ``compute_stream``) into pinned host memory, asynchronously."""
        # torch's caching host allocator recycles the block once the caller drops the array
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        done = torch.cuda.Event(blocking=True)
        with torch.cuda.stream(self.compute_stream):
            host.copy_(t, non_blocking=True)
            done.record(self.compute_stream)
        return Pending(host, done)

    def submit(self, batch: Mapping[str, np.ndarray]) -> Pending:
        """Start a batch (copy in, forward, softmax, copy out); ``.result()`` waits for it."""
        return self.download(self.device_probabilities(batch))
