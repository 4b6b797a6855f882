"""Spectral indices of a scene written as COGs, chunk by chunk, in bounded memory.

A scene with derived index modalities (``Scene.with_indices``) is read window by window; each
index becomes one single-band COG (``<stem>_<index>.tif``) streamed through
:func:`geoseg.outputs.cog.write_cog`, so no scene-sized array ever exists. Pixels that are
nodata in a source band, or where the formula divides by zero, are nodata in the output:
NaN in float32 files, -32768 in int16 files (values scaled by 10 000, ``scale_factor`` tag).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from geoseg.errors import InputError
from geoseg.geometry.window import PixelWindow
from geoseg.outputs.cog import write_cog

#: int16 output: index * INT16_SCALE, rounded; nodata INT16_NODATA
INT16_SCALE = 10_000
INT16_NODATA = -32768


def write_indices(
    scene,
    out_dir: str | os.PathLike[str],
    stem: str,
    *,
    dtype: Literal["float32", "int16"] = "float32",
    block: int = 512,
    progress: bool = False,
) -> dict[str, Path]:
    """One COG per index of every derived modality of ``scene``; returns ``{index: path}``.

    Args:
        scene: a ``Scene`` (or ``ArrayScene``) with derived index modalities.
        out_dir: output folder (created).
        stem: file name prefix (``<stem>_<index>.tif``).
        dtype: ``float32`` (nodata NaN) or ``int16`` (index x 10 000, nodata -32768).
        block: COG tile size and streaming window, pixels (multiple of 16).
    """
    if scene.indices is None:
        raise InputError("index=: no spectral index asked for; name one, e.g. index=ndvi")
    if dtype not in ("float32", "int16"):
        raise InputError(f"dtype={dtype}: use float32 or int16")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for modality, names in scene.indices.names.items():
        for k, name in enumerate(names):
            path = out / f"{stem}_{name}.tif"
            tags = {"index": name, "geoseg_index": name}
            if dtype == "int16":
                tags["scale_factor"] = str(1 / INT16_SCALE)
            write_cog(path, scene.grid, _reader(scene, modality, k, dtype), count=1, dtype=dtype,
                      nodata=float("nan") if dtype == "float32" else INT16_NODATA, block=block,
                      descriptions=[name], overview_resampling="average", progress=progress,
                      tags=tags)  # fmt: skip
            written[name] = path
    return written


def _reader(scene, modality: str, band: int, dtype: str):
    """Block reader of one index: nodata where the scene or the formula says so."""

    def read(window: PixelWindow) -> np.ndarray | None:
        arrays, valid = scene.read(window)
        if not valid.any():
            return None
        value = arrays[modality][band]
        if dtype == "float32":
            return np.where(valid, value, np.float32(np.nan)).astype(np.float32)
        scaled = np.clip(np.rint(value * INT16_SCALE), -32767, 32767).astype(np.int16)
        scaled[~valid] = INT16_NODATA
        return scaled

    return read


__all__ = ["INT16_NODATA", "INT16_SCALE", "write_indices"]
