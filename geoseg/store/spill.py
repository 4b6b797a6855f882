"""Spilled arrays of a run: files that carry their own CRC-32, written atomically.

A killed run's spilled results are what a resumed run reuses instead of running tiles again:
the blend sums a chunk hands to a neighbour (hand-overs) and the probabilities of single tiles
whose chunk was not finished. Each file is ``np.save``'d arrays followed by their CRC-32s;
:func:`load_checked` refuses a truncated or corrupt one.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path


def crc32(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order): 3.8 GB/s here, so checking is cheap."""
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def save_checked(path: Path, *arrays: np.ndarray) -> None:
    """Write ``arrays`` and their CRC-32s to ``path`` under a temporary name, then rename.

    Raises:
        OSError: the write failed (its errno kept: ENOSPC...); nothing is left at ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out = _Writer(fh)  # numpy's tofile would lose the errno of a full disk
        for a in arrays:
            np.save(out, a)
        np.save(out, np.array([crc32(a) for a in arrays], np.uint32))


def load_checked(path: Path, count: int) -> tuple[list[np.ndarray] | None, str]:
    """The ``count`` arrays saved at ``path`` and ``""``, or ``None`` and why they are unusable
    (missing, truncated, corrupt)."""
    try:
        with open(path, "rb") as fh:
            arrays = [np.load(fh) for _ in range(count)]
            check = np.load(fh)
    except (OSError, ValueError, EOFError) as exc:
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if check.shape != (count,) or [crc32(a) for a in arrays] != check.tolist():
        return None, "checksum mismatch"
    return arrays, ""


class _Writer:
    """A file seen by numpy as a plain stream: ``np.save`` then writes through ``write`` (in
    blocks), whose OSError keeps its errno (ENOSPC...)."""

    def __init__(self, fh: Any) -> None:
        self.write = fh.write
