"""The dispatcher without a cluster: slots, wake-ups, and runners forked by the zygote."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

from geoseg.service.manager import JobManager
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import Store
from geoseg.service.zygote import ForkedRunner


class _Runner:
    """A runner process: alive until it is given an exit code (or a signal)."""

    pid = 0

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code

    def send_signal(self, sig: int) -> None:
        self.code = -int(sig)


def _manager(tmp_path: Path, **kw: Any) -> tuple[JobManager, Store, list[str]]:
    store = Store(tmp_path / "geoseg.db")
    manager = JobManager(ServiceSettings(data=tmp_path, models=tmp_path, **kw), store)
    manager.scheduler = "tcp://127.0.0.1:1"
    launched: list[str] = []

    def launch(job: dict) -> bool:  # what _launch does, without a process
        store.set_job(job["id"], only_if=("queued",), state="running", started=time.time(),
                      attempts=job["attempts"] + 1)  # fmt: skip
        manager.procs[job["id"]], manager.logs[job["id"]] = _Runner(), io.BytesIO()
        launched.append(job["id"])
        return True

    manager._launch = launch  # type: ignore[method-assign]
    return manager, store, launched


def test_dispatcher_queue_order_locks_cancel_and_dead_runners(tmp_path: Path) -> None:
    manager, store, launched = _manager(tmp_path, max_jobs=2)
    user = store.user_for_token(store.create_token("a"))
    ids = [store.add_job(user["id"], {"lock": k})[0]["id"] for k in ("k1", "k1", "k2", "k3")]
    manager.tick()  # two at once; the second job shares the first one's tile stores: it waits
    assert launched == [ids[0], ids[2]]
    store.set_job(ids[0], state="done")
    manager.procs[ids[0]].code = 0
    manager.tick()
    assert launched == [ids[0], ids[2], ids[1]]
    manager.procs[ids[2]].code = -9  # a runner killed without a word: its job fails, next starts
    manager.tick()
    job = store.job(ids[2])
    assert job["state"] == "failed" and "exited with code -9" in job["error"]
    assert launched[-1] == ids[3]
    store.set_job(ids[1], cancel_requested=True)  # cancelling a running job signals its runner
    manager.tick()
    assert manager.procs[ids[1]].code == -15
    manager.tick()
    assert store.job(ids[1])["state"] == "cancelled"
    assert store.requeue_running() == [ids[3]] and store.job(ids[3])["state"] == "queued"


def test_a_finished_job_frees_its_slot_while_its_runner_exits(tmp_path: Path) -> None:
    manager, store, launched = _manager(tmp_path, max_jobs=1)
    user = store.user_for_token(store.create_token("a"))
    first, second = (store.add_job(user["id"], {"lock": k})[0]["id"] for k in ("k1", "k2"))
    manager.tick()
    assert launched == [first]
    store.set_job(first, state="done", finished=time.time())  # its runner is still exiting
    manager.tick()
    assert launched == [first, second]


def test_submitting_wakes_the_dispatcher(tmp_path: Path) -> None:
    store = Store(tmp_path / "geoseg.db")
    manager = JobManager(ServiceSettings(data=tmp_path, models=tmp_path), store, poll=600)
    started = threading.Event()

    def no_cluster() -> None:
        manager.scheduler = "tcp://127.0.0.1:1"

    def launch(job: dict) -> bool:
        store.set_job(job["id"], state="running")
        started.set()
        return True

    manager._start_cluster = no_cluster  # type: ignore[method-assign]
    manager._spawn_zygote = lambda: None  # type: ignore[method-assign]
    manager._launch = launch  # type: ignore[method-assign]
    manager.start()
    try:
        time.sleep(0.5)  # the dispatcher now waits up to 600 s for its next tick
        user = store.user_for_token(store.create_token("a"))
        store.add_job(user["id"], {"lock": "k"})
        manager.wake()
        assert started.wait(30), "the job waited for the dispatcher's poll"
    finally:
        manager.stop()


def test_the_zygote_forks_a_runner_per_job(tmp_path: Path) -> None:
    """Runners are forked by one zygote (imports done once), report how their job ended and
    are reaped; a job's runner writes the job's log."""
    store = Store(tmp_path / "geoseg.db")
    manager = JobManager(ServiceSettings(data=tmp_path, models=tmp_path), store)
    manager.scheduler = "tcp://127.0.0.1:1"
    user = store.user_for_token(store.create_token("a"))
    spec = {"lock": "k", "model": "gone", "model_path": str(tmp_path / "gone"), "options": {},
            "scenes": [], "kind": "scene"}  # fmt: skip
    ids = [store.add_job(user["id"], {**spec, "label": str(i)})[0]["id"] for i in range(2)]
    manager._spawn_zygote()
    try:
        assert manager._zygote is not None
        zygote = manager._zygote.proc.pid
        runners = []
        for jid in ids:
            manager.tick()  # reaps the runner before, starts this job (one at a time)
            runner = manager.procs[jid]
            assert isinstance(runner, ForkedRunner) and runner.pid != zygote
            assert runner.wait(120) == 1  # the model is gone: the job fails, cleanly
            runners.append(runner.pid)
            job = store.job(jid)
            assert job["state"] == "failed" and job["error"], job
            assert f"job {jid} failed" in (tmp_path / "jobs" / jid / "job.log").read_text()
        manager.tick()
        assert not manager.procs  # reaped
        assert len(set(runners)) == 2 and manager._zygote.proc.pid == zygote
        assert manager._zygote.proc.poll() is None
    finally:
        manager.stop()
    assert manager._zygote is None


def test_tiles_render_on_their_own_threads_at_a_lower_priority() -> None:
    """``--tile-nice``: rendering threads run below the server's priority (Linux: per
    thread); the event loop's thread keeps its own."""
    import asyncio
    import os
    import sys

    import pytest

    from geoseg.service.tiles import Renderer

    if not sys.platform.startswith("linux"):
        pytest.skip("thread priorities are Linux's")

    def priority() -> bytes:
        return str(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).encode()

    async def main() -> tuple[int, list[int]]:
        render = Renderer(threads=2, nice=5)
        try:
            got = await asyncio.gather(*(render(priority) for _ in range(4)))
        finally:
            render.close()
        return int(priority()), [int(x) for x in got]

    loop, tiles = asyncio.run(main())
    assert loop == os.getpriority(os.PRIO_PROCESS, 0)
    assert tiles == [min(19, loop + 5)] * 4


