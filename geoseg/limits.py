"""What geoseg accepts from files it did not write: the limits against hostile or broken input.

A raster's pixel count and band count, the ratio between the pixels it declares and the bytes
it holds (a tiny file declaring a huge raster: a decompression bomb or a damaged header), the
size of a configuration file (YAML, JSON: catalogs, pipelines, bundle cards, STAC) and how far
YAML aliases may expand it, and the URL schemes read. The defaults suit huge real scenes; each
limit is raised by the environment variable its error names (``GEOSEG_MAX_PIXELS=...``), or
for one block of code by :func:`override` (e.g. a service applying stricter ones).

Imports nothing of geoseg but its errors and file helpers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace

from geoseg._files import human_bytes as human
from geoseg.errors import ConfigError

#: URL schemes read through GDAL's virtual file systems (docs/catalogs.md); others are refused
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "az://")
#: GDAL virtual file system prefixes those schemes become (accepted when written out)
VSI_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/")


@dataclass(frozen=True)
class Limits:
    """The limits in force (see :func:`limits`)."""

    #: pixels of one raster (width x height): 2**36 is 68.7 gigapixels, e.g. 262144 x 262144
    max_pixels: int = 2**36
    #: bands of one raster (hyperspectral sensors have a few hundred)
    max_bands: int = 1024
    #: declared pixel bytes per byte of file, checked for rasters declaring over 256 MiB
    #: (deflate tops out near 1032:1; sparse files and zstd can go further)
    max_ratio: float = 2000.0
    #: bytes of a configuration file (YAML or JSON)
    max_config_bytes: int = 64 * 2**20
    #: YAML nodes after alias expansion (a billion-laughs file expands exponentially)
    max_yaml_nodes: int = 1_000_000

    @property
    def ratio_from_bytes(self) -> int:
        """Declared size from which the ratio is checked (smaller rasters never hurt)."""
        return 256 * 2**20


ENV = {f.name: f"GEOSEG_{f.name.upper()}" for f in fields(Limits)}
_OVERRIDE: ContextVar[dict[str, float] | None] = ContextVar("geoseg_limits", default=None)


def limits() -> Limits:
    """The limits in force: defaults, then environment variables, then :func:`override`."""
    values: dict[str, float] = {}
    for name, var in ENV.items():
        text = os.environ.get(var)
        if text is None or not text.strip():
            continue
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{var}={text!r}: not a number; set it to a number or "
                              "unset it") from None  # fmt: skip
        if value <= 0:
            raise ConfigError(f"{var}={text!r}: must be > 0; set a positive number or unset it")
        values[name] = value
    values.update(_OVERRIDE.get() or {})
    current = Limits()
    typed = {k: type(getattr(current, k))(v) for k, v in values.items()}
    return replace(current, **typed)


@contextlib.contextmanager
def override(**values: float) -> Iterator[Limits]:
    """Other limits for the code in the block (this thread/task only)."""
    unknown = set(values) - set(ENV)
    if unknown:
        raise TypeError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(ENV)}")
    token = _OVERRIDE.set({**(_OVERRIDE.get() or {}), **values})
    try:
        yield limits()
    finally:
        _OVERRIDE.reset(token)


def raise_hint(name: str, value: float) -> str:
    """``set GEOSEG_MAX_PIXELS=... to accept it`` for limit ``name`` and the value met."""
    return f"set {ENV[name]}={int(value) if float(value).is_integer() else value} to accept it"


def check_file_size(path: str | os.PathLike[str], what: str,
                    error: type[Exception] = ConfigError) -> None:  # fmt: skip
    """Refuse a configuration file larger than ``max_config_bytes`` before reading it."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # the reader reports a missing file in its own words
    cap = limits().max_config_bytes
    if size > cap:
        raise error(f"{path}: {human(size)} is more than a {what} may hold ({human(cap)}); "
                    f"check the file, or {raise_hint('max_config_bytes', size)}")


def url_problem(path: str) -> str | None:
    """Why ``path`` names a URL or GDAL virtual path geoseg does not read, else None."""
    text = str(path)
    if text.startswith("/vsi"):
        if text.startswith(VSI_PREFIXES):
            return None
        return (f"GDAL virtual path {text.split('/', 3)[1]!r} is not read; give a local path "
                f"or a URL ({', '.join(URL_SCHEMES)})")
    if "://" in text and not text.startswith("file://"):
        if text.lower().startswith(URL_SCHEMES):
            return None
        scheme = text.split("://", 1)[0]
        return f"URL scheme {scheme + '://'!r} is not read; use {', '.join(URL_SCHEMES)} or a local path"
    return None


__all__ = ["ENV", "URL_SCHEMES", "Limits", "check_file_size", "limits", "override", "url_problem"]
