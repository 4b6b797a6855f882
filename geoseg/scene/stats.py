"""Per-band statistics of rasters, computed from a decimated read (never the whole scene)."""

from __future__ import annotations

import numpy as np

from geoseg.scene.scene import Scene


def band_stats(scene: Scene, max_side: int = 1024) -> dict[str, tuple[list[float], list[float]]]:
    """Mean and std per band of every modality over valid pixels, from a decimated read."""
    import rasterio
    from rasterio.enums import Resampling

    g = scene.grid
    f = max(1, int(np.ceil(max(g.height, g.width) / max_side)))
    shape = (max(1, g.height // f), max(1, g.width // f))
    out = {}
    for name, mod in scene.modalities.items():
        with rasterio.open(mod.path) as ds:
            data = ds.read(list(mod.bands), out_shape=(mod.count, *shape),
                           resampling=Resampling.nearest, out_dtype="float64", masked=True)
        flat = data.reshape(mod.count, -1)
        mean = [float(np.ma.mean(b)) for b in flat]
        std = [max(float(np.ma.std(b)), 1e-6) for b in flat]
        out[name] = (mean, std)
    return out
