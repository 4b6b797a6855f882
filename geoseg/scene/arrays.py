"""Scenes backed by xarray DataArrays (in memory or dask), read window by window like a Scene."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from geoseg.errors import GridError, InputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow

if TYPE_CHECKING:
    from geoseg.scene.indices import IndexTransform


class ArrayScene:
    """Scene backed by xarray DataArrays (band, y, x) on one grid, e.g. from rioxarray.

    Reading a window only loads that window (``.isel(...).values`` on dask-backed arrays).
    """

    #: derived spectral-index modalities added to every read (see ``with_indices``)
    indices: IndexTransform | None = None

    def with_indices(self, derived: Mapping[str, Any], roles: Mapping[str, Sequence[str]]) -> ArrayScene:
        """This scene with derived index modalities computed from the bands' ``roles``."""
        from geoseg.scene.indices import IndexTransform

        out = copy.copy(self)
        out.indices = IndexTransform.build(derived, roles) if derived else None
        return out

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
        counts = {n: a.sizes["band"] for n, a in self.arrays.items()}
        return {**counts, **self.indices.band_counts} if self.indices is not None else counts

    def read(self, window: PixelWindow) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Read ``window`` of every modality as float32 (bands, h, w) and its validity mask."""
        out = {}
        valid = np.ones(window.shape, bool)
        rows, cols = window.slices
        for name, arr in self.arrays.items():
            data = np.asarray(arr.isel(y=rows, x=cols).values, np.float32)
            nodata = arr.rio.nodata if arr.rio.nodata is not None else arr.rio.encoded_nodata
            if nodata is not None and not np.isnan(nodata):
                valid &= ~(data == np.float32(nodata)).all(axis=0)
            valid &= ~np.isnan(data).any(axis=0)
            out[name] = data
        if self.indices is not None:
            return self.indices.apply(out, valid)
        return out, valid
