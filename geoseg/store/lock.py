"""One process at a time on a shared resource: a lock file naming its owner (pid and host).

The predict job takes one per tile store (``<tiles>/<run id>.lock``), so the CLI, batch runs,
pipelines and the service never compute the same run twice at once on one store::

    from geoseg.store.lock import RunLock

    with RunLock(tiles / f"{rid}.lock", what=f"run {rid}"):       # BusyError if taken
        ...
    with RunLock(path, wait=True, timeout=600):                   # wait for the holder
        ...
    holder = RunLock(path).holder()     # LockOwner (pid, host, started, command) or None

What it guarantees:

- **Atomic.** The file is created with ``O_CREAT | O_EXCL`` and its JSON (pid, host, process
  start time, command line, a random token) written at once: of two processes started
  together, exactly one gets the lock. Works on local file systems and NFS (v3 and later).
- **Busy.** Without ``wait``, a held lock raises :class:`geoseg.errors.BusyError` (exit code 2
  from the CLI) naming the running process, its host and the lock file; ``exc.holder`` is its
  :class:`LockOwner` (a service can answer "409 busy" with it). With ``wait`` it polls every
  ``poll`` seconds until the lock is free (``timeout`` seconds at most, then BusyError).
- **Stale locks are taken over, never judged by age.** A lock whose process is gone (same host,
  pid not running, a zombie, or the pid reused by a process started at another time) is
  replaced, with a warning. Of several processes finding the same stale lock, one removes it
  (it first creates ``<lock>.break-<token>`` exclusively); all then compete for a new lock as
  usual. A lock held on another host is never broken (its pid cannot be checked there): the
  error names that host; delete the file by hand if no run is going on there.
- **Release** deletes the file only while it still holds this lock's token.

Not re-entrant: a second lock on the same file in the same process is busy (two threads of a
service asking for one run: one gets it, the other waits or gets BusyError). One ``RunLock``
object belongs to one thread. Imports only the standard library, psutil and geoseg's errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import psutil

from geoseg.errors import BusyError, OutputError

log = logging.getLogger(__name__)

#: how long a lock file may be seen empty or unparsable (its creator writing it) before it is
#: reported as damaged
_UNREADABLE_GRACE_S = 2.0


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: the process (pid, its start time), its host, command and token."""

    pid: int
    host: str
    started: float | None = None  # the process's start time (seconds since the epoch)
    since: str = ""  # when the lock was taken (ISO 8601, UTC)
    command: str = ""
    what: str = ""
    token: str = ""

    def alive(self) -> bool | None:
        """True while the owner runs, False when it is gone, None when it cannot be told
        (another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            # a pid reused by another process: not our owner
            return self.started is None or abs(proc.create_time() - self.started) < 1.0
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:  # exists, owned by another user
            return True

    def describe(self) -> str:
        """``process 123 on host (since ..., `geoseg predict ...`)``."""
        extra = ", ".join(x for x in (f"since {self.since}" if self.since else "",
                                      f"`{self.command}`" if self.command else "") if x)  # fmt: skip
        return f"process {self.pid} on {self.host}" + (f" ({extra})" if extra else "")


class RunLock:
    """An exclusive lock file for one run (see the module's docstring).

    Args:
        path: the lock file; its folder is created when missing.
        wait: when held by a live process, wait for it instead of raising BusyError.
        timeout: seconds to wait at most (None: no limit); only with ``wait``.
        poll: seconds between two looks at a held lock.
        what: what the lock protects, for messages and the file (e.g. ``run RGB-1a2b``).
    """

    def __init__(self, path: str | os.PathLike[str], *, wait: bool = False,
                 timeout: float | None = None, poll: float = 0.5, what: str = "") -> None:  # fmt: skip
        self.path = Path(path)
        self.wait = wait
        self.timeout = timeout
        self.poll = poll
        self.what = what or f"the run locked by {self.path.name}"
        self.owner: LockOwner | None = None  # set while this object holds the lock

    # ------------------------------------------------------------------ public

    def acquire(self) -> RunLock:
        """Take the lock (waiting or raising BusyError as configured); returns ``self``."""
        if self.owner is not None:
            return self
        self._make_folder()
        me = _me(self.what)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        announced = False
        while True:
            if self._create(me):
                self.owner = me
                return self
            holder = self._holder_settled()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.alive() is False:
                self._take_over(holder)
                continue
            if not self.wait or (deadline is not None and time.monotonic() >= deadline):
                raise BusyError(self._busy_message(holder), holder=holder)
            if not announced:
                log.info("%s: waiting for %s, which holds %s", self.what, holder.describe(),
                         self.path)  # fmt: skip
                announced = True
            time.sleep(self.poll)

    def release(self) -> None:
        """Give the lock back (the file is removed only while it still holds our token)."""
        if self.owner is None:
            return
        current = self._read()
        if current is not None and current.token == self.owner.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.owner = None

    def holder(self) -> LockOwner | None:
        """The current holder (None when the lock is free)."""
        return self._holder_settled()

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self.owner is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.release()

    # ------------------------------------------------------------------ inside

    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path.parent}: cannot create the folder of the lock file "
                              f"{self.path.name} ({exc.strerror}); choose a writable "
                              "--tiles-dir") from None  # fmt: skip

    def _create(self, me: LockOwner) -> bool:
        """Create the lock file holding ``me``; False when it exists."""
        data = json.dumps(asdict(me)).encode()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the lock file ({exc.strerror}); "
                              "choose a writable --tiles-dir") from None  # fmt: skip
        try:
            os.write(fd, data)  # one small write: readers see all of it or an empty file
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise OutputError(f"{self.path}: cannot write the lock file ({exc.strerror}); "
                              "check free space of its folder") from None  # fmt: skip
        os.close(fd)
        return True

    def _read(self) -> LockOwner | bool | None:
        """The owner in the file; None when there is no file; False when it is unparsable."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return False
        try:
            raw = json.loads(text)
            return LockOwner(**{k: raw[k] for k in LockOwner.__dataclass_fields__ if k in raw})
        except (ValueError, TypeError, KeyError):
            return False

    def _holder_settled(self) -> LockOwner | None:
        """The owner, giving a file just created by another process time to be written."""
        deadline = time.monotonic() + _UNREADABLE_GRACE_S
        while True:
            found = self._read()
            if found is not False:
                return found  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                raise BusyError(f"{self.path}: the lock file is damaged (not the JSON geoseg "
                                "writes); if no geoseg run uses it, delete it and start again")
            time.sleep(0.05)

    def _take_over(self, stale: LockOwner) -> None:
        """Remove a lock whose owner is gone; one process does it (see the module docstring)."""
        breaker = self.path.with_name(f"{self.path.name}.break-{stale.token or stale.pid}")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._clear_dead_breaker(breaker)
            time.sleep(0.01)  # another process is taking it over
            return
        try:
            os.write(fd, json.dumps(asdict(_me(self.what))).encode())
            os.close(fd)
            current = self._read()
            if isinstance(current, LockOwner) and current.token == stale.token \
                    and current.pid == stale.pid:  # fmt: skip
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                log.warning("%s: took over the lock %s left by %s, which is no longer running",
                            self.what, self.path, stale.describe())  # fmt: skip
        finally:
            with contextlib.suppress(OSError):
                breaker.unlink()

    @staticmethod
    def _clear_dead_breaker(breaker: Path) -> None:
        """A breaker left by a process killed while taking a lock over: removed."""
        try:
            raw = json.loads(breaker.read_text())
            owner = LockOwner(**{k: raw[k] for k in LockOwner.__dataclass_fields__ if k in raw})
        except (OSError, ValueError, TypeError, KeyError):
            return
        if owner.alive() is False:
            with contextlib.suppress(OSError):
                breaker.unlink()

    def _busy_message(self, holder: LockOwner) -> str:
        where = "" if holder.alive() is not None else (
            f"; it runs on another host ({holder.host}): if no geoseg run is going on there, "
            "delete the lock file")  # fmt: skip
        return (f"{self.what} is already running: {holder.describe()} holds {self.path}"
                f"{where}; wait for it with --wait (wait: true in a pipeline), or stop that "
                "process")  # fmt: skip


def store_lock(root: str | os.PathLike[str], *, wait: bool = False,
               timeout: float | None = None) -> RunLock:  # fmt: skip
    """The lock of the run whose tile store is ``root``: ``<root>.lock`` beside the store
    (removing a store never removes a lock held on it). The predict job, batch runs and the
    service take this one."""
    root = Path(root)
    return RunLock(root.with_name(f"{root.name}.lock"), wait=wait, timeout=timeout,
                   what=f"run {root.name}")  # fmt: skip


def _me(what: str) -> LockOwner:
    proc = psutil.Process()
    return LockOwner(pid=os.getpid(), host=socket.gethostname(), started=proc.create_time(),
                     since=datetime.now(UTC).isoformat(timespec="seconds"),
                     command=" ".join(sys.argv)[:300], what=what,
                     token=uuid.uuid4().hex)  # fmt: skip


__all__ = ["LockOwner", "RunLock", "store_lock"]
