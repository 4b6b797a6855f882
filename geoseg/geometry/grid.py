"""GridBox: a raster's geometry (shape, transform, CRS) as one immutable value."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.errors import GridError
from geoseg.geometry.window import PixelWindow


@dataclass(frozen=True, slots=True)
class GridBox:
    """Pixel grid of a raster: ``height`` x ``width`` pixels placed by ``transform`` in ``crs``.

    Slicing with pixel indices (``grid[r0:r1, c0:c1]``) returns the sub-grid of that window;
    tiles, halos and output chunks are all expressed as GridBoxes.
    """

    height: int
    width: int
    transform: Affine
    crs: CRS | None

    @classmethod
    def from_dataset(cls, ds) -> GridBox:
        """The grid of an open rasterio dataset."""
        return cls(ds.height, ds.width, ds.transform, ds.crs)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of a north-up grid."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def resolution(self) -> tuple[float, float]:
        """(x, y) pixel size, positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def is_rectilinear(self) -> bool:
        """True when the transform has no rotation or shear terms."""
        return self.transform.b == 0 and self.transform.d == 0

    def __getitem__(self, roi: tuple[slice, slice]) -> GridBox:
        rows, cols = roi
        r0, r1, _ = rows.indices(self.height)
        c0, c1, _ = cols.indices(self.width)
        if r1 <= r0 or c1 <= c0:
            raise GridError(f"empty window [{r0}:{r1}, {c0}:{c1}] of a {self.shape} grid")
        return GridBox(r1 - r0, c1 - c0, self.transform @ Affine.translation(c0, r0), self.crs)

    def window(self, window: PixelWindow) -> GridBox:
        """Sub-grid of ``window``; may extend past the grid (for halos)."""
        return GridBox(window.height, window.width,
                       self.transform @ Affine.translation(window.c0, window.r0), self.crs)  # fmt: skip

    def chunks(self, size: int) -> Iterator[PixelWindow]:
        """Row-major chunk windows of at most ``size`` pixels per side."""
        for r0 in range(0, self.height, size):
            for c0 in range(0, self.width, size):
                yield PixelWindow(r0, min(r0 + size, self.height), c0, min(c0 + size, self.width))

    def same_grid(self, other: GridBox, tol: float = 1e-6) -> bool:
        """True when both grids have the same shape, CRS and (almost) the same transform."""
        if self.shape != other.shape or self.crs != other.crs:
            return False
        scale = max(abs(self.transform.a), abs(self.transform.e))
        return all(
            math.isclose(a, b, abs_tol=tol * scale)
            for a, b in zip(self.transform[:6], other.transform[:6], strict=True)
        )

    def to_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def __dask_tokenize__(self) -> tuple:
        return ("GridBox", self.height, self.width, *self.transform[:6], self.crs_wkt)

    @property
    def crs_wkt(self) -> str:
        return self.crs.to_wkt() if self.crs else ""

    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "transform": list(self.transform[:6]),
            "crs": self.crs_wkt,
        }
