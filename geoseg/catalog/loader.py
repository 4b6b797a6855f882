"""Loading catalogs: one loader for YAML files and STAC JSON (``load_catalog``).

A YAML catalog is read with its line numbers and validated by the strict schema of
``geoseg.catalog.spec``: unknown keys are errors naming the key, the file and the line. STAC files
go to ``geoseg.catalog.stac``. Relative paths resolve against the catalog file's folder; remote
URLs go through GDAL's virtual file systems. ``Catalog.scenes`` are ``CatalogScene`` objects
that open a geoseg ``Scene``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from geoseg.catalog import stac
from geoseg.catalog.paths import map_paths, relative_path, resolve_paths
from geoseg.catalog.spec import CatalogScene, CatalogSpec
from geoseg.config import load_yaml, parse
from geoseg.errors import ConfigError, InputError
from geoseg.limits import check_file_size
from geoseg.scene.classes import ClassInfo


class Catalog:
    """A loaded catalog: scenes with absolute paths, class table, where it came from."""

    def __init__(self, spec: CatalogSpec, source: str | Path | None = None):
        self.spec = spec
        self.source = Path(source) if source is not None else None

    @classmethod
    def load(cls, path: str | Path, allow_outside: bool | None = None) -> Catalog:
        """Read a YAML catalog or a STAC Collection/ItemCollection/Catalog (JSON).

        Args:
            allow_outside: accept relative paths leading outside the catalog's folder and
                other URL schemes (default: ``geoseg.catalog.paths.outside_paths_allowed``).
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: catalog file not found; check the path")
        check_file_size(path, "catalog file")
        if stac.is_stac(path):
            return load_stac(path, allow_outside)
        data, node = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a catalog is a mapping with a scenes: list; "
                              "see docs/catalogs.md")  # fmt: skip
        spec = parse(CatalogSpec, data, path, node)
        return cls(resolve_paths(spec, path.parent, path, allow_outside), path)

    @property
    def name(self) -> str:
        """The catalog's name, else its file's stem."""
        return self.spec.name or (self.source.stem if self.source else "catalog")

    @property
    def scenes(self) -> list[CatalogScene]:
        """The scenes, in catalog order."""
        return list(self.spec.scenes)

    @property
    def classes(self) -> list[ClassInfo]:
        """The class table."""
        return list(self.spec.classes)

    def __len__(self) -> int:
        return len(self.spec.scenes)

    def __iter__(self) -> Iterator[CatalogScene]:
        return iter(self.spec.scenes)

    def scene(self, scene_id: str) -> CatalogScene:
        """The scene with id ``scene_id``."""
        for s in self.spec.scenes:
            if s.id == scene_id:
                return s
        raise InputError(f"{self.source}: no scene {scene_id!r}; ids are "
                         f"{[s.id for s in self.spec.scenes][:10]}")  # fmt: skip

    def select(self, ids: Iterable[str] | None = None,
               split: str | None = None) -> list[CatalogScene]:  # fmt: skip
        """Scenes by id (in the given order) and/or split."""
        scenes = [self.scene(i) for i in ids] if ids else self.scenes
        return [s for s in scenes if split is None or s.split == split]

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Plain data for YAML; local paths relative to ``relative_to`` when given."""
        spec = self.spec
        if relative_to is not None:
            spec = map_paths(spec, lambda p: relative_path(p, Path(relative_to)))
        return spec.model_dump(mode="json", exclude_defaults=True, exclude={"version"}) | {
            "version": 1}

    def to_yaml(self, path: str | Path) -> Path:
        """Write the catalog as YAML, paths relative to the file's folder."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict(relative_to=path.parent.resolve())
        ordered = {"version": 1, **{k: v for k, v in data.items() if k != "version"}}
        path.write_text(yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100))
        return path


def load_catalog(path: str | Path, allow_outside: bool | None = None) -> Catalog:
    """Shorthand for ``Catalog.load``."""
    return Catalog.load(path, allow_outside)


def load_stac(path: str | Path, allow_outside: bool | None = None) -> Catalog:
    """Read a STAC file into a Catalog (items of a Collection/Catalog are followed, recursively)."""
    path = Path(path).resolve()
    return Catalog(stac.read_stac(path, allow_outside), path)
