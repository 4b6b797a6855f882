"""The map: Web Mercator XYZ tiles (256 px PNG) rendered with rio-tiler from files the server
chose — a job's class COG (class colours, nodata transparent) and a scene's main raster (RGB
from its colour bands, else grey, with the 2-98 % stretch measured at registration) — and the
polygons at a clicked point. A path never comes from the request."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

# imported once here, not per request: concurrent first imports in the thread pool race
from rio_tiler.errors import NoOverviewWarning, TileOutsideBounds
from rio_tiler.io import Reader

from geoseg.config import NODATA

warnings.filterwarnings("ignore", category=NoOverviewWarning)

TILE = 256
MAX_ZOOM = 24
SCENE_ZLEVEL = 1


class Renderer:
    """Renders tiles on ``threads`` threads of its own at OS priority ``nice`` (Linux sets
    it per thread), so a job running on the same cores loses less time to the map.

    The event loop, and with it every status request, keeps its priority; a handful of
    threads (not the whole pool) keep it from waiting for the GIL behind dozens of renders."""

    def __init__(self, threads: int = 2, nice: int = 0):
        self.nice = nice
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="geoseg-tiles",
                                        initializer=self._lower_priority)  # fmt: skip

    def _lower_priority(self) -> None:
        if self.nice > 0 and sys.platform.startswith("linux"):  # elsewhere: the whole process
            with contextlib.suppress(OSError):
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.nice)

    async def __call__(self, fn: Callable[..., bytes], *args: Any) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@lru_cache(maxsize=1)
def empty_tile() -> bytes:
    """A transparent tile (outside the raster)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((TILE, TILE, 4), np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def class_colormap(classes: Sequence[dict[str, Any]]) -> dict[int, tuple[int, int, int, int]]:
    """``{class id: RGBA}`` from a card's classes; nodata (255) transparent."""
    cmap = {i: (0, 0, 0, 0) for i in range(256)}
    for c in classes:
        h = c["color"].lstrip("#")
        cmap[int(c["id"])] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap


def _check_zxy(z: int, x: int, y: int) -> bool:
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z


def _version(path: str) -> int:
    """The file's modification time: a rewritten file is never served from the cache."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:  # a URL
        return 0


def class_tile(path: str, classes: Sequence[dict[str, Any]], z: int, x: int, y: int) -> bytes:
    """A tile of a class raster in its class colours (recent tiles cached)."""
    colours = tuple((int(c["id"]), str(c["color"])) for c in classes)
    return _class_tile(path, _version(path), colours, z, x, y)


def scene_tile(path: str, bands: Sequence[int], stretch: Sequence[Sequence[float]],
               z: int, x: int, y: int) -> bytes:  # fmt: skip
    """A tile of a scene's main raster: its display bands stretched to 0-255 (recent tiles
    cached: rasters without overviews are slow to read at low zooms)."""
    return _scene_tile(path, _version(path), tuple(bands), tuple(tuple(s) for s in stretch),
                       z, x, y)  # fmt: skip


def _read_tile(path: str, z: int, x: int, y: int, indexes: Any, resampling: str) -> Any:
    """The XYZ tile of ``path`` as rio-tiler image data, or None where there is nothing."""
    if not _check_zxy(z, x, y):
        return None
    try:
        with Reader(path) as src:  # tile() checks the bounds itself: TileOutsideBounds
            return src.tile(x, y, z, tilesize=TILE, indexes=indexes, resampling_method=resampling)
    except TileOutsideBounds:
        return None


@lru_cache(maxsize=512)
def _class_tile(path: str, _version: int, colours: tuple, z: int, x: int, y: int) -> bytes:
    classes = [{"id": i, "color": c} for i, c in colours]
    img = _read_tile(path, z, x, y, 1, "nearest")
    if img is None:
        return empty_tile()
    return img.render(img_format="PNG", colormap=class_colormap(classes))


@lru_cache(maxsize=256)
def _scene_tile(path: str, _version: int, bands: tuple, stretch: tuple,
                z: int, x: int, y: int) -> bytes:  # fmt: skip
    img = _read_tile(path, z, x, y, tuple(bands), "bilinear")
    if img is None:
        return empty_tile()
    img = img.rescale(in_range=[tuple(s) for s in stretch])
    # imagery hardly compresses: zlib level 1 encodes a 256² RGBA tile in 7 ms instead of 22
    # (the default, 6), for 2 % more bytes
    return img.render(img_format="PNG", ZLEVEL=SCENE_ZLEVEL)


def features_at(path: Path, lon: float, lat: float) -> dict[str, Any]:
    """Polygons of a layer containing a WGS 84 point, as GeoJSON in WGS 84."""
    import geopandas as gpd
    import pyogrio
    from pyproj import Transformer
    from shapely.geometry import Point

    layer = path.stem if path.suffix == ".gpkg" else None
    info = pyogrio.read_info(path, layer=layer)
    crs = info.get("crs") or "EPSG:4326"
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    eps = 1e-6
    if path.suffix == ".parquet":
        gdf = gpd.read_parquet(path, bbox=(x - eps, y - eps, x + eps, y + eps))
    else:
        gdf = gpd.read_file(path, layer=layer, bbox=(x - eps, y - eps, x + eps, y + eps))
    gdf = gdf[gdf.contains(Point(x, y))]
    return json.loads(gdf.to_crs("EPSG:4326").to_json()) if len(gdf) else {
        "type": "FeatureCollection", "features": []}  # fmt: skip
