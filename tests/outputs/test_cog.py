"""COG writer: valid COGs (rio-cogeo), colour table, overviews, nodata, georeferencing kept,
bounded block cache, tiny rasters, and nothing left behind on errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.env import get_gdal_config
from rasterio.errors import RasterioIOError

from geoseg.errors import OutputError
from geoseg.geometry.grid import GridBox
from geoseg.geometry.window import PixelWindow
from geoseg.outputs import cog as cog_module
from geoseg.outputs.cog import cog_info, write_cog
from tests.support import RGB

COLORS = {0: (230, 25, 75), 1: (60, 180, 75), 2: (255, 225, 25), 3: (67, 99, 216)}


@pytest.fixture(scope="module")
def rgb() -> tuple[np.ndarray, GridBox]:
    with rasterio.open(RGB) as ds:
        return ds.read(), GridBox.from_dataset(ds)


@pytest.fixture(scope="module")
def classes(rgb: tuple[np.ndarray, GridBox]) -> np.ndarray:
    """Four classes from thresholds of band 1, 255 on the 32 % nodata collar."""
    data, _ = rgb
    out = np.digitize(data[0], [60, 90, 120]).astype(np.uint8)
    out[(data == 0).all(axis=0)] = 255
    return out


def reader(arr: np.ndarray, nodata: int | None = None):
    """Block reader over an in-memory array; None for all-nodata windows (like the store)."""

    def read(window: PixelWindow) -> np.ndarray | None:
        win = arr[(..., *window.slices)]
        return None if nodata is not None and (win == nodata).all() else win

    return read


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_class_cog_is_valid_with_colours_overviews_and_nodata(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], classes: np.ndarray
) -> None:
    _, grid = rgb
    out = write_cog(
        tmp_path / "classes.tif",
        grid,
        reader(classes, 255),
        count=1,
        dtype="uint8",
        nodata=255,
        block=256,
        colormap=COLORS,
        descriptions=["class"],
    )
    info = cog_info(out)
    assert info["is_valid"], info["errors"]
    assert info["colormap"] and info["overviews"] == [2, 4]
    assert info["nodata"] == 255 and info["blocksize"] == (256, 256)
    assert info["compression"] == "DEFLATE" and info["descriptions"] == ["class"]
    with rasterio.open(out) as ds:
        assert GridBox.from_dataset(ds).same_grid(grid, tol=0)
        assert ds.crs == grid.crs and ds.transform == grid.transform
        np.testing.assert_array_equal(ds.read(1), classes)
        cmap = ds.colormap(1)
        assert all(cmap[k][:3] == rgb_ for k, rgb_ in COLORS.items())
        assert cmap[255][3] == 0  # nodata entry is transparent
        # mode overviews of class ids only hold class ids (no averaged in-between values)
        ovr = ds.read(1, out_shape=(ds.height // 4, ds.width // 4))
        assert set(np.unique(ovr)) <= {0, 1, 2, 3, 255}
    assert leftovers(tmp_path) == []


def test_colour_table_is_set_when_the_file_is_created(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], classes: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # set after the first block, the colour table made GDAL log 'Cannot modify tag
    # "PhotometricInterpretation" while writing' (rasterio._env, INFO) on every class COG
    _, grid = rgb
    caplog.set_level(logging.DEBUG, logger="rasterio")
    out = write_cog(tmp_path / "classes.tif", grid[:256, :256], reader(classes[:256, :256]),
                    count=1, dtype="uint8", nodata=255, block=128, colormap=COLORS)  # fmt: skip
    gdal = [r.getMessage() for r in caplog.records if r.name.startswith("rasterio._")]
    assert not [m for m in gdal if "Photometric" in m or "signalled an error" in m], gdal
    with rasterio.open(out) as ds:
        assert ds.colorinterp == (ColorInterp.palette,) and ds.colormap(1)[1][:3] == COLORS[1]


def test_multiband_average_cog_round_trips(tmp_path: Path, rgb: tuple[np.ndarray, GridBox]) -> None:
    data, grid = rgb
    out = write_cog(
        tmp_path / "rgb.tif",
        grid,
        reader(data),
        count=3,
        dtype="uint8",
        nodata=0,
        descriptions=["red", "green", "blue"],
        overview_resampling="average",
        tags={"geoseg": "test"},
    )
    info = cog_info(out)
    assert info["is_valid"], info["errors"]
    assert info["overviews"] == [2] and info["descriptions"] == ["red", "green", "blue"]
    assert info["tags"]["geoseg"] == "test" and not info["colormap"]
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), data)


def test_scratch_codec_falls_back_where_gdal_lacks_zstd(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, grid = rgb
    cog_module.scratch_codec.cache_clear()  # probed once per process: probe again here
    assert cog_module.scratch_codec() == {"compress": "zstd", "zstd_level": 1}  # this GDAL has it
    cog_module.scratch_codec.cache_clear()
    real_open, asked = rasterio.open, []

    def no_zstd(path, mode="r", **kw):  # what a GDAL built without libzstd answers
        asked.append(kw.get("compress"))
        if kw.get("compress") == "zstd":
            raise RasterioIOError("Cannot create TIFF file due to missing codec for ZSTD.")
        return real_open(path, mode, **kw)

    monkeypatch.setattr(cog_module.rasterio, "open", no_zstd)
    assert cog_module.scratch_codec() == {"compress": "deflate", "zlevel": 1}
    out = write_cog(tmp_path / "rgb.tif", grid, reader(data), count=3, dtype="uint8", nodata=0,
                    overview_resampling="average")  # fmt: skip
    monkeypatch.undo()
    cog_module.scratch_codec.cache_clear()  # the next writes probe the real GDAL again
    assert "deflate" in asked  # the scratch file took the fallback
    assert cog_info(out)["is_valid"]
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), data)


def test_all_nodata_blocks_give_a_nodata_cog(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox]
) -> None:
    _, grid = rgb
    out = write_cog(
        tmp_path / "empty.tif",
        grid,
        lambda *w: None,
        count=1,
        dtype="uint8",
        nodata=255,
        colormap=COLORS,
    )
    assert cog_info(out)["is_valid"]
    with rasterio.open(out) as ds:
        assert (ds.read(1) == 255).all()


def test_tiny_raster_smaller_than_one_block(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], classes: np.ndarray
) -> None:
    _, grid = rgb
    tiny = grid.window(PixelWindow(300, 320, 400, 430))  # 20 x 30 px
    part = classes[300:320, 400:430]
    out = write_cog(
        tmp_path / "tiny.tif",
        tiny,
        reader(part),
        count=1,
        dtype="uint8",
        nodata=255,
        colormap=COLORS,
    )
    info = cog_info(out)
    assert info["is_valid"] and info["shape"] == (20, 30) and info["overviews"] == []
    with rasterio.open(out) as ds:
        assert ds.transform == tiny.transform
        np.testing.assert_array_equal(ds.read(1), part)


def test_block_cache_is_capped_during_the_write(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], classes: np.ndarray
) -> None:
    _, grid = rgb
    seen = []

    def read(window: PixelWindow) -> np.ndarray:
        seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
        return classes[window.slices]

    write_cog(tmp_path / "c.tif", grid, read, count=1, dtype="uint8", nodata=255, cache_mb=80)
    assert set(seen) == {80 * 2**20}  # rasterio takes bytes: 80 would have meant 80 bytes
    assert int(get_gdal_config("GDAL_CACHEMAX")) != 80 * 2**20  # restored afterwards


@pytest.mark.parametrize("where", ["missing", "file"])
def test_unwritable_destination_raises_output_error(
    tmp_path: Path, where: str, rgb: tuple[np.ndarray, GridBox]
) -> None:
    _, grid = rgb
    parent = tmp_path / "nope"
    if where == "file":
        parent.write_text("not a folder")
    with pytest.raises(OutputError, match="nope"):
        write_cog(parent / "out.tif", grid, lambda *w: None, count=1, dtype="uint8", nodata=255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if where == "missing" else ["nope"])


def test_gdal_failure_leaves_nothing_and_keeps_the_previous_file(
    tmp_path: Path,
    rgb: tuple[np.ndarray, GridBox],
    classes: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, grid = rgb
    out = write_cog(tmp_path / "c.tif", grid, reader(classes), count=1, dtype="uint8", nodata=255)
    before = out.read_bytes()

    def broken_copy(*args: object, **kwargs: object) -> None:
        raise RasterioIOError("No space left on device")

    monkeypatch.setattr(cog_module.rasterio.shutil, "copy", broken_copy)
    with pytest.raises(OutputError, match=r"c\.tif.*No space left"):
        write_cog(out, grid, reader(classes), count=1, dtype="uint8", nodata=255)
    assert out.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_reader_errors_propagate_and_leave_nothing(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], classes: np.ndarray
) -> None:
    _, grid = rgb

    def failing(window: PixelWindow) -> np.ndarray:
        if window.r0 > 0:
            raise RuntimeError("tile store unreadable")
        return classes[window.slices]

    with pytest.raises(RuntimeError, match="tile store"):
        write_cog(tmp_path / "c.tif", grid, failing, count=1, dtype="uint8", nodata=255, block=256)
    with pytest.raises(ValueError, match="shape"):
        write_cog(
            tmp_path / "c.tif",
            grid,
            lambda *w: np.zeros((5, 5), "uint8"),
            count=1,
            dtype="uint8",
            nodata=255,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": 100}, "multiple of 16"),
        ({"count": 2, "colormap": COLORS}, "colour table"),
        ({"overview_resampling": "median-ish"}, "overview_resampling"),
    ],
)
def test_argument_errors(
    tmp_path: Path, rgb: tuple[np.ndarray, GridBox], kwargs: dict, message: str
) -> None:
    _, grid = rgb
    args = {"count": 1, "dtype": "uint8", "nodata": 255} | kwargs
    with pytest.raises(ValueError, match=message):
        write_cog(tmp_path / "a.tif", grid, lambda *w: None, **args)
