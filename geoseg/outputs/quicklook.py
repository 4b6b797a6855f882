"""Small PNG quicklook of a class raster with a colour legend (read from its overviews).

Drawn with Pillow, not matplotlib: it runs after every prediction and must stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._files import atomic_path, writable_folder, write_failed
from geoseg.config import NODATA
from geoseg.scene.classes import ClassInfo


def write_quicklook(cog: Path, png: Path, classes: Sequence[ClassInfo], title: str = "",
                    max_side: int = 800, nodata: int = NODATA) -> Path:  # fmt: skip
    """Render ``cog`` (class ids) at most ``max_side`` px wide, with a legend of the classes.

    Ids outside ``classes`` (nodata among them) are transparent; the PNG is written under a
    temporary name and renamed when complete.
    """
    folder = writable_folder(png)
    canvas = _draw(_read_small(cog, max_side), classes, title)
    try:
        with atomic_path(png, ".png") as tmp:  # Pillow picks the format from the suffix
            canvas.convert("RGB").save(tmp, compress_level=1)
    except OSError as err:
        raise write_failed(png, folder, err) from err
    return png


def _read_small(cog: Path, max_side: int) -> np.ndarray:
    """Band 1 of ``cog`` at most ``max_side`` px on its longer side."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(cog) as ds:
        f = max(1.0, max(ds.height, ds.width) / max_side)
        shape = (max(1, int(ds.height / f)), max(1, int(ds.width / f)))
        # nearest on a COG reads the closest overview, never the full-resolution scene
        return ds.read(1, out_shape=shape, resampling=Resampling.nearest)


def _draw(data: np.ndarray, classes: Sequence[ClassInfo], title: str) -> Any:
    """The class ids ``data`` in the class colours, a legend of the classes present at the right."""
    from PIL import Image, ImageDraw, ImageFont

    shape = data.shape
    lut = np.full((256, 4), 255, np.uint8)
    lut[:, 3] = 0  # unknown ids and nodata: transparent
    for c in classes:
        lut[c.id] = (*c.rgb, 255)
    rgba = lut[data]
    present = [c for c in classes if c.id in set(np.unique(data).tolist())]
    font = ImageFont.load_default()
    line = 16
    legend_w = 12 + max([int(font.getlength(f"{c.id} {c.name}")) for c in present] + [0]) + 24
    top = line + 8 if title else 4
    canvas = Image.new("RGBA", (shape[1] + legend_w + 8, max(shape[0], len(present) * line) + top + 4),
                       (255, 255, 255, 255))  # fmt: skip
    canvas.alpha_composite(Image.fromarray(rgba, "RGBA"), (4, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0, 255), font=font)
    x0 = shape[1] + 12
    for i, c in enumerate(present):
        y = top + i * line
        draw.rectangle((x0, y + 2, x0 + 10, y + 12), fill=(*c.rgb, 255), outline=(0, 0, 0, 255))
        draw.text((x0 + 16, y), f"{c.id} {c.name}", fill=(0, 0, 0, 255), font=font)
    return canvas
