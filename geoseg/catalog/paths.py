"""Paths in catalogs: relative paths resolve against the catalog file's folder; http(s), s3, gs
and az URLs are read through GDAL's virtual file systems (/vsicurl/, /vsis3/...)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from geoseg._files import is_local
from geoseg.catalog.spec import CatalogSpec

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


def resolve_paths(spec: CatalogSpec, base: str | Path) -> CatalogSpec:
    """``spec`` with every modality and label path resolved against ``base``."""
    return map_paths(spec, lambda p: resolve_href(p, base))


def relative_path(path: str, base: Path) -> str:
    """A local ``path`` relative to ``base`` (URLs, /vsi paths and other drives unchanged)."""
    if not is_local(path):
        return path
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path


def map_paths(spec: CatalogSpec, fn: Callable[[str], str]) -> CatalogSpec:
    """``spec`` with ``fn`` applied to every modality and label path."""
    scenes = []
    for s in spec.scenes:
        mods = {n: m.model_copy(update={"path": fn(m.path)}) for n, m in s.modalities.items()}
        labels = s.labels.model_copy(update={"path": fn(s.labels.path)}) if s.labels else None
        scenes.append(s.model_copy(update={"modalities": mods, "labels": labels}))
    return spec.model_copy(update={"scenes": scenes})
