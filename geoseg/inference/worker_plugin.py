"""The Dask worker plugin that gives every worker its own engine cache.

Kept apart from ``geoseg.inference.cluster`` so that a run on in-process threads never imports
``distributed`` (0.4 s of start-up).
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from geoseg.inference.engine_cache import EngineCache

PLUGIN = "geoseg"


class GeosegWorkerPlugin(WorkerPlugin):
    """Gives every worker its own engine cache."""

    idempotent = True
    name = PLUGIN

    def setup(self, worker: Any) -> None:
        self.cache = EngineCache()
