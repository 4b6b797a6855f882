"""Service benchmark: API latency under load while a job runs, and the service's overhead on
the job against ``geoseg predict``.

Usage: python benchmarks/service.py [--size 4096] [--clients 50] [--seconds 60] [--work DIR]

On loopback only, bounded in count and time: a ``geoseg serve`` subprocess (local Dask
cluster, SQLite store) runs the same U-Net/ResNet-18 job on a SIZE² scene (real Landsat 7
pixels mirrored to size) three ways:

1. ``geoseg predict`` (a subprocess, fresh tile store): the reference wall time;
2. the service, no client polling: the job's wall time (submission -> done), once with cold
   workers (the first job after start: torch imports, model load) and once warm;
3. the service while CLIENTS threads poll the job's status and fetch map tiles (scene tiles,
   and class tiles of job 2, zooms 10-14) for SECONDS: p50/p99 latency of status and tile requests, errors,
   tiles/s, and the job's wall time under that load.

Writes benchmarks/results/service.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "olinda" / "L7_ETMs.tif"
OPTIONS = {"bands": [3, 2, 1], "vector": "none", "overwrite": True}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tile(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    y = (1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi) / 2
    return z, int((lon + 180) / 360 * n), int(y * n)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


class Client:
    def __init__(self, url: str, token: str):
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, **kw):
        r = requests.request(method, self.url + path, headers=self.headers, timeout=60, **kw)
        r.raise_for_status()
        return r.json()

    def wait(self, job_id: str, timeout: float = 1800) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.call("GET", f"/api/v1/jobs/{job_id}")
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.5)
        raise TimeoutError(job_id)


def load(url: str, token: str, job_id: str, tiles: list[str], clients: int, seconds: float,
         stop_when_done: bool = False) -> dict:  # fmt: skip
    """CLIENTS threads: status of ``job_id``, then a tile, until SECONDS have passed."""
    lat: dict[str, list[float]] = {"status": [], "tile": []}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(seed: int) -> None:
        rnd = random.Random(seed)
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() < deadline:
            for kind, path in (("status", f"/api/v1/jobs/{job_id}"), ("tile", rnd.choice(tiles))):
                t0 = time.perf_counter()
                try:
                    r = s.get(url + path, timeout=30)
                    ok = r.status_code == 200
                    err = None if ok else f"{kind} {r.status_code}"
                except requests.RequestException as exc:
                    err = f"{kind} {type(exc).__name__}"
                dt = time.perf_counter() - t0
                with lock:
                    if err:
                        errors.append(err)
                    else:
                        lat[kind].append(dt)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.perf_counter() - t0
    return {"seconds": round(wall, 1), "clients": clients,
            "status_n": len(lat["status"]), "tile_n": len(lat["tile"]),
            "status_p50_ms": round(1000 * (_pct(lat["status"], 50) or 0), 1),
            "status_p99_ms": round(1000 * (_pct(lat["status"], 99) or 0), 1),
            "tile_p50_ms": round(1000 * (_pct(lat["tile"], 50) or 0), 1),
            "tile_p99_ms": round(1000 * (_pct(lat["tile"], 99) or 0), 1),
            "tiles_per_s": round(len(lat["tile"]) / wall, 1), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:10]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-service")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service.json")
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    from geoseg.bundle.untrained import init_bundle
    from geoseg.testing import mosaic_scene

    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{a.size}.tif"
    if not scene.exists():
        mosaic_scene(SOURCE, scene, a.size)
    models = work / "models"
    bundle = models / "unet-r18"
    if not bundle.exists():
        init_bundle("unet", {"image": 3}, 6, {"encoder": "resnet18"}, seed=0, tile=512,
                    stats_from=SOURCE, stats_bands=[3, 2, 1], output=bundle)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    # 1. geoseg predict
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg", "predict", str(scene), "--model", str(bundle),
                    "--out", str(work / "cli"), "--bands", "3,2,1", "--vector", "none",
                    "--tiles-dir", str(work / "cli-tiles"), "--overwrite", "--no-progress"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    cli_wall = time.perf_counter() - t0
    print(f"geoseg predict: {cli_wall:.1f} s", flush=True)
    # 2-3. the service
    data = work / "serve-data"
    shutil.rmtree(data, ignore_errors=True)
    token = subprocess.run([sys.executable, "-m", "geoseg", "serve", "token", "create", "bench",
                            "--data", str(data)], check=True, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "geoseg", "serve", "--port", str(port),
                               "--data", str(data), "--models", str(models), "--allow-root",
                               str(work)], stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=2).json()["cluster"]["ready"]:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start; see " + str(work / "server.log"))
            time.sleep(0.3)
        c = Client(url, token)
        sc = c.call("POST", "/api/v1/scenes", json={"path": scene.name})
        body = {"model": "unet-r18", "scene": sc["id"], "options": OPTIONS}
        # the first job also waits for the workers' warm-up (torch imports) and model loads
        cold = c.wait(c.call("POST", "/api/v1/jobs", json=body)["id"])
        assert cold["state"] == "done", cold
        cold_wall = cold["finished"] - cold["created"]
        print(f"service, first job (cold workers): {cold_wall:.1f} s", flush=True)
        alone = c.wait(c.call("POST", "/api/v1/jobs", json=body)["id"])
        assert alone["state"] == "done", alone
        alone_wall = alone["finished"] - alone["created"]
        print(f"service, alone: {alone_wall:.1f} s", flush=True)
        b = sc["bounds"]
        rnd = random.Random(0)
        tiles = []
        for _ in range(2000):  # mostly distinct tiles: the server's tile cache rarely helps
            lon, lat_ = rnd.uniform(b[0], b[2]), rnd.uniform(b[1], b[3])
            z, x, y = _tile(lon, lat_, rnd.choice([10, 11, 12, 13, 14]))
            tiles.append(f"/api/v1/scenes/{sc['id']}/tiles/{z}/{x}/{y}.png")
            tiles.append(f"/api/v1/jobs/{alone['id']}/tiles/{z}/{x}/{y}.png")
        job = c.call("POST", "/api/v1/jobs", json=body)
        stats = load(url, token, job["id"], tiles, a.clients, a.seconds)
        loaded = c.wait(job["id"])
        assert loaded["state"] == "done", loaded
        loaded_wall = loaded["finished"] - loaded["created"]
        print(f"service, {a.clients} clients: {loaded_wall:.1f} s", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    result = {"size": a.size, "model": "unet-r18 (tile 512)", "options": OPTIONS,
              "cli_wall_s": round(cli_wall, 1), "service_cold_wall_s": round(cold_wall, 1),
              "service_alone_wall_s": round(alone_wall, 1),
              "service_loaded_wall_s": round(loaded_wall, 1),
              "overhead_alone": round(alone_wall / cli_wall - 1, 3),
              "overhead_loaded": round(loaded_wall / cli_wall - 1, 3), "load": stats,
              "date": time.strftime("%Y-%m-%d"), "loadavg_before": load_before,
              "loadavg_after": os.getloadavg()[0]}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    s = stats
    print(f"""
| scene | job: geoseg predict | service, first job | service alone | service + {s['clients']} clients | \
overhead alone / loaded |
|---|---|---|---|---|---|
| {a.size}² | {cli_wall:.1f} s | {cold_wall:.1f} s | {alone_wall:.1f} s | {loaded_wall:.1f} s | \
{result['overhead_alone']:+.1%} / {result['overhead_loaded']:+.1%} |

| requests ({s['seconds']} s, {s['clients']} clients) | n | p50 | p99 |
|---|---|---|---|
| status | {s['status_n']} | {s['status_p50_ms']} ms | {s['status_p99_ms']} ms |
| tile | {s['tile_n']} | {s['tile_p50_ms']} ms | {s['tile_p99_ms']} ms |

tiles/s {s['tiles_per_s']}, errors {s['errors']} {s['error_kinds']}
""")


if __name__ == "__main__":
    main()
