"""``geoseg serve`` end to end: a real server (uvicorn subprocess, SQLite store, local Dask
cluster of worker processes), real scenes, real jobs. Tests run in file order on one server."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests

from geoseg.runs.options import PredictOptions
from tests.service.conftest import Server
from tests.support import DATA, RGB

pytestmark = pytest.mark.slow  # a server with a Dask cluster, kills, a browser

#: small, quick jobs: 42 chunks of 128 px, 64 tiles of 128 px
OPTS = {"tile": 128, "chunk": 128, "vector": "none"}


def _rgb_scene(server: Server, token: str) -> dict:
    return server.scene(token, {"path": "RGB.byte.tif", "root": "data"})


def _tile_runs(server: Server) -> set[Path]:
    root = server.data / "tiles"
    return {p for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def _tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    import math

    n = 2**z
    y = (1 - math.log(math.tan(math.radians(lat)) + 1 / math.cos(math.radians(lat))) / math.pi) / 2
    return z, int((lon + 180) / 360 * n), int(y * n)


def _markers(run: Path) -> int:
    return len(list((run / "done").glob("*.json")))


def _new_run(server: Server, before: set[Path], timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = _tile_runs(server) - before
        if new:
            return new.pop()
        time.sleep(0.05)
    raise AssertionError("the job created no tile store")


def _wait_markers(run: Path, n: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (k := _markers(run)) >= n:
            return k
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} chunks done in {run} after {timeout} s")


# --------------------------------------------------------------------------- security


def test_auth(server: Server) -> None:
    assert server.get("/health").status_code == 200
    for path in ("/api/v1/jobs", "/api/v1/models", "/api/v1/scenes"):
        r = server.get(path)
        assert r.status_code == 401 and "bearer token" in r.json()["detail"], r.text
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert server.get(path, "gst_wrong").status_code == 401
        assert server.get(path, headers={"Authorization": f"Basic {server.alice}"}).status_code == 401
    assert server.get("/openapi.json").json()["paths"]["/api/v1/jobs"]
    assert "access-control-allow-origin" not in server.get(
        "/api/v1/jobs", server.alice, headers={"Origin": "https://evil.example"}).headers  # fmt: skip
    models = {m["name"]: m for m in server.get("/api/v1/models", server.alice).json()}
    assert models["demo"]["inputs"] == ["height", "dsm"]
    assert [c["name"] for c in models["demo"]["classes"]] == ["background", "building"]
    assert models["unet-rgb"]["tile"] == 256
    # another user's scene and job do not exist for bob
    scene = _rgb_scene(server, server.alice)
    job = server.submit(server.alice, {"model": "tiny-rgb", "scene": scene["id"],
                                       "options": {**OPTS, "confidence": False}})  # fmt: skip
    for path in (f"/api/v1/jobs/{job['id']}", f"/api/v1/jobs/{job['id']}/files",
                 f"/api/v1/jobs/{job['id']}/events", f"/api/v1/jobs/{job['id']}/log",
                 f"/api/v1/jobs/{job['id']}/tiles/1/0/0.png", f"/api/v1/scenes/{scene['id']}",
                 f"/api/v1/scenes/{scene['id']}/tiles/1/0/0.png"):  # fmt: skip
        assert server.get(path, server.bob).status_code == 404, path
    assert server.request("DELETE", f"/api/v1/jobs/{job['id']}", server.bob).status_code == 404
    r = server.post("/api/v1/jobs", server.bob, json={"model": "unet-rgb", "scene": scene["id"]})
    assert r.status_code == 404
    assert server.get("/api/v1/jobs", server.bob).json() == []


@pytest.mark.parametrize("body", [
    {"path": "../../etc/passwd"}, {"path": "alexandria/../../../etc/passwd"},
    {"path": "/etc/passwd"}, {"path": str(RGB)}, {"path": "file:///etc/passwd"},
    {"path": "/vsicurl/https://example.com/x.tif"}, {"url": "/vsicurl/https://example.com/a.tif"},
    {"url": "file:///etc/passwd"}, {"url": "http://example.com/a.tif"},
    {"url": "https://127.0.0.1/a.tif"}, {"url": "https://localhost/a.tif"},
    {"path": "escape.tif", "root": "evil"},
    {"path": "RGB.byte.tif", "modalities": {"dsm": "../data/alexandria/dsm.tif"}},
    {"stac_item": {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None,
                   "properties": {"datetime": "2020-01-01T00:00:00Z"}, "links": [],
                   "assets": {"image": {"href": "/etc/passwd", "roles": ["data"]}}}},
])  # fmt: skip
def test_traversal_refused(server: Server, body: dict) -> None:
    r = server.post("/api/v1/scenes", server.alice, json=body)
    assert r.status_code == 403, r.text
    assert "refused" in r.json()["detail"] or "outside" in r.json()["detail"], r.text


def test_request_paths_refused(server: Server) -> None:
    scene = _rgb_scene(server, server.alice)
    for catalog in ("/etc/passwd", "../x.yaml", "file:///x.yaml"):
        r = server.post("/api/v1/jobs", server.alice, json={"model": "demo", "catalog": catalog})
        assert r.status_code == 403, r.text
    for key, value in (("tiles_dir", "/tmp"), ("scheduler", "tcp://1.2.3.4:8786")):
        r = server.post("/api/v1/jobs", server.alice,
                        json={"model": "unet-rgb", "scene": scene["id"], "options": {key: value}})
        assert r.status_code == 422 and f"options.{key}: set by the server" in r.json()["detail"]
    r = server.post("/api/v1/jobs", server.alice,
                    json={"model": "../models/demo", "scene": scene["id"]})
    assert r.status_code == 422 and "no such model" in r.json()["detail"]
    r = server.post("/api/v1/jobs", server.alice,
                    json={"model": "unet-rgb", "scene": scene["id"], "options": {"tiel": 8}})
    assert r.status_code == 422 and "did you mean 'tile'" in r.json()["detail"], r.text
    # a job's files: only names of its own listing, never a path
    job = server.get("/api/v1/jobs", server.alice).json()[0]
    for name in ("..%2F..%2Fgeoseg.db", "%2e%2e/%2e%2e/geoseg.db", "%2Fetc%2Fpasswd"):
        r = requests.get(f"{server.url}/api/v1/jobs/{job['id']}/files/{name}",
                         headers={"Authorization": f"Bearer {server.alice}"}, timeout=10)
        assert r.status_code == 404, (name, r.status_code)


def test_uploads(server: Server) -> None:
    uploads = server.data / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    for body in (b"not a GeoTIFF at all" * 100, (DATA / "README.md").read_bytes()):
        r = server.post("/api/v1/scenes?name=junk", server.alice, data=body,
                        headers={"Content-Type": "image/tiff"})
        assert r.status_code == 422 and "not a raster GDAL can read" in r.json()["detail"], r.text
    r = server.post("/api/v1/scenes", server.alice, files={"file": ("x.tif", b"GIF89a" * 1000)})
    assert r.status_code == 422, r.text
    r = server.post("/api/v1/scenes", server.alice, data=b"\0" * (6 << 20),
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert (set(uploads.iterdir()) if uploads.exists() else set()) == before  # nothing left
    # a real GeoTIFF, as multipart and as a raw body
    r = server.post("/api/v1/scenes", server.alice, files={"file": ("rgb.tif", RGB.read_bytes())})
    assert r.status_code == 201, r.text
    assert r.json()["width"] == 791 and r.json()["kind"] == "upload"
    r = server.post("/api/v1/scenes?name=raw", server.alice, data=RGB.read_bytes(),
                    headers={"Content-Type": "image/tiff"})
    assert r.status_code == 201 and r.json()["name"] == "raw"
    assert len(set(uploads.iterdir()) - before) == 2


# --------------------------------------------------------------------------- jobs


def test_submit_follow_download_identical(server: Server, tmp_path: Path, tiny_rgb: Path) -> None:
    scene = _rgb_scene(server, server.alice)
    body = {"model": "tiny-rgb", "scene": scene["id"], "options": {"tile": 128, "vector": "gpkg"}}
    job = server.submit(server.alice, body, headers={"Idempotency-Key": "k-1"})
    again = server.post("/api/v1/jobs", server.alice, json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    # Server-Sent Events up to 100 %
    events = []
    with server.get(f"/api/v1/jobs/{job['id']}/events", server.alice, stream=True) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + 120
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["state"] in ("done", "failed", "cancelled"):
                    break
            assert time.monotonic() < deadline, events[-1:]
    assert events[-1]["state"] == "done", events[-1]
    assert events[-1]["progress"]["percent"] == 100
    percents = [e["progress"].get("percent", 0) for e in events]
    assert percents == sorted(percents)
    assert any(e["progress"].get("chunks_total") for e in events)
    assert any(0 < e["progress"].get("chunks_done", 0) < (e["progress"].get("chunks_total") or 0)
               for e in events) or len(events) > 2  # fmt: skip
    done = server.job(server.alice, job["id"])
    assert done["progress"]["pixels_done"] == 718 * 791
    assert done["timings_s"][scene["name"]]["total"] > 0
    # download the class COG; a Range request reads a part of it
    files = {f["name"]: f for f in server.get(f"/api/v1/jobs/{job['id']}/files", server.alice).json()}
    name = f"{scene['name']}_classes.tif"
    assert {name, f"{scene['name']}_polygons.gpkg", f"{scene['name']}_report.json"} <= set(files)
    r = server.get(files[name]["url"], server.alice)
    assert r.status_code == 200 and r.headers["content-type"] == "image/tiff"
    got = tmp_path / "service.tif"
    got.write_bytes(r.content)
    part = server.get(files[name]["url"], server.alice, headers={"Range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == r.content[:16]
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(got))[0]
    # GDAL reads it remotely through /vsicurl/ (HEAD, then Range requests)
    with rasterio.Env(GDAL_HTTP_HEADERS=f"Authorization: Bearer {server.alice}",
                      GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_USE_HEAD="YES"), \
            rasterio.open(f"/vsicurl/{server.url}{files[name]['url']}") as remote, \
            rasterio.open(got) as local:  # fmt: skip
        assert remote.overviews(1) == local.overviews(1)
        np.testing.assert_array_equal(remote.read(1, out_shape=(90, 99)), local.read(1, out_shape=(90, 99)))
    # the same job through geoseg predict's function, in this process (threads, not the cluster)
    from geoseg.runs.predict import predict

    opts = PredictOptions(tile=128, tiles_dir=tmp_path / "tiles", progress=False, vector="none")
    ref = predict(RGB, tiny_rgb, tmp_path / "ref", options=opts)
    with rasterio.open(got) as a, rasterio.open(ref["outputs"]["classes"]) as b:
        assert a.profile["transform"] == b.profile["transform"] and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())
    # tiles: class colours from the card, transparent outside; the input's tiles
    import io

    from PIL import Image

    lon = (scene["bounds"][0] + scene["bounds"][2]) / 2
    lat = (scene["bounds"][1] + scene["bounds"][3]) / 2
    z, x, y = _tile_at(lon, lat, 8)
    t = server.get(f"/api/v1/jobs/{job['id']}/tiles/{z}/{x}/{y}.png", server.alice)
    assert t.status_code == 200 and t.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(t.content)).convert("RGBA"))
    colours = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in
               (c["color"] for c in done["classes"])}  # fmt: skip
    seen = {tuple(p[:3]) for p in img.reshape(-1, 4) if p[3] == 255}
    assert seen and seen <= colours, seen - colours
    assert img[..., 3].min() == 0  # the scene does not fill the tile
    s = server.get(f"/api/v1/scenes/{scene['id']}/tiles/{z}/{x}/{y}.png", server.alice)
    assert s.status_code == 200 and Image.open(io.BytesIO(s.content)).size == (256, 256)
    # a polygon at the scene's centre
    fc = server.get(f"/api/v1/jobs/{job['id']}/features?lon={lon}&lat={lat}", server.alice).json()
    assert len(fc["features"]) == 1 and fc["features"][0]["properties"]["class_name"]


@pytest.fixture(scope="module")
def unet_classes(tmp_path_factory: pytest.TempPathFactory, unet_rgb: Path) -> np.ndarray:
    """The U-Net's class raster of RGB.byte.tif by predict() in this process (default chunk):
    what the service's interrupted runs (other chunk sizes, other tile stores) must give."""
    from geoseg.runs.predict import predict

    tmp = tmp_path_factory.mktemp("unet-ref")
    opts = PredictOptions(tiles_dir=tmp / "tiles", progress=False, vector="none", confidence=False)
    with rasterio.open(predict(RGB, unet_rgb, tmp, options=opts)["outputs"]["classes"]) as ds:
        return ds.read()


