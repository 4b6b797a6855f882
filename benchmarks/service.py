"""Service benchmark: API latency under load while a job runs, and the service's overhead on
the job against ``geoseg predict``.

Usage: python benchmarks/service.py [--size 4096] [--clients 50] [--seconds 60] [--reps 2]
[--work DIR] [--serve-args "--tile-nice 10 ..."] [--out FILE]

On loopback only, bounded in count and time: a ``geoseg serve`` subprocess (local Dask
cluster, SQLite store) runs the same U-Net/ResNet-18 job on a SIZE² scene (real Landsat 7
pixels mirrored to size) three ways:

1. ``geoseg predict`` (a subprocess, fresh tile store): the reference wall time;
2. the service, no client polling: the job's wall time (submission -> done), once with cold
   workers (the first job after start: torch imports, model load), then REPS times warm, each
   right after a ``geoseg predict`` (interleaved: a ratio within one run, whatever else the
   machine does meanwhile);
3. ``geoseg predict`` again, then the service while CLIENTS threads poll the job's status and
   fetch map tiles (scene tiles, and class tiles of a finished job, zooms 10-14) for SECONDS:
   p50/p99 latency of status and tile requests, errors, tiles/s, and the job's wall time.

Per job it keeps the run report's timings (both paths run ``geoseg.runs.predict.predict``)
and, for the service, the pickup latency (submission -> runner started).

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


def load(url: str, token: str, job_id: str, tiles: list[str], clients: int,
         seconds: float) -> dict:  # fmt: skip
    """CLIENTS threads: status of ``job_id``, then a tile, until SECONDS have passed.

    Returns the clients, start and end (epoch s) and every request as (time it ended, kind,
    latency or None, error or None)."""
    done: list[tuple[float, str, float | None, str | None]] = []
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
                    err = None if r.status_code == 200 else f"{kind} {r.status_code}"
                except requests.RequestException as exc:
                    err = f"{kind} {type(exc).__name__}"
                dt = time.perf_counter() - t0
                with lock:
                    done.append((time.time(), kind, None if err else dt, err))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return {"clients": clients, "start": start, "end": time.time(), "requests": done}


def load_stats(run: dict, start: float, end: float) -> dict:
    """p50/p99 latencies, errors and tiles/s of the requests that ended in [start, end]."""
    part = [d for d in run["requests"] if start <= d[0] <= end]
    clients = run["clients"]
    lat = {k: [d[2] for d in part if d[1] == k and d[2] is not None] for k in ("status", "tile")}
    errors = [d[3] for d in part if d[3]]
    wall = max(end - start, 1e-9)
    return {"seconds": round(wall, 1), "clients": clients,
            "status_n": len(lat["status"]), "tile_n": len(lat["tile"]),
            "status_p50_ms": round(1000 * (_pct(lat["status"], 50) or 0), 1),
            "status_p99_ms": round(1000 * (_pct(lat["status"], 99) or 0), 1),
            "tile_p50_ms": round(1000 * (_pct(lat["tile"], 50) or 0), 1),
            "tile_p99_ms": round(1000 * (_pct(lat["tile"], 99) or 0), 1),
            "tiles_per_s": round(len(lat["tile"]) / wall, 1), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:10]}  # fmt: skip


def predict_cli(scene: Path, bundle: Path, work: Path) -> dict:
    """``geoseg predict`` in a fresh process: wall time (imports, model load included), and
    the report's timings."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg", "predict", str(scene), "--model", str(bundle),
                    "--out", str(work / "cli"), "--bands", "3,2,1", "--vector", "none",
                    "--tiles-dir", str(work / "cli-tiles"), "--overwrite", "--no-progress"],
                   check=True, env=env, capture_output=True)  # fmt: skip
    wall = time.perf_counter() - t0
    report = json.loads((work / "cli" / f"{scene.stem}_report.json").read_text())
    print(f"geoseg predict: {wall:.1f} s", flush=True)
    return {"wall_s": round(wall, 2), "timings_s": report["timings_s"]}


def service_job(c: Client, body: dict, what: str, during=None) -> dict:
    """Submit a job (``during(job id)`` runs meanwhile), wait for it: its wall time
    (submission -> done), pickup latency and the report's timings."""
    jid = c.call("POST", "/api/v1/jobs", json=body)["id"]
    extra = during(jid) if during is not None else None
    job = c.wait(jid)
    assert job["state"] == "done", job
    wall = job["finished"] - job["created"]
    if extra is not None:  # the whole load, and its part while the job ran
        extra = {"all": load_stats(extra, extra["start"], extra["end"]),
                 "during_job": load_stats(extra, max(extra["start"], job["created"]),
                                          min(extra["end"], job["finished"]))}  # fmt: skip
    print(f"service, {what}: {wall:.1f} s", flush=True)
    return {"id": jid, "wall_s": round(wall, 2),
            "pickup_s": round(job["started"] - job["created"], 3),
            "timings_s": job["result"]["scenes"][0]["timings_s"], "load": extra}  # fmt: skip


