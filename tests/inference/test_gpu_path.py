"""The CUDA path ready for a GPU: batch from free memory, torch.compile as an option (falling
back with one warning), the CPU path untouched; CUDA against CPU where a GPU is present."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from pydantic import ValidationError

from geoseg.bundle.bundle import load_bundle
from geoseg.bundle.untrained import init_bundle
from geoseg.geometry.window import PixelWindow
from geoseg.inference import engine as engine_module
from geoseg.inference.engine import CompiledModel, Engine, open_engine
from geoseg.runs.job import plan_run
from geoseg.runs.options import PredictOptions
from geoseg.runtime import BATCH_CAP, auto_batch
from geoseg.scene.scene import Scene
from geoseg.tiling.plan import TilePlan
from tests.support import RGB, invoke

GiB = 2**30
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tinycnn bundle (cheap to compile) on RGB.byte.tif's statistics, tile 128."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return init_bundle("tinycnn", {"image": 3}, 4, seed=0, tile=128, stats_from=RGB, output=out)


def tiles(engine: Engine, n: int, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` normalised tiles of the RGB scene (real pixels), down a diagonal from ``seed``."""
    scene = Scene.open({"image": RGB})
    out = []
    for i in range(seed, seed + n):
        arrays, valid = scene.read(PixelWindow(100 + 40 * i, 100 + 40 * i + size,
                                               150 + 50 * i, 150 + 50 * i + size))  # fmt: skip
        out.append(engine.normalise(arrays, valid)["image"])
    return {"image": np.stack(out)}


# --- batch size from free GPU memory -------------------------------------------------------