def _classes(server: Server, job: dict) -> np.ndarray:
    out = job["result"]["scenes"][0]["outputs"]["classes"]
    with rasterio.open(server.data / "jobs" / job["id"] / "out" / out) as ds:
        return ds.read()


def test_cancel_then_resubmit_resumes(server: Server, unet_classes: np.ndarray) -> None:
    scene = _rgb_scene(server, server.alice)
    body = {"model": "unet-rgb", "scene": scene["id"], "options": {"chunk": 64, "vector": "none"}}
    before = _tile_runs(server)
    job = server.submit(server.alice, body)
    run = _new_run(server, before)
    _wait_markers(run, 3)
    total = len(range(0, 718, 64)) * len(range(0, 791, 64))
    deadline = time.monotonic() + 10  # progress: chunk by chunk, with an ETA
    while (p := server.job(server.alice, job["id"])["progress"]).get("chunks_done", 0) < 2:
        assert time.monotonic() < deadline, p
        time.sleep(0.1)
    assert p["stage"] == "chunks" and p["chunks_total"] == total and p["chunks_done"] < total, p
    assert p["eta_s"] is not None and 0 < p["percent"] < 95 and 0 < p["pixels_done"] < 718 * 791
    r = server.request("DELETE", f"/api/v1/jobs/{job['id']}", server.alice)
    assert r.status_code == 202, r.text
    t0 = time.monotonic()
    cancelled = server.wait(server.alice, job["id"], timeout=30)
    assert cancelled["state"] == "cancelled", cancelled
    stopped = time.monotonic() - t0
    at_stop = _markers(run)
    time.sleep(1.5)
    assert _markers(run) == at_stop, "chunks kept being taken after the cancellation"
    assert stopped < 10
    assert 0 < at_stop < total
    assert server.request("DELETE", f"/api/v1/jobs/{job['id']}", server.alice).status_code == 409
    again = server.submit(server.alice, body)
    done = server.wait(server.alice, again["id"])
    assert done["state"] == "done", done
    chunks = done["result"]["scenes"][0]["chunks"]
    assert chunks["total"] == total and chunks["resumed"] == at_stop
    assert chunks["computed"] == total - at_stop
    np.testing.assert_array_equal(_classes(server, done), unet_classes)