def test_scene_tiles_are_encoded_with_fast_zlib() -> None:
    """Imagery barely compresses: scene tiles use zlib's fastest level (its header says so)."""
    import struct

    import rasterio
    from morecantile import tms
    from rasterio.warp import transform_bounds

    from geoseg.service.tiles import empty_tile, scene_tile
    from tests.support import RGB

    with rasterio.open(RGB) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    t = tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 10)
    png = scene_tile(str(RGB), [1, 2, 3], [[0, 255]] * 3, t.z, t.x, t.y)
    assert png != empty_tile()
    pos = 8  # PNG chunks after the signature: length, type, data, CRC
    while png[pos + 4 : pos + 8] != b"IDAT":
        pos += 12 + struct.unpack(">I", png[pos : pos + 4])[0]
    cmf, flg = png[pos + 8], png[pos + 9]
    assert cmf & 0x0F == 8 and flg >> 6 == 0, "zlib level above 1"  # FLEVEL 0: fastest


def test_local_cluster_is_one_process_with_a_thread_per_core() -> None:
    """Hand-over pieces stay in one process; ``--workers N`` processes share the cores."""
    from geoseg.inference.local_cluster import cluster_shape

    assert cluster_shape(None, 2) == (1, 2)
    assert cluster_shape(None, 8) == (1, 8)
    assert cluster_shape(2, 2) == (2, 1)
    assert cluster_shape(3, 8) == (3, 2)
    assert cluster_shape(5, 2) == (2, 1)  # never more threads than cores
