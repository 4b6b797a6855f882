"""Lazy (dask-backed) predictions: compute only the chunks a viewport needs.

The same chunk tasks as the batch predictor, assembled into a dask array instead of a tile
store: selecting a window and computing it runs only the tiles reaching that window.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg.inference.chunks import ChunkJob
from geoseg.inference.engine import Engine
from geoseg.inference.graph import build_graph
from geoseg.tiling.plan import TilePlan


def lazy_prediction(scene, engine: Engine, *, tile: int, overlap: int, chunk: int, batch: int = 1,
                    probabilities: bool = False) -> tuple[da.Array, da.Array | None]:  # fmt: skip
    """Dask arrays of class ids (y, x) and optionally quantised probabilities (class, y, x)."""
    g = scene.grid
    plan = TilePlan(g.height, g.width, tile, overlap, chunk)
    ids = np.array([c.id for c in engine.card.classes], np.uint8)
    job = ChunkJob(scene, plan, batch, ids, probabilities)
    token = tokenize(id(scene), engine.digest, tile, overlap, chunk, probabilities)
    dsk, finals, _ = build_graph(job, engine, list(plan.chunks), prefix="geoseg-",
                                  suffix=f"-{token}")
    cls_name, prob_name = f"geoseg-classes-{token}", f"geoseg-probs-{token}"
    for key in finals:
        idx = key[1:]
        dsk[(cls_name, *idx)] = (_item, key, 0)
        if probabilities:
            dsk[(prob_name, 0, *idx)] = (_item, key, 2)
    ny, nx = plan.chunk_shape
    rows = tuple(min(chunk, g.height - i * chunk) for i in range(ny))
    cols = tuple(min(chunk, g.width - j * chunk) for j in range(nx))
    graph = HighLevelGraph.from_collections(cls_name, dsk, dependencies=())
    classes = da.Array(graph, cls_name, chunks=(rows, cols), dtype=np.uint8)
    probs = None
    if probabilities:
        graph = HighLevelGraph.from_collections(prob_name, dsk, dependencies=())
        probs = da.Array(graph, prob_name, chunks=((len(ids),), rows, cols), dtype=np.uint8)
    return classes, probs


def _item(t: tuple, i: int):
    return t[i]


__all__ = ["lazy_prediction"]
