"""A disk that fills (or a file size limit) while writing the tile store, a COG, the polygons
or the report: one line naming the path and the space needed, exit 2, nothing half-written,
the tile store resumable once there is space."""

from __future__ import annotations

import errno
import json
import resource
from pathlib import Path

import pytest
from rasterio.errors import RasterioIOError

from geoseg._files import space_problem, write_errno
from geoseg.bundle.untrained import init_bundle
from geoseg.runs.job import plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runs.space import check_free_space
from tests.support import invoke, rgb_crop


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("disk")
    rgb_crop(d / "scene.tif", 200, 250, 256, 256)
    model = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=d / "model")
    return {"dir": d, "scene": d / "scene.tif", "model": model}


def _args(s: dict, out: Path, tiles: Path) -> list[str]:
    return ["predict", str(s["scene"]), "--model", str(s["model"]), "--out", str(out),
            "--tiles-dir", str(tiles), "--chunk", "128", "--tile", "64", "--no-progress",
            "--workers", "1"]  # fmt: skip


def _hidden(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob(".*")]


def test_file_size_limit_in_the_tile_store_then_resume(setup: dict) -> None:
    """A real write failure from the OS (RLIMIT_FSIZE: EFBIG; Python ignores SIGXFSZ), then
    the same command with room to write. In this process: a subprocess would prove nothing
    more and cost seconds of imports."""
    out, tiles = setup["dir"] / "o1", setup["dir"] / "t1"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        code, _, err = invoke(*_args(setup, out, tiles))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert f"{tiles.resolve()}/scene-" in last and "the tile store cannot be written" in last
    assert "(EFBIG)" in last and "needed" in last and "free in" in last
    assert "run the same command again: it resumes" in last
    assert not list(out.iterdir()) and not _hidden(out, tiles)  # nothing half-written
    assert not list(tiles.glob("*.lock"))
    code, _, err = invoke(*_args(setup, out, tiles))
    assert code == 0, err
    report = json.loads((out / "scene_report.json").read_text())
    assert report["chunks"]["computed"] + report["chunks"]["resumed"] == 4


@pytest.mark.parametrize("target, output", [
    ("rasterio.shutil.copy", "scene_classes.tif"),
    ("pyogrio.write_arrow", "scene_polygons.gpkg"),
    ("geoseg.runs.predict.atomic_write_text", "scene_report.json"),
])  # fmt: skip
def test_disk_full_while_writing_an_output(setup: dict, monkeypatch: pytest.MonkeyPatch,
                                           target: str, output: str) -> None:  # fmt: skip
    out, tiles = setup["dir"] / "o2", setup["dir"] / "t2"
    code, _, _ = invoke(*_args(setup, out, tiles))  # a finished store to resume from
    assert code == 0
    (out / "scene_report.json").unlink()
    (out / output).unlink(missing_ok=True)
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}

    def full(*args: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(target, full)
        code, _, err = invoke(*_args(setup, out, tiles))
    last = err.strip().splitlines()[-1]
    assert code == 2 and f"{out / output}: cannot be written" in last
    assert "No space left on device (ENOSPC)" in last and "needed" in last
    assert "free in" in last and "\n" not in last.strip()
    assert not (out / output).exists() and not _hidden(out, tiles)  # nothing half-written
    # what this attempt wrote before the failure is gone too: no incomplete set of outputs
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == {
        p: t for p, t in before.items() if p.exists()}
    code, _, _ = invoke(*_args(setup, out, tiles))  # space again: outputs from the store
    report = json.loads((out / "scene_report.json").read_text())
    assert code == 0 and report["chunks"]["computed"] == 0 and report["chunks"]["resumed"] == 4


def test_gdal_full_disk_messages_are_recognised(tmp_path: Path) -> None:
    gdal = RasterioIOError("Read failed")
    gdal.__cause__ = RuntimeError("x.tif: Free disk space available is 10 bytes, whereas 2000 "
                                  "are at least necessary")  # fmt: skip
    assert write_errno(gdal) == errno.ENOSPC
    text = space_problem(gdal, tmp_path, need=2_500_000)
    assert text.startswith("No space left on device (ENOSPC); about 2.5 MB needed, ")
    assert write_errno(OSError(errno.EROFS, "Read-only file system")) == errno.EROFS
    assert write_errno(ValueError("bad value")) is None


def test_a_rough_free_space_check_warns_before_the_run(setup: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    run = plan_run(setup["scene"], setup["model"], setup["dir"] / "o3", {},
                   PredictOptions(tiles_dir=setup["dir"] / "t3", progress=False))  # fmt: skip
    assert check_free_space(run) == []
    monkeypatch.setattr("geoseg.runs.space.free_bytes", lambda folder: 1000)
    (warning,) = check_free_space(run)  # one file system: one warning
    assert "needed (rough estimate), 1.0 kB free" in warning and "--tiles-dir" in warning
    assert str(setup["dir"] / "o3") in warning