def start_server(work: Path, data: Path, models: Path, extra: list[str]) -> tuple:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "wb")  # noqa: SIM115
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    server = subprocess.Popen([sys.executable, "-m", "geoseg", "serve", "--port", str(port),
                               "--data", str(data), "--models", str(models), "--allow-root",
                               str(work), *extra], stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(url + "/health", timeout=2).json()["cluster"]["ready"]:
                return server, url, log
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("server did not start; see " + str(work / "server.log"))
        time.sleep(0.3)


def map_tiles(sc: dict, job_id: str) -> list[str]:
    """4000 tiles, mostly distinct (the server's tile cache rarely helps): scene and class."""
    b, rnd, tiles = sc["bounds"], random.Random(0), []
    for _ in range(2000):
        lon, lat_ = rnd.uniform(b[0], b[2]), rnd.uniform(b[1], b[3])
        z, x, y = _tile(lon, lat_, rnd.choice([10, 11, 12, 13, 14]))
        tiles.append(f"/api/v1/scenes/{sc['id']}/tiles/{z}/{x}/{y}.png")
        tiles.append(f"/api/v1/jobs/{job_id}/tiles/{z}/{x}/{y}.png")
    return tiles


def prepare(work: Path, size: int) -> tuple[Path, Path]:
    from geoseg.bundle.untrained import init_bundle
    from geoseg.testing import mosaic_scene

    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene_{size}.tif"
    if not scene.exists():
        mosaic_scene(SOURCE, scene, size)
    bundle = work / "models" / "unet-r18"
    if not bundle.exists():
        init_bundle("unet", {"image": 3}, 6, {"encoder": "resnet18"}, seed=0, tile=512,
                    stats_from=SOURCE, stats_bands=[3, 2, 1], output=bundle)  # fmt: skip
    return scene, bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--reps", type=int, default=2, help="interleaved predict/service pairs")
    ap.add_argument("--serve-args", default="", help="extra geoseg serve flags")
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-service")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "service.json")
    a = ap.parse_args()
    load_before = os.getloadavg()
    work = a.work.resolve()
    scene, bundle = prepare(work, a.size)
    data = work / "serve-data"
    shutil.rmtree(data, ignore_errors=True)
    token = subprocess.run([sys.executable, "-m", "geoseg", "serve", "token", "create", "bench",
                            "--data", str(data)], check=True, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    server, url, log = start_server(work, data, bundle.parent, a.serve_args.split())
    pairs, loads = [], []
    try:
        c = Client(url, token)
        sc = c.call("POST", "/api/v1/scenes", json={"path": scene.name})
        body = {"model": "unet-r18", "scene": sc["id"], "options": OPTIONS}
        # the first job also waits for the workers' warm-up (torch imports) and model loads
        cold = service_job(c, body, "first job (cold workers)")
        for _ in range(a.reps):
            pairs.append((predict_cli(scene, bundle, work), service_job(c, body, "alone")))
        tiles = map_tiles(sc, cold["id"])
        cli = predict_cli(scene, bundle, work)
        loaded = service_job(c, body, f"{a.clients} clients", lambda jid: load(
            url, token, jid, tiles, a.clients, a.seconds))  # fmt: skip
        loads.append((cli, loaded))
    finally:
        stop_server(server, log)
    report(a, load_before, cold, pairs, loads)


def stop_server(server: subprocess.Popen, log) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def report(a: argparse.Namespace, load_before: tuple, cold: dict, pairs: list, loads: list) -> None:
    """Write the JSON results and print the markdown tables."""
    cli_wall = sum(p[0]["wall_s"] for p in pairs) / len(pairs)
    alone_wall = sum(p[1]["wall_s"] for p in pairs) / len(pairs)
    (cli_l, loaded), = loads
    s, d = loaded["load"]["all"], loaded["load"]["during_job"]
    result = {"size": a.size, "model": "unet-r18 (tile 512)", "options": OPTIONS,
              "serve_args": a.serve_args, "cli_wall_s": round(cli_wall, 1),
              "service_cold_wall_s": round(cold["wall_s"], 1),
              "service_alone_wall_s": round(alone_wall, 1),
              "service_loaded_wall_s": round(loaded["wall_s"], 1),
              "overhead_alone": round(alone_wall / cli_wall - 1, 3),
              "overhead_alone_pairs": [round(sv["wall_s"] / cl["wall_s"] - 1, 3) for cl, sv in pairs],
              "overhead_loaded": round(loaded["wall_s"] / cli_l["wall_s"] - 1, 3), "load": s,
              "load_during_job": d,
              "runs": {"cold": cold, "pairs": pairs, "loaded": loads},
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"""
| scene | job: geoseg predict | service, first job | service alone | service + {s['clients']} clients \
(its predict) | overhead alone / loaded |
|---|---|---|---|---|---|
| {a.size}² | {cli_wall:.1f} s | {cold['wall_s']:.1f} s | {alone_wall:.1f} s | \
{loaded['wall_s']:.1f} s ({cli_l['wall_s']:.1f} s) | \
{result['overhead_alone']:+.1%} / {result['overhead_loaded']:+.1%} |

| requests ({s['seconds']} s, {s['clients']} clients) | n | p50 | p99 |
|---|---|---|---|
| status | {s['status_n']} | {s['status_p50_ms']} ms | {s['status_p99_ms']} ms |
| tile | {s['tile_n']} | {s['tile_p50_ms']} ms | {s['tile_p99_ms']} ms |
| status, while the job ran ({d['seconds']} s) | {d['status_n']} | {d['status_p50_ms']} ms | \
{d['status_p99_ms']} ms |
| tile, while the job ran | {d['tile_n']} | {d['tile_p50_ms']} ms | {d['tile_p99_ms']} ms |

tiles/s {s['tiles_per_s']} ({d['tiles_per_s']} while the job ran), errors {s['errors']} \
{s['error_kinds']}; load average \
{result['loadavg_before']} -> {result['loadavg_after']}
""")


if __name__ == "__main__":
    main()
