"""The one pixel-window type: rows ``r0:r1`` and columns ``c0:c1`` of a grid (half-open)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PixelWindow:
    """Rows ``r0:r1``, columns ``c0:c1`` (half-open), in pixels of some grid.

    Every window that travels between geoseg's layers is one of these (reads, tiles, chunks,
    training windows, validation regions): never a bare 4-tuple, whose order is easy to mix up.
    """

    r0: int
    r1: int
    c0: int
    c1: int

    def __post_init__(self) -> None:
        for name in ("r0", "r1", "c0", "c1"):  # numpy integers would not survive JSON
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def at(cls, row: int, col: int, height: int, width: int) -> PixelWindow:
        """The window of ``height`` x ``width`` pixels whose top-left pixel is (row, col)."""
        return cls(row, row + height, col, col + width)

    @property
    def height(self) -> int:
        return self.r1 - self.r0

    @property
    def width(self) -> int:
        return self.c1 - self.c0

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def area(self) -> int:
        return max(self.height, 0) * max(self.width, 0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing an array laid out on the same grid."""
        return slice(self.r0, self.r1), slice(self.c0, self.c1)

    def intersects(self, other: PixelWindow) -> bool:
        rows = self.r0 < other.r1 and other.r0 < self.r1
        return rows and self.c0 < other.c1 and other.c0 < self.c1

    def intersection(self, other: PixelWindow) -> PixelWindow | None:
        """The overlap of both windows, or None when they do not overlap."""
        if not self.intersects(other):
            return None
        return PixelWindow(max(self.r0, other.r0), min(self.r1, other.r1),
                           max(self.c0, other.c0), min(self.c1, other.c1))  # fmt: skip

    def grow(self, n: int) -> PixelWindow:
        return PixelWindow(self.r0 - n, self.r1 + n, self.c0 - n, self.c1 + n)

    def shift(self, dr: int, dc: int) -> PixelWindow:
        """The same window moved by ``dr`` rows and ``dc`` columns."""
        return PixelWindow(self.r0 + dr, self.r1 + dr, self.c0 + dc, self.c1 + dc)

    def relative_to(self, outer: PixelWindow) -> PixelWindow:
        """This window in the pixel coordinates of ``outer`` (whose top-left becomes 0, 0)."""
        return self.shift(-outer.r0, -outer.c0)

    def as_list(self) -> list[int]:
        return [self.r0, self.r1, self.c0, self.c1]


#: a block reader: the pixels of one window, ``(bands, h, w)`` or ``(h, w)``; None when the
#: whole window is nodata (the tile store's readers, COG and polygon writers' sources)
BlockReader = Callable[[PixelWindow], "np.ndarray | None"]
