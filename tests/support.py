"""Paths and helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.errors import GeosegError

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RGB = DATA / "RGB.byte.tif"


def shared(rel: str) -> Path:
    """A file of ../shared/data, or skip the test when the folder is absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is optional)")
    return path


def run_cli(*args: str | Path, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the geoseg CLI in a subprocess (as a user would)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "geoseg", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"geoseg {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_geotiff(path: Path, data: np.ndarray, **profile: object) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF: UTM 33N, 10 m pixels unless ``profile``
    says otherwise (any rasterio creation key: crs, transform, nodata, dtype...)."""
    base = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
            "count": data.shape[0], "dtype": data.dtype.name,
            "crs": "EPSG:32633", "transform": Affine(10, 0, 500000, 0, -10, 5800000)}  # fmt: skip
    base.update(profile)
    with rasterio.open(path, "w", **base) as ds:
        ds.write(data)
    return path


def rgb_crop(path: Path, col: int, row: int, width: int, height: int) -> Path:
    """A window of the bundled RGB scene (real Landsat, georeferenced) written to ``path``."""
    from rasterio.windows import Window

    with rasterio.open(RGB) as ds:
        win = Window(col, row, width, height)
        prof = ds.profile | {"width": width, "height": height, "transform": ds.window_transform(win)}
        with rasterio.open(path, "w", **prof) as out:
            out.write(ds.read(window=win))
    return path


def invoke(*args: object, group: click.Group | None = None) -> tuple[int, str, str]:
    """Run the geoseg CLI in-process; GeosegError -> exit 2 as in ``geoseg.cli.main.main``."""
    if group is None:
        from geoseg.cli.main import cli as group
    res = CliRunner().invoke(group, [str(a) for a in args])
    if isinstance(res.exception, GeosegError):
        from geoseg.cli.options import cli_message

        return 2, res.stdout, res.stderr + f"geoseg: error: {cli_message(res.exception)}\n"
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr
