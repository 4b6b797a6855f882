"""Lazy (dask-backed) predictions: compute only the chunks a viewport needs.

The same chunk tasks as the batch predictor, assembled into a dask array instead of a tile
store: selecting a window and computing it runs only the tiles reaching that window.
"""

from __future__ import annotations

from collections.abc import Mapping

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg.engine import Engine
from geoseg.errors import GridError, InputError
from geoseg.grid import GridBox
from geoseg.predict import ChunkJob, accumulate, blend
from geoseg.store import NODATA
from geoseg.tiling import TilePlan


class ArrayScene:
    """Scene backed by xarray DataArrays (band, y, x) on one grid, e.g. from rioxarray.

    Reading a window only loads that window (``.isel(...).values`` on dask-backed arrays).
    """

    def __init__(self, arrays: Mapping[str, xr.DataArray]):
        if not arrays:
            raise InputError("no modality arrays given")
        first = next(iter(arrays.values()))
        try:
            crs, transform = first.rio.crs, first.rio.transform()
        except Exception as exc:
            raise GridError(f"array has no georeferencing ({exc}); open it with rioxarray") from None
        if crs is None:
            raise GridError("array has no CRS; set one with .rio.write_crs('EPSG:XXXX')")
        h, w = first.sizes["y"], first.sizes["x"]
        self.grid = GridBox(h, w, transform, crs)
        self.arrays = {}
        for name, arr in arrays.items():
            if "band" not in arr.dims:
                arr = arr.expand_dims("band")
            if (arr.sizes["y"], arr.sizes["x"]) != (h, w):
                raise GridError(f"modality {name!r} is not on the grid of the first one; "
                                "reproject it with .rio.reproject_match()")
            self.arrays[name] = arr.transpose("band", "y", "x")

    @property
    def band_counts(self) -> dict[str, int]:
        return {n: a.sizes["band"] for n, a in self.arrays.items()}

    def read(self, r0: int, r1: int, c0: int, c1: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        out = {}
        valid = np.ones((r1 - r0, c1 - c0), bool)
        for name, arr in self.arrays.items():
            data = np.asarray(arr.isel(y=slice(r0, r1), x=slice(c0, c1)).values, np.float32)
            nodata = arr.rio.nodata if arr.rio.nodata is not None else arr.rio.encoded_nodata
            if nodata is not None and not np.isnan(nodata):
                valid &= ~(data == np.float32(nodata)).all(axis=0)
            valid &= ~np.isnan(data).any(axis=0)
            out[name] = data
        return out, valid


def lazy_prediction(scene, engine: Engine, *, tile: int, overlap: int, chunk: int, batch: int = 1,
                    probabilities: bool = False) -> tuple[da.Array, da.Array | None]:  # fmt: skip
    """Dask arrays of class ids (y, x) and optionally quantised probabilities (class, y, x)."""
    g = scene.grid
    plan = TilePlan(g.height, g.width, tile, overlap, chunk)
    ids = np.array([c.id for c in engine.card.classes], np.uint8)
    job = ChunkJob(scene, plan, batch, ids, probabilities)
    token = tokenize(id(scene), engine.digest, tile, overlap, chunk, probabilities)
    acc, blended = f"geoseg-acc-{token}", f"geoseg-blend-{token}"
    cls_name, prob_name = f"geoseg-classes-{token}", f"geoseg-probs-{token}"
    dsk: dict = {}
    for idx in plan.chunks:
        dsk[(acc, *idx)] = (accumulate, job, engine, idx)
        parts = []
        for src in plan.contributors(idx):
            key = (f"{acc}-piece", *src, *idx)
            dsk[key] = (_piece, (acc, *src), idx)
            parts.append(key)
        dsk[(blended, *idx)] = (blend, job, idx, *parts)
        dsk[(cls_name, *idx)] = (_item, (blended, *idx), 0)
        if probabilities:
            dsk[(prob_name, 0, *idx)] = (_item, (blended, *idx), 2)
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


def _piece(result: dict, dst: tuple[int, int]):
    return result["pieces"].get(dst)


def _item(t: tuple, i: int):
    return t[i]


__all__ = ["NODATA", "ArrayScene", "lazy_prediction"]
