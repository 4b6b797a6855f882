"""Distributed runs on real local processes (127.0.0.1 only): identical output, worker loss."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.testing import mosaic_scene
from tests.support import RGB, run_cli

pytestmark = pytest.mark.slow  # real Dask clusters: worker processes start per test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path):
    """A `dask scheduler` and two `dask worker` processes (1 thread each) on loopback."""
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [open(logs / name, "w") for name in ("scheduler.log", "worker0.log", "worker1.log")]  # noqa: SIM115
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
        stdout=files[0], stderr=subprocess.STDOUT, env=env)]  # fmt: skip
    time.sleep(2)
    workers = []
    for i in range(2):
        p = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", addr, "--nthreads", "1",
             "--nworkers", "1", "--host", "127.0.0.1", "--no-nanny", "--name", f"w{i}",
             "--dashboard-address", "127.0.0.1:0"],
            stdout=files[i + 1], stderr=subprocess.STDOUT, env=env)  # fmt: skip
        workers.append(p)
    procs += workers
    from distributed import Client

    with Client(addr, timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)
    yield addr, workers
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    for f in files:
        f.close()


def classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_distributed_equals_local_and_loads_model_once_per_worker(
    cluster: tuple[str, list], unet_rgb: Path, tmp_path: Path
) -> None:
    addr, _ = cluster
    args = ["predict", RGB, "--model", unet_rgb, "--chunk", "256", "--no-progress"]
    run_cli(*args, "--out", tmp_path / "local", "--tiles-dir", tmp_path / "t1")
    run_cli(*args, "--out", tmp_path / "dist", "--tiles-dir", tmp_path / "t2",
            "--scheduler", addr)  # fmt: skip
    np.testing.assert_array_equal(classes(tmp_path / "local" / "RGB.byte_classes.tif"),
                                  classes(tmp_path / "dist" / "RGB.byte_classes.tif"))  # fmt: skip
    run_cli(*args, "--out", tmp_path / "lc", "--tiles-dir", tmp_path / "t3", "--scheduler", "local")
    np.testing.assert_array_equal(classes(tmp_path / "local" / "RGB.byte_classes.tif"),
                                  classes(tmp_path / "lc" / "RGB.byte_classes.tif"))  # fmt: skip
    import geopandas as gpd

    a = gpd.read_file(tmp_path / "local" / "RGB.byte_polygons.gpkg", layer="RGB.byte_polygons")
    b = gpd.read_file(tmp_path / "dist" / "RGB.byte_polygons.gpkg", layer="RGB.byte_polygons")
    assert len(a) == len(b) and a.area_m2.sum() == pytest.approx(b.area_m2.sum())
    from distributed import Client

    with Client(addr) as c:
        loads = c.run(lambda dask_worker: dask_worker.plugins["geoseg"].cache.loads)
    # 16 chunks ran over two workers: each loaded the model at most once
    assert sum(loads.values()) <= 2 and all(v <= 1 for v in loads.values())


def test_killing_a_worker_mid_run_still_gives_identical_output(
    cluster: tuple[str, list], unet_rgb: Path, tmp_path: Path
) -> None:
    addr, workers = cluster
    scene = mosaic_scene(RGB, tmp_path / "big.tif", 1024)
    args = ["predict", scene, "--model", unet_rgb, "--chunk", "128", "--tile", "128",
            "--overlap", "16", "--no-progress", "--vector", "none"]  # fmt: skip
    run_cli(*args, "--out", tmp_path / "ref", "--tiles-dir", tmp_path / "tref")
    cmd = [sys.executable, "-m", "geoseg.cli.main", *map(str, args), "--out", str(tmp_path / "res"),
           "--tiles-dir", str(tmp_path / "tiles"), "--scheduler", addr]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((tmp_path / "tiles").glob("*/done/*.json"))
        if len(done) >= 8:
            break
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = json.loads((tmp_path / "res" / "big_report.json").read_text())
    assert report["chunks"]["total"] == 64
    np.testing.assert_array_equal(classes(tmp_path / "res" / "big_classes.tif"),
                                  classes(tmp_path / "ref" / "big_classes.tif"))  # fmt: skip


def test_the_local_cluster_has_one_process_and_glibc_s_own_trim_threshold() -> None:
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 made a U-Net tile 40 % slower on a worker
    from geoseg.inference.local_cluster import start_local_cluster

    cluster, client = start_local_cluster(1, 2)
    try:
        env = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                  os.environ.get("OMP_NUM_THREADS")))  # fmt: skip
        assert list(env.values()) == [(None, "1")]
        assert [w.nthreads for w in cluster.workers.values()] == [2]
    finally:
        client.close()
        cluster.close()
