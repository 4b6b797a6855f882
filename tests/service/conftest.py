"""A real ``geoseg serve``: uvicorn on loopback in a subprocess, the real SQLite store, real
scenes; one server shared by the module (restarted in place by the kill -9 test)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support import DATA, RGB

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A geoseg serve process and the clients of its two users."""

    def __init__(self, tmp: Path, models: Path, roots: list[Path]):
        self.tmp, self.data, self.models, self.roots = tmp, tmp / "data", models, roots
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = tmp / "server.log"
        out = subprocess.run([sys.executable, "-m", "geoseg", "serve", "token", "create", "alice",
                              "--data", str(self.data)], capture_output=True, text=True,
                             check=True, cwd=ROOT)  # fmt: skip
        self.alice = out.stdout.strip()
        self.bob = subprocess.run([sys.executable, "-m", "geoseg", "serve", "token", "create",
                                   "bob", "--data", str(self.data)], capture_output=True,
                                  text=True, check=True, cwd=ROOT).stdout.strip()  # fmt: skip

    def start(self, timeout: float = 90) -> None:
        cmd = [sys.executable, "-m", "geoseg", "serve", "--port", str(self.port), "--data",
               str(self.data), "--models", str(self.models), "--workers", "2",
               "--max-upload-mb", "5"]  # fmt: skip
        for r in self.roots:
            cmd += ["--allow-root", str(r)]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                h = requests.get(f"{self.url}/health", timeout=2).json()
                if h["cluster"]["ready"]:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill9(self, timeout: float = 30) -> None:
        """SIGKILL the server; wait until every process it started is gone too."""
        assert self.proc is not None
        family = psutil.Process(self.proc.pid).children(recursive=True)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        _, alive = psutil.wait_procs(family, timeout=timeout)
        assert not alive, f"processes survived the server: {alive}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        family = psutil.Process(self.proc.pid).children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        _, alive = psutil.wait_procs(family, timeout=10)
        for p in alive:  # started by this server: ended by id
            p.kill()

    # ------------------------------------------------------------------ requests

    def request(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def get(self, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        return self.request("GET", path, token, **kw)

    def post(self, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, token, **kw)

    def scene(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.post("/api/v1/scenes", token, json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def submit(self, token: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        r = self.post("/api/v1/jobs", token, json=body, **kw)
        assert r.status_code in (200, 202), r.text
        return r.json()

    def job(self, token: str, job_id: str) -> dict[str, Any]:
        r = self.get(f"/api/v1/jobs/{job_id}", token)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, token: str, job_id: str, states: tuple[str, ...] = ("done", "failed", "cancelled"),
             timeout: float = 120) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(token, job_id)
            if job["state"] in states:
                return job
            time.sleep(0.2)
        log = self.get(f"/api/v1/jobs/{job_id}/log", token).text
        raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s:\n{log[-3000:]}")


@pytest.fixture(scope="module")
def tiny_rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TinyCNN bundle (3 bands, 4 classes, tile 256): quick jobs."""
    from geoseg.bundle.untrained import init_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-rgb"
    return init_bundle("tinycnn", {"image": 3}, 4, tile=256, stats_from=RGB, output=out)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, unet_rgb: Path, tiny_rgb: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("service")
    models = tmp / "models"
    models.mkdir()
    shutil.copytree(unet_rgb, models / "unet-rgb")
    shutil.copytree(tiny_rgb, models / "tiny-rgb")
    shutil.copytree(ROOT / "models" / "demo", models / "demo")
    evil = tmp / "evil"  # an allowed root holding a symlink that leads out of it
    evil.mkdir()
    (evil / "escape.tif").symlink_to(DATA / "RGB.byte.tif")
    cat = tmp / "cat"  # an allowed root with a catalog: one good scene; and one naming /etc
    (cat / "scenes").mkdir(parents=True)
    shutil.copy(RGB, cat / "scenes" / "rgb.tif")
    (cat / "catalog.yaml").write_text("version: 1\nscenes:\n  - id: first\n"
                                      "    modalities: {image: scenes/rgb.tif}\n")
    (cat / "outside.yaml").write_text("version: 1\nscenes:\n  - id: bad\n"
                                      "    modalities: {image: /etc/hostname}\n")
    srv = Server(tmp, models, [DATA, evil, cat])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
