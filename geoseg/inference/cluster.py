"""Running the chunk graph: in-process threads, a LocalCluster, or an existing Dask cluster.

On dask.distributed workers the model is loaded once per worker (a worker plugin holds a cache
keyed by the bundle's digest), never once per chunk; tasks carry only an ``EngineSpec``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from geoseg.inference.engine import Engine
from geoseg.inference.engine_cache import EngineSpec

log = logging.getLogger(__name__)

def engine_for(source: Engine | EngineSpec) -> Engine:
    """The engine itself (local runs) or this worker's cached engine for a spec."""
    if not isinstance(source, EngineSpec):
        return source
    from distributed import get_worker

    from geoseg.inference.worker_plugin import PLUGIN, GeosegWorkerPlugin

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

    from geoseg.inference.worker_plugin import PLUGIN, GeosegWorkerPlugin

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
