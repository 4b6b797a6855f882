"""The process that runs one job: ``python -m geoseg.service.runner --data DIR --job ID
--scheduler ADDR --parent PID``, started by the server's job manager. Without ``--job`` it is
a spare: it imports what a job needs (torch, Dask, the predict job) at once, then waits for a
job id on stdin, so a job starts without paying for the imports.

It dies with the server (Linux: ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread), so a
``kill -9`` of the server leaves no orphan computing beside the requeued job. SIGTERM cancels
the job (its client closes, the cluster drops the chunks not started; what is done stays in the
tile store), SIGINT hands it back to the queue. Its log (stdout/stderr) is the job's log file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from geoseg.service.jobs import JobCancelled, JobInterrupted, run_job
from geoseg.service.store import Store

log = logging.getLogger("geoseg.service.runner")


def _die_with_parent(parent: int) -> None:
    """Exit when the server process goes away, whichever way it went."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(3)

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


def main(argv: list[str] | None = None) -> int:
    """Run one job; its final state is written to the store before the process exits."""
    ap = argparse.ArgumentParser(prog="geoseg.service.runner")
    ap.add_argument("--data", required=True)
    ap.add_argument("--job", default=None,
                    help="the job to run (without it: a spare, waiting for a job id on stdin)")
    ap.add_argument("--scheduler", required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--gpu-resource", action="store_true",
                    help="chunk tasks of cuda jobs ask for one GPU resource")
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    if args.job is None:
        _preload()
        args.job = sys.stdin.readline().strip()
        if not args.job:  # the server stopped before handing a job over
            return 0
        _output_to(Path(args.data) / "jobs" / args.job / "job.log")
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

    try:
        result = run_job(job, data, args.scheduler, write_progress, args.gpu_resource)
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
