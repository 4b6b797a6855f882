"""``geoseg info``: a short summary for people, ``--json`` for scripts."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import DATA, RGB, invoke

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def test_raster_summary_and_json() -> None:
    code, out, _ = invoke("info", RGB)
    assert code == 0 and not out.lstrip().startswith("{")
    text = " ".join(out.split())
    for part in ("791 x 718 px", "3 bands uint8", "1 red", "2 green", "3 blue",
                 "EPSG:32618", "UTM zone 18N", "300.038 x 300.042 metre", "nodata 0"):  # fmt: skip
        assert part in text, (part, out)
    assert len(out.splitlines()) <= 12
    code, out, _ = invoke("info", RGB, "--json")
    info = json.loads(out)
    assert code == 0 and info["count"] == 3 and info["crs"] == "EPSG:32618"


def test_raster_without_roles_shows_descriptions() -> None:
    code, out, _ = invoke("info", DATA / "alexandria" / "hag.tif")
    assert code == 0 and "1 band " in " ".join(out.split()) and "EPSG:26918" in out


def test_bundle_summary_and_json() -> None:
    code, out, _ = invoke("info", DEMO)
    assert code == 0 and not out.lstrip().startswith("{")
    text = " ".join(out.split())
    for part in ("unet", "trained", "height: ndsm", "dsm: dsm", "0 background #d9d9d9",
                 "1 building #e31a1c", "tile 64 px", "halo 64 px", "overlap 16 px",
                 "miou 0.650", "building 0.435"):  # fmt: skip
        assert part in text, (part, out)
    code, out, _ = invoke("info", DEMO, "--json")
    card = json.loads(out)
    assert code == 0 and card["architecture"] == "unet" and card["tile_size"] == 64
