"""Paths in catalogs: relative paths resolve against the catalog file's folder; http(s), s3, gs
and az URLs are read through GDAL's virtual file systems (/vsicurl/, /vsis3/...).

A catalog is data, possibly from elsewhere: a relative path that leaves the catalog's folder
(through ``..`` or a symbolic link) is refused unless the user allows it explicitly
(``--allow-outside-paths``, ``allow_outside_paths: true`` in a pipeline, the environment
variable ``GEOSEG_ALLOW_OUTSIDE_PATHS=1``, or :func:`outside_paths_allowed` in code), and so
are other URL schemes and GDAL virtual paths.
Absolute paths are the catalog author's explicit choice and are kept. Catalogs geoseg writes use
relative paths inside their folder and absolute ones elsewhere, so they load as written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from geoseg._files import is_local
from geoseg.catalog.spec import CatalogSpec
from geoseg.errors import ConfigError
from geoseg.limits import url_problem

_ALLOW_OUTSIDE: ContextVar[bool | None] = ContextVar("geoseg_allow_outside_paths", default=None)
ALLOW_ENV = "GEOSEG_ALLOW_OUTSIDE_PATHS"
#: what the user gives to trust a catalog's paths outside its folder
ALLOW_HINT = ("pass --allow-outside-paths (allow_outside_paths: true in a pipeline) if you "
              "trust this catalog")


@contextlib.contextmanager
def outside_paths_allowed(allowed: bool | None = True) -> Iterator[None]:
    """Catalogs loaded in the block may point outside their folder (``allowed``; None: as
    outside the block, e.g. a CLI flag that was not given)."""
    token = _ALLOW_OUTSIDE.set(_ALLOW_OUTSIDE.get() if allowed is None else allowed)
    try:
        yield
    finally:
        _ALLOW_OUTSIDE.reset(token)


def outside_allowed(allow: bool | None = None) -> bool:
    """``allow`` when given, else the current block's choice, else ``GEOSEG_ALLOW_OUTSIDE_PATHS``."""
    if allow is not None:
        return allow
    block = _ALLOW_OUTSIDE.get()
    if block is not None:
        return block
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def escape_problem(href: str, base: str | Path, root: str | Path) -> str | None:
    """Why the catalog path ``href`` (relative to ``base``) may not be read: it leaves
    ``root`` (through ``..`` or a symbolic link), or it is a URL or GDAL path of a scheme
    geoseg does not read; None when it may."""
    problem = url_problem(href)
    if problem:
        return f"{href}: {problem}; or {ALLOW_HINT}"
    if not is_local(href) or href.startswith("file://"):
        return None
    if os.path.isabs(os.path.expanduser(href)):
        return None  # the author's explicit choice
    target = os.path.join(str(base), href)
    real, inside = os.path.realpath(target), os.path.realpath(root)
    if real == inside or real.startswith(inside.rstrip(os.sep) + os.sep):
        return None
    how = "through a symbolic link" if os.path.abspath(target).startswith(
        os.path.abspath(root).rstrip(os.sep) + os.sep) else "through '..'"  # fmt: skip
    return (f"{href} leads outside the catalog's folder {os.path.abspath(root)} ({how}, to "
            f"{real}); move the file into the folder, or {ALLOW_HINT}")

#: URL schemes and the GDAL virtual file system that reads them
VSI = {"http://": "/vsicurl/http://", "https://": "/vsicurl/https://", "s3://": "/vsis3/",
       "gs://": "/vsigs/", "az://": "/vsiaz/"}  # fmt: skip


def resolve_href(href: str, base: str | Path) -> str:
    """Absolute local path, or a GDAL /vsi path for URLs; relative paths join ``base``."""
    if href.startswith("file://"):
        href = href[len("file://"):]
    for scheme, vsi in VSI.items():
        if href.startswith(scheme):
            return vsi + href[len(scheme):]
    if href.startswith("/vsi") or "://" in href:
        return href
    return os.path.abspath(os.path.join(str(base), os.path.expanduser(href)))


def resolve_paths(spec: CatalogSpec, base: str | Path, source: str | Path | None = None,
                  allow_outside: bool | None = None) -> CatalogSpec:  # fmt: skip
    """``spec`` with every modality and label path resolved against ``base``.

    Raises:
        ConfigError: a path leaves ``base`` or uses a scheme geoseg does not read (unless
            ``allow_outside``, default: :func:`outside_paths_allowed`), naming ``source``,
            the scene and the path.
    """
    if not outside_allowed(allow_outside):
        for s in spec.scenes:
            named = [(f"modality {n!r}", m.path) for n, m in s.modalities.items()]
            named += [("labels", s.labels.path)] if s.labels else []
            for what, href in named:
                problem = escape_problem(href, base, base)
                if problem:
                    raise ConfigError(f"{source or base}: scene {s.id!r} {what}: {problem}")
    return map_paths(spec, lambda p: resolve_href(p, base))


def relative_path(path: str, base: Path) -> str:
    """A local ``path`` relative to ``base`` when it lies inside ``base``, else absolute (a
    catalog written so loads without ``--allow-outside-paths``); URLs and /vsi paths unchanged."""
    if not is_local(path):
        return path
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path
    return os.path.abspath(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def map_paths(spec: CatalogSpec, fn: Callable[[str], str]) -> CatalogSpec:
    """``spec`` with ``fn`` applied to every modality and label path."""
    scenes = []
    for s in spec.scenes:
        mods = {n: m.model_copy(update={"path": fn(m.path)}) for n, m in s.modalities.items()}
        labels = s.labels.model_copy(update={"path": fn(s.labels.path)}) if s.labels else None
        scenes.append(s.model_copy(update={"modalities": mods, "labels": labels}))
    return spec.model_copy(update={"scenes": scenes})
