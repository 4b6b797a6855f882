"""The process that runs one job: ``python -m geoseg.service.runner --data DIR --job ID
--scheduler ADDR --parent PID``, started by the server's job manager; or, with ``--zygote``
instead of ``--job``, the process that imports what a job needs (torch, Dask, the predict job)
once, then forks one runner per job id read from stdin: a job starts in milliseconds and no
job pays for (or shares its cores with) the next job's imports.

A runner dies with the server (Linux: ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread), so a
``kill -9`` of the server leaves no orphan computing beside the requeued job. SIGTERM cancels
the job (its client closes, the cluster drops the chunks not started; what is done stays in the
tile store), SIGINT hands it back to the queue. Its log (stdout/stderr) is the job's log file.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from geoseg.service.jobs import JobCancelled, JobInterrupted, run_job
from geoseg.service.store import Store

log = logging.getLogger("geoseg.service.runner")


def _die_with_parent(parent: int) -> None:
    """Exit when the parent process goes away, whichever way it went."""
    watched = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            watched = libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(3)
    if watched:  # no watchdog thread: a zygote must fork without threads
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _preload() -> None:
    """Import what running a job needs (torch, Dask's client, the predict and batch jobs)."""
    import distributed  # noqa: F401

    import geoseg.catalog.loader
    import geoseg.inference.cluster
    import geoseg.runs.batch
    import geoseg.runs.compute
    import geoseg.runs.predict  # noqa: F401


def _output_to(path: Path) -> None:
    """From now on stdout and stderr go to ``path`` (the job's log, appended)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="geoseg.service.runner")
    ap.add_argument("--data", required=True)
    ap.add_argument("--job", default=None, help="the job to run")
    ap.add_argument("--zygote", action="store_true",
                    help="instead of --job: import once, fork a runner per job id on stdin")
    ap.add_argument("--scheduler", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--gpu-resource", action="store_true",
                    help="chunk tasks of cuda jobs ask for one GPU resource")
    args = ap.parse_args(argv)
    if (args.job is None) == (not args.zygote):
        ap.error("give --job ID or --zygote")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one job (``--job``), or be the zygote (``--zygote``)."""
    args = _parse(argv)
    _die_with_parent(args.parent)
    if args.zygote:
        return zygote(args)
    return run_one(args)


def zygote(args: argparse.Namespace) -> int:
    """Import what jobs need, then fork a runner per job id read from stdin.

    Reports ``started JOB PID`` and ``exited PID CODE`` on stdout, a line each; ends at the
    end of stdin. It never starts a thread, opens the store or connects to the cluster, so
    a forked runner starts clean."""
    _preload()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops the runners itself
    children: set[int] = set()
    pending = b""
    while True:
        ready = select.select([0], [], [], 0.1)[0]
        _reap_children(children)
        if not ready:
            continue
        data = os.read(0, 4096)
        if not data:
            return 0
        *lines, pending = (pending + data).split(b"\n")
        for line in filter(None, (x.decode().strip() for x in lines)):
            children.add(_fork_runner(args, line))


def _reap_children(children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        os.write(1, f"exited {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


def _fork_runner(args: argparse.Namespace, job_id: str) -> int:
    """Fork the runner of ``job_id`` (in the child: run it, exit); returns its pid."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        os.write(1, f"started {job_id} {pid}\n".encode())
        return pid
    code = 1
    try:
        os.setsid()  # as a runner started on its own: no terminal signals
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent(parent)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        _output_to(Path(args.data) / "jobs" / job_id / "job.log")
        args.job = job_id
        code = run_one(args)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_one(args: argparse.Namespace) -> int:
    """Run one job; its final state is written to the store before the process exits."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    for noisy in ("distributed", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def cancel(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        raise JobCancelled()

    def interrupt(*_: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise JobInterrupted()

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, interrupt)
    data = Path(args.data)
    store = Store(data / "geoseg.db")
    job = store.job(args.job)
    if job is None or job["state"] != "running":
        log.error("job %s is not running (%s); nothing to do", args.job, job and job["state"])
        return 0
    log.info("job %s: attempt %d, model %s, %d scene(s)", job["id"], job["attempts"],
             job["spec"]["model"], len(job["spec"]["scenes"]) or 1)  # fmt: skip

    def write_progress(progress: dict) -> None:
        store.set_job(job["id"], only_if=("running",), progress=progress)

    return _finish(job, store, lambda: run_job(job, data, args.scheduler, write_progress,
                                               args.gpu_resource))  # fmt: skip


def _unless_orphaned(parent: int, exc: Exception) -> None:
    """A lost connection may be the server's death taking the cluster with it: the
    parent-death signal is then on its way (through the zygote, one process later than the
    workers'). Wait for it rather than fail a job the next server will resume."""
    if isinstance(exc, OSError):  # distributed's CommClosedError included
        time.sleep(1.0)
    if os.getppid() != parent:
        os._exit(3)


def _finish(job: dict, store: Store, run: Callable[[], dict]) -> int:
    """Run the job; record how it ended (done, cancelled, back to the queue, failed)."""
    parent = os.getppid()
    try:
        result = run()
    except JobCancelled:
        log.info("job %s cancelled; finished chunks stay in the tile store", job["id"])
        store.set_job(job["id"], only_if=("running",), state="cancelled", finished=time.time())
        return 0
    except (JobInterrupted, KeyboardInterrupt):
        log.info("job %s interrupted (server stopping); back to the queue", job["id"])
        store.set_job(job["id"], only_if=("running",), state="queued", pid=None)
        return 0
    except Exception as exc:
        traceback.print_exc()
        _unless_orphaned(parent, exc)
        log.error("job %s failed: %s", job["id"], _one_line(exc))
        store.set_job(job["id"], only_if=("running",), state="failed", error=_one_line(exc),
                      finished=time.time())  # fmt: skip
        return 1
    store.set_job(job["id"], only_if=("running",), state="done", result=result,
                  finished=time.time(), error=None)  # fmt: skip
    log.info("job %s done", job["id"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
