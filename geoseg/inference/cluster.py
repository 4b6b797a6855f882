"""Running the chunk graph: in-process threads, a LocalCluster, or an existing Dask cluster.

On dask.distributed workers the model is loaded once per worker (a worker plugin holds a cache
keyed by the bundle's digest), never once per chunk; tasks carry only an ``EngineSpec``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from geoseg.inference.engine import Engine, open_engine

log = logging.getLogger(__name__)

PLUGIN = "geoseg"


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to load the engine itself (cheap to ship with every task)."""

    bundle: str
    digest: str
    device: str
    threads: int
    amp: bool = True

    def __dask_tokenize__(self) -> tuple:
        return ("EngineSpec", self.digest, self.device, self.threads, self.amp)


class EngineCache:
    """Engines of one process, keyed by (bundle digest, device); counts model loads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[tuple[str, str], Engine] = {}
        self.loads = 0

    def get(self, spec: EngineSpec) -> Engine:
        key = (spec.digest, spec.device)
        with self._lock:
            if key not in self._engines:
                if spec.threads:
                    torch.set_num_threads(spec.threads)
                self._engines[key] = open_engine(spec.bundle, spec.device,
                                                  max(1, spec.threads), spec.amp)
                self.loads += 1
                log.info("loaded model %s on %s", spec.bundle, spec.device)
            return self._engines[key]


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    WorkerPlugin = object  # type: ignore[assignment,misc]


class GeosegWorkerPlugin(WorkerPlugin):  # type: ignore[misc]
    """Gives every worker its own engine cache."""

    idempotent = True
    name = PLUGIN

    def setup(self, worker: Any) -> None:
        self.cache = EngineCache()


def engine_for(source: Engine | EngineSpec) -> Engine:
    """The engine itself (local runs) or this worker's cached engine for a spec."""
    if not isinstance(source, EngineSpec):
        return source
    from distributed import get_worker

    worker = get_worker()
    if source.threads == 0 and not getattr(worker, "_geoseg_threads_set", False):
        # share this worker's cores among its task slots
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, worker.state.nthreads)))
        worker._geoseg_threads_set = True
    plugin = worker.plugins.get(PLUGIN)
    if plugin is None:  # registered after this worker joined: install it now
        plugin = GeosegWorkerPlugin()
        plugin.setup(worker)
        worker.plugins[PLUGIN] = plugin
    return plugin.cache.get(source)


def run_threads(graph: dict, keys: list, workers: int,
                on_done: Callable[[Any], None] | None = None) -> list:  # fmt: skip
    """Dask's threaded scheduler in this process (torch releases the GIL in the model)."""
    import dask.threaded
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, id):
            if on_done is not None and isinstance(key, tuple) and key[0] == "finish":
                on_done(key)

    with _Progress():
        return dask.threaded.get(graph, keys, num_workers=workers)


def run_distributed(client: Any, graph: dict, keys: list,
                    on_done: Callable[[Any], None] | None = None) -> list:  # fmt: skip
    """Submit the graph to a dask.distributed client; results in ``keys`` order."""
    from distributed import as_completed

    client.register_plugin(GeosegWorkerPlugin(), name=PLUGIN)
    futures = client.get(graph, keys, sync=False)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    for fut in as_completed(futures):
        results[index[fut.key]] = fut.result()
        if on_done is not None and isinstance(fut.key, tuple) and fut.key[0] == "finish":
            on_done(fut.key)
    return results


def open_client(scheduler: str, workers: int) -> Any:
    """A client for ``scheduler``: "local" starts a LocalCluster, else an address."""
    from distributed import Client

    from geoseg.inference.local_cluster import cluster_shape, start_local_cluster

    if scheduler == "local":  # one process, a thread per worker (see cluster_shape)
        _, client = start_local_cluster(*cluster_shape(None, workers))
    else:
        client = Client(scheduler, timeout="30s")
    log.info("dask dashboard: %s", client.dashboard_link)
    return client
