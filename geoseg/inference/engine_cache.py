"""What a Dask worker needs to run a model: the engine's spec, and its per-process cache."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch

from geoseg.inference.engine import Engine, open_engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to load the engine itself (cheap to ship with every task)."""

    bundle: str
    digest: str
    device: str
    threads: int
    amp: bool = True
    compile: bool = False

    def __dask_tokenize__(self) -> tuple:
        return ("EngineSpec", self.digest, self.device, self.threads, self.amp, self.compile)


class EngineCache:
    """Engines of one process, keyed by bundle digest, device, autocast and compilation;
    counts model loads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str, bool, bool], Engine] = {}
        self.loads = 0

    def get(self, spec: EngineSpec) -> Engine:
        key = (spec.digest, spec.device, spec.amp, spec.compile)
        with self._lock:
            if key not in self._engines:
                if spec.threads:
                    torch.set_num_threads(spec.threads)
                self._engines[key] = open_engine(spec.bundle, spec.device, max(1, spec.threads),
                                                  spec.amp, compile=spec.compile)
                self.loads += 1
                log.info("loaded model %s on %s", spec.bundle, spec.device)
            return self._engines[key]
