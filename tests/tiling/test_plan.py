"""Tile plan and blend windows."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.tiling.plan import TilePlan, axis_starts, blend_window, ramp


@pytest.mark.parametrize("n,tile,stride", [(100, 32, 24), (32, 32, 24), (10, 32, 24), (1000, 256, 256)])
def test_axis_starts_cover_the_axis(n: int, tile: int, stride: int) -> None:
    t = min(tile, n)
    starts = axis_starts(n, t, stride)
    covered = np.zeros(n, bool)
    for s in starts:
        assert s >= 0 and s + t <= n
        covered[s : s + t] = True
    assert covered.all()
    assert list(starts) == sorted(set(starts))


def test_ramps_are_a_partition_of_unity() -> None:
    r = ramp(16)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-6)
    assert (r > 0).all() and (r < 1).all()


def test_window_is_edge_adapted() -> None:
    w = blend_window(64, 64, 16, top=True, bottom=False, left=True, right=False)
    assert w[0, 0] == 1.0 and w[0, 40] == 1.0  # scene borders keep full weight
    assert w[-1, -1] < 0.01 and w[32, 32] == 1.0


@pytest.mark.parametrize("chunk", [50, 128, 333, 5000])
def test_every_tile_owned_once_and_every_pixel_reached(chunk: int) -> None:
    plan = TilePlan(700, 650, 128, 32, chunk)
    owned = [t for ch in plan.chunks.values() for t in ch.tiles]
    assert sorted(owned) == sorted((r, c) for r in plan.rows for c in plan.cols)
    for idx, ch in plan.chunks.items():
        r0, r1, c0, c1 = ch.core.as_list()
        weight = np.zeros((r1 - r0, c1 - c0))
        for src in plan.contributors(idx):
            for r, c in plan.chunks[src].tiles:
                a0, a1 = max(r, r0), min(r + plan.tile_h, r1)
                b0, b1 = max(c, c0), min(c + plan.tile_w, c1)
                if a0 < a1 and b0 < b1:
                    weight[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] += 1
        assert (weight > 0).all()


def test_overlap_factor_and_small_scene() -> None:
    plan = TilePlan(40, 30, 256, 32, 2048)
    assert plan.tile_h == 40 and plan.tile_w == 30 and plan.n_tiles == 1
    assert plan.overlap_factor == 1.0
    big = TilePlan(4096, 4096, 512, 64, 2048)
    assert 1.0 < big.overlap_factor < 1.4


def test_bad_plan_settings() -> None:
    with pytest.raises(InputError, match="overlap="):
        TilePlan(100, 100, 64, 40, 64)
    with pytest.raises(InputError, match="tile="):
        TilePlan(100, 100, 8, 0, 64)
