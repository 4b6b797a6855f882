"""The run lock: one holder at a time, a clear refusal naming it, waiting, stale locks taken over
(a dead process's, never by age), a lock of another host never broken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from geoseg.errors import BusyError
from geoseg.store.lock import LockOwner, RunLock, store_lock

ROOT = Path(__file__).resolve().parents[2]


def test_a_held_lock_is_busy_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "tiles" / "run-1.lock"
    with RunLock(path, what="run run-1") as lock:
        assert lock.held and path.is_file()
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] and owner["token"]
        with pytest.raises(BusyError) as err:
            RunLock(path, what="run run-1").acquire()
        msg = str(err.value)
        assert "run run-1 is already running" in msg and f"process {os.getpid()}" in msg
        assert str(path) in msg and "--wait" in msg and "\n" not in msg
        assert isinstance(err.value.holder, LockOwner) and err.value.holder.pid == os.getpid()
    assert not path.exists()  # released: the file is gone
    with RunLock(path):  # and it can be taken again
        pass


def test_wait_for_the_holder_or_give_up_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    first = RunLock(path).acquire()
    with pytest.raises(BusyError):
        RunLock(path, wait=True, timeout=0.3, poll=0.05).acquire()
    threading.Timer(0.3, first.release).start()
    t = time.perf_counter()
    with RunLock(path, wait=True, timeout=10, poll=0.05):
        assert time.perf_counter() - t >= 0.25


def test_holders_never_overlap_when_racing_over_a_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "old"}))
    inside, overlaps, done = [0], [0], []
    gate = threading.Lock()

    def worker() -> None:
        with RunLock(path, wait=True, timeout=20, poll=0.01):
            with gate:
                inside[0] += 1
                overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.02)
            with gate:
                inside[0] -= 1
        done.append(1)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(done) == 6 and overlaps[0] == 1
    assert not path.exists() and not list(tmp_path.glob("*.break-*"))


def test_a_killed_process_lock_is_taken_over(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    path = tmp_path / "run-2.lock"
    code = ("import sys, time; from geoseg.store.lock import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=f"process {proc.pid} on"):
            RunLock(path).acquire()  # alive: refused
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads(path.read_text())["pid"] == proc.pid  # the dead process's lock is still there
    with caplog.at_level("WARNING"), RunLock(path) as lock:
        assert json.loads(path.read_text())["token"] == lock.owner.token
    assert f"left by process {proc.pid}" in caplog.text and "no longer running" in caplog.text


def test_a_reused_pid_is_not_the_owner_and_another_host_is_never_broken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = tmp_path / "r.lock"
    me = LockOwner(pid=os.getpid(), host=socket.gethostname(), started=1.0, token="x")
    assert me.alive() is False  # our pid, but a process started at another time
    path.write_text(json.dumps(me.__dict__))
    with RunLock(path):
        pass
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "token": "y"}))
    with pytest.raises(BusyError, match=r"another host \(elsewhere.example\).*delete the lock"):
        RunLock(path).acquire()
    path.write_text("{not json")  # not being written (that lasts microseconds): damaged
    monkeypatch.setattr("geoseg.store.lock._UNREADABLE_GRACE_S", 0.1)
    with pytest.raises(BusyError, match="lock file is damaged"):
        RunLock(path).acquire()


def test_the_store_lock_sits_beside_the_store(tmp_path: Path) -> None:
    lock = store_lock(tmp_path / "tiles" / "RGB-1a2b")
    assert lock.path == tmp_path / "tiles" / "RGB-1a2b.lock" and "run RGB-1a2b" in lock.what


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