def test_auto_batch_fills_three_quarters_of_free_memory_within_the_cap() -> None:
    assert auto_batch(8 * GiB, 1 * GiB) == 6  # 0.75 x 8 GiB / 1 GiB
    assert auto_batch(10 * GiB, 1 * GiB) == 7  # 7.5 rounded down
    assert auto_batch(10 * GiB, 1 * GiB, margin=0.5) == 5
    assert auto_batch(140 * GiB, 100 * 2**20) == BATCH_CAP == 32  # an H200 stops at the cap
    assert auto_batch(140 * GiB, 100 * 2**20, cap=64) == 64
    assert auto_batch(GiB // 2, GiB) == 1  # never below one tile
    assert auto_batch(0, GiB) == 1
    with pytest.raises(ValueError, match="per_tile_bytes=0"):
        auto_batch(GiB, 0)


def test_batch_flag_wins_cpu_keeps_one_tile_and_a_local_gpu_measures(unet_rgb: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    run = plan_run(RGB, unet_rgb, tmp_path, {}, PredictOptions(device="cuda", batch=5))
    assert run.opts.batch == 5
    assert plan_run(RGB, unet_rgb, tmp_path, {}, PredictOptions()).opts.batch == 1
    remote = PredictOptions(device="cuda", scheduler="tcp://10.0.0.1:8786")
    assert plan_run(RGB, unet_rgb, tmp_path, {}, remote).opts.batch == 8  # not measurable here
    # a GPU of this process: measured once its engine is loaded (Engine.fitting_batch)
    assert plan_run(RGB, unet_rgb, tmp_path, {}, PredictOptions(device="cuda:1")).opts.batch is None


# --- torch.compile as an option --------------------------------------------------------------


def test_compile_option_is_validated_and_a_cli_flag() -> None:
    assert PredictOptions().compile is False
    assert PredictOptions(compile=True).compile is True
    with pytest.raises(ValidationError, match="compile"):
        PredictOptions(compile="sometimes")
    code, out, _ = invoke("predict", "--help")
    assert code == 0 and "--compile / --no-compile" in out
    from geoseg.cli.options import options_from

    assert options_from({"compile": True, "device": "cpu"}).compile is True


def test_cpu_path_runs_the_model_itself(tiny: Path) -> None:
    engine = Engine(load_bundle(tiny))
    assert engine.gpu is None and engine.forward is engine.model  # no wrapper on the CPU path
    probs = engine.probabilities(tiles(engine, 2))
    assert probs.shape == (2, 4, 128, 128) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_failed_compilation_warns_once_and_runs_uncompiled(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    eager = Engine(load_bundle(tiny))
    x = tiles(eager, 3)
    expected = eager.probabilities(x)

    def broken(*args: object, **kwargs: object) -> object:
        def call(*a: object) -> None:
            raise RuntimeError("InductorError: no working C++ compiler\nmore detail")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    caplog.set_level(logging.WARNING, logger="geoseg.inference")
    engine = Engine(load_bundle(tiny), compile=True)
    assert isinstance(engine.forward, CompiledModel)
    with ThreadPoolExecutor(4) as pool:  # worker threads hit the failure at once
        results = list(pool.map(lambda _: engine.probabilities(x), range(8)))
    for probs in results:
        np.testing.assert_array_equal(probs, expected)
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "RuntimeError: InductorError: no working C++ compiler" in warnings[0].getMessage()
    assert engine.forward.compiled is None  # later calls go straight to the model


def test_compile_refused_at_once_warns_and_runs_uncompiled(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unsupported(*args: object, **kwargs: object) -> object:
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    caplog.set_level(logging.WARNING, logger="geoseg.inference")
    engine = open_engine(tiny, compile=True)
    x = tiles(engine, 1)
    np.testing.assert_array_equal(engine.probabilities(x), Engine(load_bundle(tiny)).probabilities(x))
    assert [r.levelno for r in caplog.records if "torch.compile failed" in r.getMessage()] == [
        logging.WARNING
    ]


def test_compiled_shapes_compile_one_at_a_time(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call of a shape holds the lock (torch compiles then); later ones do not."""
    held: list[bool] = []
    engine = Engine(load_bundle(tiny))

    class Spy:
        def __init__(self, model: object):
            self.model = model

        def __call__(self, x: dict) -> torch.Tensor:
            held.append(compiled._lock.locked())
            return engine.model(x)

    monkeypatch.setattr(torch, "compile", Spy)
    compiled = CompiledModel(engine.model)
    a, b = tiles(engine, 1), tiles(engine, 2)
    with torch.inference_mode():
        for x in (a, a, b, b, a):
            compiled({k: torch.from_numpy(v) for k, v in x.items()})
    assert held == [True, False, True, False, False]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU code needs a C++ compiler (make test installs g++)")
def test_predict_with_compile_gives_the_same_classes(tiny: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """``predict(compile=True)`` compiles for real (inductor, a C++ compiler on the CPU) and
    gives the same class raster as the eager model."""
    from geoseg.runs.predict import predict

    out = {}
    for compile_on in (False, True):
        opts = PredictOptions(compile=compile_on, tile=128, chunk=256, vector="none",
                              progress=False, tiles_dir=tmp_path / f"tiles-{compile_on}")  # fmt: skip
        with caplog.at_level(logging.INFO, logger="geoseg"):
            predict(RGB, tiny, tmp_path / str(compile_on), options=opts)
        with rasterio.open(tmp_path / str(compile_on) / "RGB.byte_classes.tif") as ds:
            out[compile_on] = ds.read(1)
    assert "torch.compile: the first batch" in caplog.text
    assert "torch.compile failed" not in caplog.text
    assert (out[True] == out[False]).mean() >= 0.999


# --- CUDA (skipped without a GPU) -----------------------------------------------------------


@cuda
@pytest.mark.parametrize("amp,agree", [(False, 0.999), (True, 0.98)])
def test_cuda_classes_match_cpu(unet_rgb: Path, tmp_path: Path, amp: bool, agree: float) -> None:
    from geoseg.runs.predict import predict

    out = {}
    for device in ("cpu", "cuda"):
        predict(RGB, unet_rgb, tmp_path / device, options=PredictOptions(
            device=device, amp=amp, tile=256, chunk=400, vector="none", progress=False,
            tiles_dir=tmp_path / "tiles"))  # fmt: skip
        with rasterio.open(tmp_path / device / "RGB.byte_classes.tif") as ds:
            out[device] = ds.read(1)
    valid = out["cpu"] != 255
    assert (out["cuda"] == 255).sum() == (~valid).sum()
    assert (out["cuda"][valid] == out["cpu"][valid]).mean() >= agree


@cuda
def test_cuda_engine_from_many_threads_equals_one_at_a_time(unet_rgb: Path) -> None:
    engine = Engine(load_bundle(unet_rgb, "cuda"), "cuda", amp=False)
    assert engine.gpu is not None
    batches = [tiles(engine, n, size=256, seed=i) for i, n in enumerate((1, 3, 2, 3, 1, 2))]
    alone = [engine.probabilities(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(engine.probabilities, batches * 3))
    for got, want in zip(together, alone * 3, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    cpu = Engine(load_bundle(unet_rgb)).probabilities(batches[1])
    assert (alone[1].argmax(1) == cpu.argmax(1)).mean() >= 0.999
    on_device = engine.gpu.device_probabilities(batches[2])
    np.testing.assert_allclose(engine.gpu.download(on_device).result(), alone[2], atol=1e-5)


@cuda
def test_cuda_batch_measured_from_free_memory(unet_rgb: Path) -> None:
    engine = Engine(load_bundle(unet_rgb, "cuda"), "cuda")
    per_tile = engine_module.tile_bytes(engine, 256, 256)
    assert per_tile > 256 * 256 * 3 * 4  # at least the input tile
    batch = engine.fitting_batch(256, 256)
    free = torch.cuda.mem_get_info(engine.device)[0]
    assert 1 <= batch <= BATCH_CAP
    assert batch == 1 or batch * per_tile <= free  # what it chose fits in what is free


@cuda
def test_sums_on_the_gpu_equal_the_host_sums(unet_rgb: Path) -> None:
    from geoseg.inference.sums import DeviceSums, HostSums, open_sums

    engine = Engine(load_bundle(unet_rgb, "cuda"), "cuda", amp=False)
    plan = TilePlan(400, 400, 256, 32, 400)
    windows = {t: plan.window(*t) for t in plan.chunks[(0, 0)].tiles}
    batch = tiles(engine, len(windows), size=256)
    host = HostSums(lambda r, c: windows[(r, c)], engine.num_classes, (400, 400))
    device = open_sums(lambda r, c: windows[(r, c)], engine, (400, 400))
    assert isinstance(device, DeviceSums)
    probs_host = engine.probabilities(batch)
    probs_dev = engine.gpu.device_probabilities(batch)
    for i, t in enumerate(windows):
        box = PixelWindow.at(*t, 256, 256).relative_to(PixelWindow(0, 400, 0, 400)).slices
        host.add(t, box, probs_host[i])
        device.add(t, box, probs_dev[i] if i % 2 else probs_host[i])  # a spilled host array too
    np.testing.assert_allclose(device.result(), host.result(), atol=1e-4)
