"""The job manager: the Dask cluster the jobs run on, and the dispatcher thread that starts a
runner process per job (at most ``--max-jobs`` at once, in submission order; forked by a
zygote that holds the imports, so a job starts at once), passes cancellations on, and records
runners that died without a word.

The API process never runs a model: chunks run on the cluster's worker processes (a
``LocalCluster`` of one worker process with a thread per core by default — never more
compute threads than cores — or an existing cluster at ``--scheduler tcp://...``), the rest of
a job (planning, COGs, polygons) in its runner process.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from geoseg.runtime import available_cores
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import Store, StoreError
from geoseg.service.zygote import Zygote

log = logging.getLogger(__name__)

def _warm_up() -> None:
    """Import what chunk tasks need (torch, the model registry) in a worker."""
    import geoseg.inference.chunks
    import geoseg.inference.cluster
    import geoseg.models  # noqa: F401


class JobManager:
    """Cluster + dispatcher of one server (one per data folder: a lock file says so)."""

    def __init__(self, settings: ServiceSettings, store: Store, poll: float = 0.2):
        self.settings, self.store, self.poll = settings, store, poll
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        self.signalled: set[str] = set()
        self.scheduler: str | None = None
        self._zygote: Zygote | None = None  # forks runners with their imports done
        self.cluster: Any = None
        self.client: Any = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a job was submitted or cancelled: tick now
        self._released = threading.Event()  # runners are gone: the dispatcher thread may end
        self._tick_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._lock_fh: Any = None

    # ------------------------------------------------------------------ life

    def lock_data(self) -> None:
        """Hold ``DATA/server.lock``: a second server on the same data folder is refused."""
        path = self.settings.data / "server.lock"
        fh = open(path, "a+")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise StoreError(f"{self.settings.data}: another geoseg serve uses this data folder; "
                             "stop it or choose another --data") from None  # fmt: skip
        self._lock_fh = fh

    def start(self) -> None:
        """Requeue the jobs a dead server left running, then start the cluster and dispatch
        (in a thread: the API answers while the cluster starts)."""
        requeued = self.store.requeue_running()
        if requeued:
            log.info("requeued %d job(s) left running by the previous server: %s",
                     len(requeued), ", ".join(requeued))  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="geoseg-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Hand running jobs back to the queue (SIGINT to their runners), stop the cluster.

        The dispatcher thread lives until the runners are gone: they die with the thread that
        started them (PR_SET_PDEATHSIG), and must first hand their jobs back."""
        self._stop.set()
        self._wake.set()
        with self._tick_lock:  # a tick under way ends first
            pass
        for proc in list(self.procs.values()):
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for jid, proc in list(self.procs.items()):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self.store.set_job(jid, only_if=("running",), state="queued", pid=None)
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()
        self._released.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close_cluster()
        for fh in self.logs.values():
            fh.close()
        if self._lock_fh is not None:
            self._lock_fh.close()

    def _start_cluster(self) -> None:
        if self.settings.scheduler != "local":
            self.scheduler = self.settings.scheduler
            return
        from geoseg.inference.local_cluster import cluster_shape, start_local_cluster

        n, threads = cluster_shape(self.settings.workers, available_cores())
        self.cluster, self.client = start_local_cluster(n, threads)
        # load torch and the inference code in the workers now, not in the first job
        threading.Thread(target=self.client.run, args=(_warm_up,), daemon=True,
                         name="geoseg-warm-up").start()  # fmt: skip
        self.scheduler = self.cluster.scheduler_address
        log.info("local Dask cluster: %d worker process(es) x %d thread(s) at %s", n, threads,
                 self.scheduler)  # fmt: skip

    def _close_cluster(self) -> None:
        for thing in (self.client, self.cluster):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    # ------------------------------------------------------------------ dispatching

    def _run(self) -> None:
        try:
            self._start_cluster()
        except Exception as exc:
            self.error = f"cannot start the Dask cluster: {exc}"
            log.error("%s; jobs stay queued", self.error)
            return
        self._spawn_zygote()
        while not self._stop.is_set():
            try:
                with self._tick_lock:
                    if not self._stop.is_set():
                        self.tick()
            except Exception:  # a full disk or a locked store must not end dispatching
                log.exception("dispatcher: error (retrying)")
                self._stop.wait(2.0)
            self._wake.wait(self.poll)
            self._wake.clear()
        self._released.wait()

    def wake(self) -> None:
        """Tick now, not at the next poll (the API calls it when a job is submitted or
        cancelled: the job starts, or its runner is told, at once)."""
        self._wake.set()

    def tick(self) -> None:
        """Reap finished runners, pass cancellations on, start queued jobs."""
        self._reap()
        running = self.store.jobs(states=("running",))
        # a runner whose job is over (done, failed, cancelled) holds no slot while it exits
        # (interpreter teardown with torch loaded takes a second or more)
        active = {j["id"] for j in running} & set(self.procs)
        for job in running:
            jid = job["id"]
            if job["cancel_requested"] and jid in self.procs and jid not in self.signalled:
                self.signalled.add(jid)
                with contextlib.suppress(OSError):
                    self.procs[jid].send_signal(signal.SIGTERM)
        if len(active) >= self.settings.max_jobs or self.scheduler is None:
            return
        busy = {j["spec"].get("lock") for j in running}
        for job in self.store.jobs(states=("queued",)):
            if len(active) >= self.settings.max_jobs:
                break
            if job["spec"].get("lock") in busy:
                continue  # the same scenes and model are running: their tile stores are in use
            if self._launch(job):
                busy.add(job["spec"].get("lock"))
                active.add(job["id"])

    def _launch(self, job: dict[str, Any]) -> bool:
        jid = job["id"]
        if not self.store.set_job(jid, only_if=("queued",), state="running",
                                  started=job["started"] or time.time(),
                                  attempts=job["attempts"] + 1, error=None,
                                  progress={**(job["progress"] or {}), "stage": "starting"}):  # fmt: skip
            return False  # cancelled meanwhile
        folder = self.settings.job_dir(jid)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fh = open(folder / "job.log", "ab")  # noqa: SIM115 - closed when the runner ends
        except OSError as exc:
            self.store.set_job(jid, state="failed", finished=time.time(),
                               error=f"OutputError: {folder}: cannot write the job folder "
                                     f"({exc.strerror}); check the data folder's space and "
                                     "permissions")  # fmt: skip
            return False
        proc: Any = None
        if self._zygote is not None:
            proc = self._zygote.fork(jid)
            if proc is None:  # it died: start another for the next job
                self._zygote = None
                self._spawn_zygote()
        if proc is None:
            proc = subprocess.Popen([*self._runner_cmd(), "--job", jid], stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        self.procs[jid], self.logs[jid] = proc, fh
        self.store.set_job(jid, pid=proc.pid)
        log.info("job %s: started runner %d", jid, proc.pid)
        return True

    def _runner_cmd(self) -> list[str]:
        cmd = [sys.executable, "-m", "geoseg.service.runner", "--data", str(self.settings.data),
               "--scheduler", str(self.scheduler), "--parent", str(os.getpid())]  # fmt: skip
        if self.cluster is None:  # an existing cluster: GPU workers declare a GPU resource
            cmd.append("--gpu-resource")
        return cmd

    def _spawn_zygote(self) -> None:
        """Start the process that forks the job runners (Linux: fork is safe with torch
        imported but never used there; elsewhere each runner is a new process)."""
        if self._stop.is_set() or self.scheduler is None or not sys.platform.startswith("linux"):
            return
        try:
            folder = self.settings.data / "logs"
            folder.mkdir(exist_ok=True)
            self._zygote = Zygote([*self._runner_cmd(), "--zygote"], folder / "runners.log")
        except OSError as exc:
            log.warning("cannot start the job runners' zygote (%s); each job starts a new "
                        "process", exc)  # fmt: skip

    def _reap(self) -> None:
        for jid, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[jid]
            self.signalled.discard(jid)
            self.logs.pop(jid).close()
            job = self.store.job(jid)
            if job is None or job["state"] != "running":
                continue
            if job["cancel_requested"]:
                self.store.set_job(jid, only_if=("running",), state="cancelled",
                                   finished=time.time())  # fmt: skip
            else:
                self.store.set_job(jid, only_if=("running",), state="failed", finished=time.time(),
                                   error=f"the job's runner exited with code {code} before "
                                         "finishing; see the job log")  # fmt: skip

    def status(self) -> dict[str, Any]:
        """What ``/health`` tells of the cluster."""
        return {"scheduler": "local" if self.cluster is not None else self.scheduler,
                "ready": self.scheduler is not None, "error": self.error,
                "running": len(self.procs)}  # fmt: skip


def job_log(settings: ServiceSettings, job_id: str) -> Path:
    """The job's log file (the runner's output, every attempt)."""
    return settings.job_dir(job_id) / "job.log"
