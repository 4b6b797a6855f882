"""PixelWindow: the one pixel-window type."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.geometry.window import PixelWindow


def test_window_arithmetic() -> None:
    w = PixelWindow.at(10, 20, 30, 40)
    assert (w.r0, w.r1, w.c0, w.c1) == (10, 40, 20, 60)
    assert w.shape == (30, 40) and w.area == 1200
    arr = np.arange(100 * 100).reshape(100, 100)
    assert arr[w.slices].shape == w.shape
    inner = PixelWindow(15, 25, 30, 35)
    assert inner.relative_to(w) == PixelWindow(5, 15, 10, 15)
    assert w.intersection(PixelWindow(0, 12, 0, 25)) == PixelWindow(10, 12, 20, 25)
    assert w.intersection(PixelWindow(0, 10, 0, 20)) is None  # half-open: touching is not overlap
    assert w.grow(2) == PixelWindow(8, 42, 18, 62) and w.shift(-10, -20) == PixelWindow(0, 30, 0, 40)


def test_window_is_frozen_and_json_friendly() -> None:
    w = PixelWindow(np.int64(1), np.int64(2), np.int64(3), np.int64(4))
    assert all(type(v) is int for v in w.as_list())
    with pytest.raises(AttributeError):
        w.r0 = 5  # type: ignore[misc]
