"""The one place for file handling: atomic writes, temporary siblings, writable folders.

Every file geoseg writes is created under a hidden temporary name in the destination folder
and renamed when complete (:func:`atomic_path`, :func:`atomic_write_text`,
:func:`atomic_write_bytes`, :func:`replace_dir`): a crash or an error never leaves a
half-written file under the final name, and the rename stays on one file system (atomic).
Imports nothing of geoseg but its errors.
"""

from __future__ import annotations

import contextlib
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


def write_failed(path: Path, folder: Path, err: BaseException) -> OutputError:
    """The one-line error for an output that could not be written, naming the file and fix."""
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return OutputError(f"{path}: cannot be written ({detail}); check free space and "
                       f"permissions of {folder}, or choose another output folder")  # fmt: skip


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
