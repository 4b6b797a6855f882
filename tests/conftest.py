"""Shared fixtures: vendored real data, optional ../shared data, small bundles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from geoseg.init import init_bundle

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RGB = DATA / "RGB.byte.tif"


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Modules that train or compare many models: one torch thread while they run (tests
    share the two cores with other processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never leave the machine (weights or data from hubs must not be needed).

    Loopback stays allowed for the local Dask cluster tests.
    """
    import socket

    real_connect = socket.socket.connect

    def guard(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else "unix"
        if host not in {"unix", "localhost", "::1"} and not str(host).startswith("127."):
            raise RuntimeError(f"network access to {host} in tests")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guard)


def shared(rel: str) -> Path:
    """A file of ../shared/data, or skip the test when the folder is absent."""
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/data is optional)")
    return path


@pytest.fixture(scope="session")
def unet_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained U-Net/ResNet-18 bundle: 3 bands, 4 classes, tile 256, stats of RGB.byte.tif."""
    out = tmp_path_factory.mktemp("bundles") / "unet-rgb"
    return init_bundle("unet", {"image": 3}, 4, seed=0, tile=256, stats_from=RGB, output=out)


def run_cli(*args: str | Path, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the geoseg CLI in a subprocess (as a user would)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"geoseg {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
