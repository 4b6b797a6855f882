"""Tile plan: model tiles on one grid anchored to the scene, grouped into output chunks.

Tiles start every ``stride = tile - overlap`` pixels from the scene's top-left corner; the last
row/column is pulled back so it ends on the scene edge. Each tile belongs to the chunk holding
its top-left pixel, so every tile is computed exactly once whatever the chunk size; a chunk's
tiles may reach into the next chunks, and those contributions are handed over before blending.
The plan depends only on the scene shape, tile and overlap, so results never depend on the
chunking or the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow


def axis_starts(n: int, tile: int, stride: int) -> tuple[int, ...]:
    """Tile start offsets along an axis of ``n`` pixels (tile already clipped to ``n``)."""
    if n <= tile:
        return (0,)
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return tuple(sorted(set(starts)))


def ramp(n: int) -> np.ndarray:
    """Rising half-cosine of ``n`` pixel centres in (0, 1): ramp + reversed ramp == 1."""
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (np.sin(0.5 * np.pi * x) ** 2).astype(np.float32)


def blend_window(
    h: int, w: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool
) -> np.ndarray:
    """Blend weights of one tile: 1 inside, cosine ramps over the overlap on inner sides.

    Sides on the scene border (``top`` ... ``right`` True) keep full weight there, so pixels at
    the scene edge are not down-weighted (edge-adapted window).
    """
    wy = np.ones(h, np.float32)
    wx = np.ones(w, np.float32)
    oy, ox = min(overlap, h // 2), min(overlap, w // 2)
    if oy > 0:
        if not top:
            wy[:oy] = ramp(oy)
        if not bottom:
            wy[h - oy :] = ramp(oy)[::-1]
    if ox > 0:
        if not left:
            wx[:ox] = ramp(ox)
        if not right:
            wx[w - ox :] = ramp(ox)[::-1]
    return np.outer(wy, wx)


@dataclass(frozen=True)
class Chunk:
    """An output chunk (core window) and the tiles it owns."""

    index: tuple[int, int]
    core: PixelWindow  # the output pixels this chunk finishes
    tiles: tuple[tuple[int, int], ...]  # top-left (row, col) of owned tiles
    region: PixelWindow | None  # extent of the owned tiles (None: owns none)


@dataclass(frozen=True)
class TilePlan:
    """Tiles of ``tile`` px with ``overlap`` px on a ``height`` x ``width`` scene."""

    height: int
    width: int
    tile: int
    overlap: int
    chunk: int

    def __post_init__(self) -> None:
        if self.tile < 16:
            raise InputError(f"tile={self.tile} is too small; use at least 16 pixels")
        if not 0 <= self.overlap < self.tile // 2 + 1:
            raise InputError(f"overlap={self.overlap} must be between 0 and tile/2 "
                             f"({self.tile // 2})")
        if self.chunk < 1:
            raise InputError(f"chunk={self.chunk} must be positive")

    @property
    def tile_h(self) -> int:
        return min(self.tile, self.height)

    @property
    def tile_w(self) -> int:
        return min(self.tile, self.width)

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @cached_property
    def rows(self) -> tuple[int, ...]:
        return axis_starts(self.height, self.tile_h, self.stride)

    @cached_property
    def cols(self) -> tuple[int, ...]:
        return axis_starts(self.width, self.tile_w, self.stride)

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def overlap_factor(self) -> float:
        """Model pixels computed / scene pixels."""
        return self.n_tiles * self.tile_h * self.tile_w / (self.height * self.width)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        return (math.ceil(self.height / self.chunk), math.ceil(self.width / self.chunk))

    def window(self, r: int, c: int) -> np.ndarray:
        """Blend weights of the tile at (r, c)."""
        return blend_window(
            self.tile_h, self.tile_w, self.overlap,
            top=r == 0, bottom=r + self.tile_h >= self.height,
            left=c == 0, right=c + self.tile_w >= self.width,
        )  # fmt: skip

    @cached_property
    def chunks(self) -> dict[tuple[int, int], Chunk]:
        out = {}
        ny, nx = self.chunk_shape
        for i in range(ny):
            r0, r1 = i * self.chunk, min((i + 1) * self.chunk, self.height)
            rows = [r for r in self.rows if r0 <= r < r1]
            for j in range(nx):
                c0, c1 = j * self.chunk, min((j + 1) * self.chunk, self.width)
                cols = [c for c in self.cols if c0 <= c < c1]
                tiles = tuple((r, c) for r in rows for c in cols)
                region = None
                if tiles:
                    region = PixelWindow(rows[0], rows[-1] + self.tile_h, cols[0], cols[-1] + self.tile_w)
                out[(i, j)] = Chunk((i, j), PixelWindow(r0, r1, c0, c1), tiles, region)
        return out

    def contributors(self, index: tuple[int, int]) -> list[tuple[int, int]]:
        """Chunks whose tiles reach into the core of chunk ``index`` (itself included)."""
        core = self.chunks[index].core
        # a tile starts in its owner chunk and is at most `tile` px long, so only chunks up to
        # this many steps up/left can reach here
        k = math.ceil(self.tile / self.chunk) + 1
        i, j = index
        out = []
        for key in (
            (a, b) for a in range(max(0, i - k), i + 1) for b in range(max(0, j - k), j + 1)
        ):
            region = self.chunks[key].region
            if region is not None and region.intersects(core):
                out.append(key)
        return sorted(out)
