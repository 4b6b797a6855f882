"""What a request may name: files under the allowed roots (relative paths only, no ``..``, no
symlink leading out), ``https://`` and ``s3://`` URLs. Everything else — absolute paths,
``file://``, GDAL ``/vsi`` prefixes, other schemes, loopback or private hosts — is refused with
a one-line :class:`AccessError` saying what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from geoseg.errors import InputError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class AccessError(InputError):
    """A request names a file or URL the service may not read."""


def root_names(roots: Sequence[Path]) -> dict[str, Path]:
    """Allowed roots by name (their folder name; ``name-2``... when two share one)."""
    out: dict[str, Path] = {}
    for root in roots:
        name = root.name or "root"
        key, n = name, 1
        while key in out:
            n += 1
            key = f"{name}-{n}"
        out[key] = root
    return out


def check_relative(path: str, what: str = "path") -> PurePosixPath:
    """``path`` as a clean relative path, or an AccessError saying why it is refused."""
    if not isinstance(path, str) or not path.strip():
        raise AccessError(f"{what}: empty; give a path relative to an allowed root")
    if "\x00" in path or len(path) > 4096:
        raise AccessError(f"{what}: not a valid path; give a path relative to an allowed root")
    low = path.strip().lower()
    if low.startswith(("/vsi", "vsi")) or "/vsi" in low:
        raise AccessError(f"{what} {path!r}: GDAL /vsi paths are refused; give a path relative "
                          "to an allowed root, or an https:// or s3:// URL")  # fmt: skip
    if _SCHEME.match(path) and not re.match(r"^[A-Za-z]:[\\/]", path):
        raise AccessError(f"{what} {path!r}: refused (a URL is not a path); register an https:// "
                          "or s3:// URL with url=, or give a path relative to an allowed root")  # fmt: skip
    if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path):
        raise AccessError(f"{what} {path!r}: absolute paths are refused; give it relative to an "
                          "allowed root (GET /api/v1/roots)")  # fmt: skip
    parts = re.split(r"[\\/]+", path)
    if any(p == ".." for p in parts):
        raise AccessError(f"{what} {path!r}: '..' is refused; give a path inside an allowed root")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def resolve_path(path: str, roots: Sequence[Path], root: str | None = None,
                 what: str = "path") -> Path:  # fmt: skip
    """The existing file ``path`` names under an allowed root (``root`` by name, else the first
    root holding it), symlinks resolved and still inside that root."""
    rel = check_relative(path, what)
    named = root_names(roots)
    if not named:
        raise AccessError(f"{what} {path!r}: the server allows no folder; start it with "
                          "--allow-root DIR, or upload the file")  # fmt: skip
    if root is not None and root not in named:
        raise AccessError(f"root {root!r}: no such allowed root; choose one of {sorted(named)}")
    candidates = [named[root]] if root is not None else list(named.values())
    for base in candidates:
        real_base = Path(os.path.realpath(base))
        target = Path(os.path.realpath(real_base / rel))
        if not target.is_relative_to(real_base):
            raise AccessError(f"{what} {path!r}: leads outside the allowed root (symlink); "
                              "give a file inside it")  # fmt: skip
        if target.is_file():
            return target
    raise AccessError(f"{what} {path!r}: no such file under the allowed roots "
                      f"{sorted(named) if root is None else [root]}; check the path")  # fmt: skip


def inside(path: str | Path, roots: Sequence[Path]) -> bool:
    """True when ``path`` (symlinks resolved) lies under one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(Path(os.path.realpath(r))) for r in roots)


def check_url(url: str, what: str = "url") -> str:
    """An ``https://`` or ``s3://`` URL the service may read (not a local or private host)."""
    if not isinstance(url, str) or "\x00" in url or len(url) > 4096 or any(c.isspace() for c in url):
        raise AccessError(f"{what}: not a valid URL; give an https:// or s3:// URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "s3"):
        raise AccessError(f"{what} {url!r}: scheme {parts.scheme or 'none'!r} refused; only "
                          "https:// and s3:// URLs (or an upload, or a path under an allowed "
                          "root) are accepted")  # fmt: skip
    if not parts.hostname or parts.username or parts.password:
        raise AccessError(f"{what} {url!r}: needs a host and no credentials in the URL")
    if parts.scheme == "https" and _local_host(parts.hostname):
        raise AccessError(f"{what} {url!r}: local and private hosts are refused; use a public "
                          "host, or a path under an allowed root")  # fmt: skip
    if "/vsi" in url.lower():
        raise AccessError(f"{what} {url!r}: GDAL /vsi paths are refused")
    return url


def _local_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_global


def is_url(text: str) -> bool:
    """True for an ``https://`` or ``s3://`` location."""
    return text.startswith(("https://", "s3://"))