def test_kill9_restart_resumes_without_recomputing(server: Server, unet_classes: np.ndarray) -> None:
    scene = _rgb_scene(server, server.alice)
    body = {"model": "unet-rgb", "scene": scene["id"], "options": {"chunk": 128, "vector": "none"}}
    before = _tile_runs(server)
    job = server.submit(server.alice, body)
    run = _new_run(server, before)
    _wait_markers(run, 3)
    server.kill9()  # the server, its runner and the cluster's workers: all gone
    at_kill = _markers(run)
    total = len(range(0, 718, 128)) * len(range(0, 791, 128))
    assert 0 < at_kill < total, (at_kill, total)
    server.start()
    done = server.wait(server.alice, job["id"])
    assert done["state"] == "done" and done["attempts"] == 2, done
    chunks = done["result"]["scenes"][0]["chunks"]
    assert chunks["resumed"] == at_kill and chunks["computed"] == total - at_kill, chunks
    # identical to an uninterrupted run
    np.testing.assert_array_equal(_classes(server, done), unet_classes)


def test_several_scenes_run_as_a_batch(server: Server) -> None:
    a, b = _rgb_scene(server, server.alice), _rgb_scene(server, server.alice)
    job = server.submit(server.alice, {"model": "tiny-rgb", "scenes": [a["id"], b["id"]],
                                       "options": OPTS, "name": "two"})  # fmt: skip
    done = server.wait(server.alice, job["id"])
    assert done["state"] == "done" and done["label"] == "two", done
    names = [s["name"] for s in done["result"]["scenes"]]
    assert names == ["RGB.byte", "RGB.byte-2"] and done["progress"]["scenes_done"] == 2
    files = {f["name"] for f in server.get(f"/api/v1/jobs/{job['id']}/files", server.alice).json()}
    assert {"batch_report.json", "RGB.byte-2/RGB.byte-2_classes.tif"} <= files
    t = server.get(f"/api/v1/jobs/{job['id']}/tiles/0/0/0.png?scene=RGB.byte-2", server.alice)
    assert t.status_code == 200
    assert server.get(f"/api/v1/jobs/{job['id']}/tiles/0/0/0.png?scene=nope",
                      server.alice).status_code == 404  # fmt: skip


