"""The one place for file handling: atomic writes, temporary siblings, writable folders.

Every file geoseg writes is created under a hidden temporary name in the destination folder
and renamed when complete (:func:`atomic_path`, :func:`atomic_write_text`,
:func:`atomic_write_bytes`, :func:`replace_dir`): a crash or an error never leaves a
half-written file under the final name, and the rename stays on one file system (atomic).
A write that fails for lack of space or permission is told in one line naming the file, the
space needed and the space free (:func:`write_failed`, :func:`space_problem`), whether the OS
(errno) or GDAL (message text) reported it. Imports nothing of geoseg but its errors.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from geoseg.errors import OutputError


def writable_folder(path: str | os.PathLike[str]) -> Path:
    """The folder that will hold ``path``, checked before any work starts.

    Raises:
        OutputError: the folder does not exist, is not a folder, or cannot be written.
    """
    target = Path(path)
    folder = target.parent
    if not folder.exists():
        raise OutputError(
            f"{target}: folder {folder} does not exist; create it or choose another output folder"
        )
    if not folder.is_dir():
        raise OutputError(f"{target}: {folder} is not a folder; choose another output folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"{target}: folder {folder} is not writable; fix its permissions or "
            "choose another output folder"
        )
    return folder


def temp_sibling(path: Path, suffix: str) -> Path:
    """A unique hidden name beside ``path`` (same folder, so the final rename is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")


def remove_quietly(*paths: Path) -> None:
    """Delete temporary files, ignoring those already gone."""
    for p in paths:
        # a directory or a vanished mount: nothing more can be done, the error that led
        # here is the one to report
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


#: why a write failed, by errno: the OS's words, and what they mean here
_WRITE_ERRNO = {
    errno.ENOSPC: "",
    errno.EDQUOT: "",
    errno.EFBIG: ": over the file system's or the process's file size limit",
    errno.EROFS: "",
}
#: GDAL reports these without an errno: its message text says which
_GDAL_TEXT = (("no space left", errno.ENOSPC), ("free disk space", errno.ENOSPC),
              ("disk quota", errno.EDQUOT), ("file too large", errno.EFBIG),
              ("read-only file system", errno.EROFS))  # fmt: skip
#: errno values meaning "not enough space": the message gives the space needed and free
SPACE_ERRNO = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_errno(err: BaseException | None) -> int | None:
    """The errno of a write that failed for lack of space or a read-only disk (ENOSPC, EDQUOT,
    EFBIG, EROFS), from the OS error or GDAL's message, following the error's causes; else
    None."""
    seen = 0
    while err is not None and seen < 8:
        code = getattr(err, "errno", None)
        if code in _WRITE_ERRNO:
            return code
        text = str(err).lower()
        for needle, found in _GDAL_TEXT:
            if needle in text:
                return found
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def human_bytes(n: float) -> str:
    """``1.5 GB``, ``320 MB``, ``12 kB`` (powers of 1000, as ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder: str | os.PathLike[str]) -> int | None:
    """Free space of the file system holding ``folder`` (or its nearest existing parent)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def space_problem(err: BaseException, folder: str | os.PathLike[str],
                  need: int | None = None, at_least: bool = False) -> str:  # fmt: skip
    """Why a write failed, in words: for a full disk with the space needed and the space free
    in ``folder`` (``No space left on device (ENOSPC); about 1.2 GB needed, 300 MB free in
    /data``; ``at least`` when ``need`` is only what had been written), else the error's
    first line."""
    code = write_errno(err)
    if code is None:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    text = f"{os.strerror(code)} ({errno.errorcode[code]}){_WRITE_ERRNO[code]}"
    if code in SPACE_ERRNO:
        free = free_bytes(folder)
        if need:
            text += f"; {'at least' if at_least else 'about'} {human_bytes(need)} needed"
        if free is not None:
            text += f"{',' if need else ';'} {human_bytes(free)} free in {folder}"
    return text


def write_failed(path: Path, folder: Path, err: BaseException, need: int | None = None,
                 at_least: bool = False) -> OutputError:  # fmt: skip
    """The one-line error for an output that could not be written, naming the file and fix.

    A full disk (ENOSPC, EDQUOT, EFBIG: from the OS or GDAL) names the space ``need``ed (bytes,
    when the caller can tell; ``at_least``: what had been written when it failed) and the
    space free; a read-only disk says so.
    """
    detail = space_problem(err, folder, need, at_least)
    code = write_errno(err)
    if code in SPACE_ERRNO:
        fix = f"free space in {folder} or choose another output folder"
    elif code == errno.EROFS:
        fix = "choose another output folder"
    else:
        fix = f"check free space and permissions of {folder}, or choose another output folder"
    return OutputError(f"{path}: cannot be written ({detail}); {fix}")


def is_local(path: str) -> bool:
    """True for a path on a local file system (not a URL or a GDAL /vsi path)."""
    return not path.startswith("/vsi") and "://" not in path


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replace_dir(tmp: Path, path: Path) -> Path:
    """Move the finished folder ``tmp`` to ``path``, replacing an existing one: the old folder
    is renamed aside first, so ``path`` is never a half-written mix."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write text under a temporary name, fsync, then rename (no half-written file on kill)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes under a temporary name, fsync, then rename (no half-written file on kill)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def written_bytes(tmp: Path) -> int:
    """Bytes of ``tmp`` and of the side files a writer keeps beside it (-journal, -wal...)."""
    total = 0
    for p in (tmp, *tmp.parent.glob(f"{glob.escape(tmp.name)}*")):
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed to ``path`` when the block succeeds.

    On any error the temporary file and the side files a writer may leave beside it
    (GDAL's .aux.xml, SQLite's -journal/-wal) are removed and the error propagates: nothing
    half-written is ever left under either name. ``suffix`` defaults to ``path``'s (drivers
    pick their format from it). Unique per call, so concurrent writers never share a name.
    """
    path = Path(path)
    tmp = temp_sibling(path, path.suffix if suffix is None else suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove_quietly(tmp, *tmp.parent.glob(f"{glob.escape(tmp.name)}*"))


def safe_name(text: str, default: str = "scene") -> str:
    """``text`` reduced to a file-name-safe id (letters, digits, ``._-``), or ``default``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or default
