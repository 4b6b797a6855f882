"""Small PNG quicklook of a class raster with a colour legend (read from its overviews)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.card import ClassInfo


def write_quicklook(cog: Path, png: Path, classes: Sequence[ClassInfo], title: str = "",
                    max_side: int = 800, nodata: int = 255) -> Path:  # fmt: skip
    """Render ``cog`` (class ids) at most ``max_side`` px wide, with a legend of the classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from rasterio.enums import Resampling

    with rasterio.open(cog) as ds:
        f = max(1.0, max(ds.height, ds.width) / max_side)
        shape = (max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        # nearest on a COG reads the closest overview, never the full-resolution scene
        data = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    lut = np.zeros((256, 4))
    for c in classes:
        lut[c.id] = (*(v / 255 for v in c.rgb), 1.0)
    rgba = lut[data]
    rgba[data == nodata] = (0, 0, 0, 0)
    fig, ax = plt.subplots(figsize=(8, 8 * shape[0] / shape[1] + 0.6), dpi=100)
    ax.imshow(rgba, interpolation="nearest", cmap=ListedColormap(lut[:, :3]))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    present = set(np.unique(data).tolist())
    handles = [Patch(facecolor=c.color, edgecolor="black", label=f"{c.id} {c.name}")
               for c in classes if c.id in present]  # fmt: skip
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
                  frameon=False)  # fmt: skip
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(png)
    return png
