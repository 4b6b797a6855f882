"""The server's side of the runners' zygote (``geoseg.service.runner --zygote``): a process
that imports torch, Dask and the predict job once and forks one runner per job.

Without it, every job paid for those imports (about 5 s of CPU) — and, imported ahead by a
spare runner, they ran on the cores of the job running then. The zygote reports ``started JOB
PID`` and ``exited PID CODE`` lines; :class:`ForkedRunner` is the handle the dispatcher keeps
(``poll``, ``send_signal``, ``wait``, ``kill``, as ``subprocess.Popen``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class ForkedRunner:
    """A runner forked by the zygote (not this process's child): a pid, and its exit code
    once the zygote has reaped it."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # until reaped, the pid is still this runner's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"runner {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()


class Zygote:
    """The zygote process and the thread that reads its reports."""

    def __init__(self, cmd: list[str], log_path: Path, timeout: float = 120.0):
        self.timeout = timeout
        with open(log_path, "ab") as fh:  # its stderr: what goes wrong before a job's log
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=fh, start_new_session=True)  # fmt: skip
        self._started: queue.Queue[tuple[str, ForkedRunner]] = queue.Queue()
        self._runners: dict[int, ForkedRunner] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name="geoseg-zygote")
        self._reader.start()

    def fork(self, job_id: str) -> ForkedRunner | None:
        """A runner for ``job_id``, or None when the zygote is gone (start a process then).

        Waits for the zygote's imports on the first job after a start."""
        if self.proc.poll() is not None:
            return None
        try:
            self.proc.stdin.write(f"{job_id}\n".encode())  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            got, runner = self._started.get(timeout=self.timeout)
        except (OSError, queue.Empty):
            log.warning("the runners' zygote did not fork job %s; starting a process", job_id)
            self.close(0.0)
            return None
        if got != job_id:  # cannot happen: one job at a time, answered in order
            runner.kill()
            return None
        return runner

    def _read(self) -> None:
        for raw in self.proc.stdout:  # type: ignore[union-attr]
            word, *rest = raw.decode(errors="replace").split()
            if word == "started" and len(rest) == 2:
                runner = ForkedRunner(int(rest[1]))
                with self._lock:
                    self._runners[runner.pid] = runner
                self._started.put((rest[0], runner))
            elif word == "exited" and len(rest) == 2:
                with self._lock:
                    runner = self._runners.pop(int(rest[0]), None)
                if runner is not None:
                    runner.exited(int(rest[1]))
        with self._lock:  # the zygote is gone; its runners died with it (parent-death signal)
            left, self._runners = list(self._runners.values()), {}
        for runner in left:
            runner.exited(-signal.SIGKILL)

    def close(self, timeout: float = 5.0) -> None:
        """End of stdin: the zygote exits (its runners die with it; stop them first)."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
