"""Shared fixtures: vendored real data, optional ../shared data, small bundles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.bundle.untrained import init_bundle
from tests.support import RGB, write_geotiff


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


@pytest.fixture(scope="session")
def unet_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained U-Net/ResNet-18 bundle: 3 bands, 4 classes, tile 256, stats of RGB.byte.tif."""
    out = tmp_path_factory.mktemp("bundles") / "unet-rgb"
    return init_bundle("unet", {"image": 3}, 4, seed=0, tile=256, stats_from=RGB, output=out)


@pytest.fixture
def make_geotiff(tmp_path: Path):
    """Factory writing GeoTIFFs into the test's folder: ``make_geotiff("a.tif", data, **profile)``."""

    def make(name: str, data: np.ndarray, **profile: object) -> Path:
        return write_geotiff(tmp_path / name, data, **profile)

    return make
