"""The benchmarks' shared inputs: a real Landsat 7 mosaic of any size and an untrained U-Net."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "olinda" / "L7_ETMs.tif"  # real Landsat 7, no nodata


def landsat_scene(work: Path, size: int) -> Path:
    """``work/scene_<size>.tif``: the Landsat scene mirrored to ``size`` x ``size`` (made once)."""
    from geoseg.testing import mosaic_scene

    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        mosaic_scene(SOURCE, scene, size)
    return scene


def unet(work: Path, tile: int = 512, encoder: str | None = "resnet18", name: str = "unet-r18") -> Path:
    """An untrained U-Net bundle (6 classes) for bands 3,2,1 of the scene, normalised by its stats."""
    from geoseg.bundle.untrained import init_bundle

    args = {"encoder": encoder} if encoder else None
    return init_bundle("unet", {"image": 3}, 6, args, seed=0, tile=tile, stats_from=SOURCE,
                       stats_bands=[3, 2, 1], output=work / name)  # fmt: skip


def write_result(path: Path, result: dict) -> None:
    """Write a benchmark's JSON result, with the load average after it, and say where."""
    result["loadavg_after"] = os.getloadavg()[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
