"""The root ``geoseg`` command (geoseg.cli.main): what reaches the console besides results."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from tests.support import RGB, invoke, write_geotiff


def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging as in a new ``geoseg`` process: no handler, WARNING. Called in the test's body
    (pytest adds its capturing handlers to the root logger after the fixtures ran)."""
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)


def lines(text: str) -> list[str]:
    return [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]


def test_gdal_messages_are_debug_detail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_logging(monkeypatch)
    # GDAL's errors on a truncated file reach the user once, in the validation's own words;
    # rasterio logs them at INFO ("GDAL signalled an error"): debug detail, shown with -v
    (tmp_path / "trunc.tif").write_bytes(RGB.read_bytes()[:200_000])
    (tmp_path / "c.yaml").write_text("version: 1\nname: c\nscenes:\n"
                                     "  - {id: t, modalities: {image: trunc.tif}}\n")  # fmt: skip
    code, _, err = invoke("catalog", "validate", tmp_path / "c.yaml")
    assert code == 2 and "cannot be opened as a raster" in err
    assert not [ln for ln in lines(err) if "rasterio" in ln or "GDAL" in ln], err
    code, _, err = invoke("-v", "catalog", "validate", tmp_path / "c.yaml")
    assert code == 2
    gdal = [ln for ln in lines(err) if "GDAL signalled an error" in ln]
    assert gdal and all(ln.startswith("DEBUG rasterio._") for ln in gdal), err


def test_log_lines_do_not_break_progress_bars(
    unet_rgb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_logging(monkeypatch)
    data = np.random.default_rng(0).integers(1, 255, (3, 96, 96), dtype=np.uint8)
    write_geotiff(tmp_path / "a.tif", data)
    (tmp_path / "c.yaml").write_text("version: 1\nname: c\nscenes:\n"
                                     "  - {id: a, modalities: {image: a.tif}}\n")  # fmt: skip
    (tmp_path / "p.yaml").write_text(
        f"version: 1\nname: p\ncatalog: c.yaml\nworkdir: out\nsteps:\n"
        f"  - {{type: predict, model: '{unet_rgb}', vector: none}}\n"
    )
    code, _, err = invoke("run", tmp_path / "p.yaml")
    assert code == 0 and "scenes:" in err  # the bar was shown
    # a log line starts its own line: tqdm clears the bar ("\r") first and redraws it after
    starts = [m.start() for m in re.finditer(r"(DEBUG|INFO|WARNING|ERROR) [\w.]+: ", err)]
    assert [i for i in starts if err.startswith("INFO geoseg.", i)], err  # the batch's lines
    for i in starts:
        assert i == 0 or err[i - 1] in "\r\n", repr(err[max(0, i - 80) : i + 60])
    # other libraries' INFO lines (pyogrio's record counts, numexpr's threads) are -v detail
    assert not [ln for ln in lines(err) if ln.startswith("INFO ") and " geoseg." not in ln]