def test_catalog_job(server: Server) -> None:
    r = server.post("/api/v1/jobs", server.alice, json={"model": "tiny-rgb", "catalog": "outside.yaml"})
    assert r.status_code in (403, 422) and "outside" in r.json()["detail"], r.text
    job = server.submit(server.alice, {"model": "tiny-rgb", "catalog": "catalog.yaml",
                                       "root": "cat", "options": OPTS})  # fmt: skip
    done = server.wait(server.alice, job["id"])
    assert done["state"] == "done" and done["kind"] == "catalog", done
    assert [s["name"] for s in done["result"]["scenes"]] == ["first"]


def test_failed_job_keeps_error_and_log(server: Server) -> None:
    scene = _rgb_scene(server, server.alice)
    job = server.submit(server.alice, {"model": "tiny-rgb", "scene": scene["id"],
                                       "options": {**OPTS, "bands": [1, 2, 9]}})  # fmt: skip
    failed = server.wait(server.alice, job["id"])
    assert failed["state"] == "failed" and "9" in failed["error"], failed
    log = server.get(f"/api/v1/jobs/{job['id']}/log", server.alice).text
    assert "Traceback" in log and "failed" in log
    assert server.get("/health").status_code == 200


# --------------------------------------------------------------------------- the page


def test_web_page_in_a_browser(server: Server, tmp_path: Path) -> None:
    driver = _browser(tmp_path)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    scene = server.scene(server.alice, {"path": "alexandria/hag.tif", "root": "data",
                                        "modalities": {"dsm": "alexandria/dsm.tif"}})  # fmt: skip
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "token").send_keys(server.alice)
        driver.find_element(By.ID, "signin").click()
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "whoami").text == "alice")
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) >= 2)
        Select(driver.find_element(By.ID, "model")).select_by_value("demo")
        wait.until(lambda d: any(o.get_attribute("value") == scene["id"]
                                 for o in Select(d.find_element(By.ID, "scene")).options))
        Select(driver.find_element(By.ID, "scene")).select_by_value(scene["id"])
        driver.find_element(By.ID, "submit").click()
        status = driver.find_element(By.ID, "detail-status")
        WebDriverWait(driver, 120, poll_frequency=0.2).until(
            lambda d: status.get_attribute("data-state") in ("done", "failed"))
        assert status.get_attribute("data-state") == "done", status.text
        assert status.get_attribute("data-percent") == "100" and status.text.startswith("100 %")
        driver.execute_script("const o = document.getElementById('opacity'); o.value = 100;"
                              "o.dispatchEvent(new Event('input'));")
        wait.until(lambda d: d.execute_script("return window.geoseg.predictionReady === true"))
        legend = driver.find_element(By.ID, "legend").text
        assert "background" in legend and "building" in legend
        files = driver.find_element(By.ID, "files").text
        assert "hag_classes.tif" in files
        png = tmp_path / "page.png"
        driver.save_screenshot(str(png))
    finally:
        driver.quit()
    from PIL import Image

    px = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    for colour in ((0xD9, 0xD9, 0xD9), (0xE3, 0x1A, 0x1C)):  # background, building
        n = int((np.abs(px.astype(int) - colour).max(axis=1) <= 2).sum())
        assert n > 200, (colour, n)
    shutil.copy(png, server.tmp / "page.png")


def _browser(tmp_path: Path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("no chromium + chromium-driver here (apt-get install chromium "
                    "chromium-driver; make test installs them where it can)")  # fmt: skip
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--window-size=1200,800", f"--user-data-dir={tmp_path / 'chrome'}"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(driver_bin))
