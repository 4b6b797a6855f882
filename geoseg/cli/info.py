"""`geoseg info`: what a raster or a bundle holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg.bundle.bundle import CARD, read_card
from geoseg.errors import InputError


def describe(path: str) -> dict[str, Any]:
    """What a raster (size, bands, CRS, grid, masks) or a bundle (its card) holds."""
    p = Path(path)
    if p.is_dir() or (p.is_file() and p.suffix in {".pt", ".pth", ".ckpt", ".pkl"}):
        card = read_card(p)
        out = card.model_dump(mode="json")
        out["bundle"] = str(p / CARD)
        return out
    import rasterio
    from rasterio.errors import RasterioIOError

    from geoseg.geometry.grid import GridBox

    if not p.exists() and "://" not in path:
        raise InputError(f"{path}: file not found; check the path")
    try:
        with rasterio.open(path) as ds:
            g = GridBox.from_dataset(ds)
            return {
                "path": path, "driver": ds.driver, "width": ds.width, "height": ds.height,
                "count": ds.count, "dtypes": list(ds.dtypes), "nodata": ds.nodata,
                "crs": ds.crs.to_string() if ds.crs else None,
                "transform": list(g.transform[:6]), "bounds": list(g.bounds),
                "resolution": list(g.resolution),
                "descriptions": list(ds.descriptions), "block_shapes": [list(b) for b in ds.block_shapes],
                "overviews": ds.overviews(1),
                "mask_flags": [[f.name for f in fl] for fl in ds.mask_flag_enums],
            }  # fmt: skip
    except RasterioIOError as exc:
        raise InputError(f"{path}: not a raster or bundle ({exc})") from None
