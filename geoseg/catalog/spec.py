"""Scene catalogs: many scenes described once (modalities, band roles, labels, classes, split).

A catalog is a YAML file (or a STAC Collection/ItemCollection, see ``geoseg.catalog.stac``) validated
by a strict schema: unknown keys are errors naming the key, the file and the line. Relative
paths resolve against the catalog file's folder; remote URLs go through GDAL's virtual file
systems. ``Catalog.scenes`` are ``CatalogScene`` objects that open a geoseg ``Scene``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from geoseg._files import is_local
from geoseg.bundle.card import ClassInfo
from geoseg.config import StrictModel
from geoseg.errors import ConfigError, GeosegError, InputError
from geoseg.scene.scene import Scene

#: scene ids become file and folder names: keep them portable
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
SPLITS = ("train", "val", "test")
RASTER_EXT = {".tif", ".tiff", ".vrt", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".bmp", ".h5",
              ".hdf5", ".bsq", ".dat", ".nc"}  # fmt: skip
VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".gml", ".kml"}
#: URL schemes and the GDAL virtual file system that reads them
VSI = {"http://": "/vsicurl/http://", "https://": "/vsicurl/https://", "s3://": "/vsis3/",
       "gs://": "/vsigs/", "az://": "/vsiaz/"}  # fmt: skip


# --------------------------------------------------------------------------- schema


class ModalitySpec(StrictModel):
    """One raster of a scene. A plain string is shorthand for ``{path: ...}``."""

    path: str = Field(description="raster file (relative to the catalog) or URL")
    bands: list[int | str] | None = Field(
        None, description="bands to use (1-based indices or descriptions); default all")
    roles: list[str] | None = Field(
        None, description="role of each used band: red, green, blue, nir, ndsm, dem...")
    resampling: Literal["bilinear", "nearest", "cubic"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("roles")
    @classmethod
    def _lower(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [r.strip().lower() for r in v]

    @model_validator(mode="after")
    def _lengths(self) -> ModalitySpec:
        if self.bands is not None and self.roles is not None and len(self.bands) != len(self.roles):
            raise ValueError(f"roles names {len(self.roles)} band(s) but bands selects "
                             f"{len(self.bands)}; give one role per selected band")  # fmt: skip
        if self.roles is not None and len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles {self.roles} repeat a role; each band needs its own")
        return self

    def bands_for(self, roles: Sequence[str]) -> list[int | str] | None:
        """Band selection matching ``roles`` (e.g. a model card's), else the declared bands."""
        wanted = [r.lower() for r in roles]
        if self.roles and all(r in self.roles for r in wanted):
            picks = [self.roles.index(r) for r in wanted]
            return [self.bands[i] if self.bands else i + 1 for i in picks]
        return self.bands


class LabelSpec(StrictModel):
    """Reference labels: a class raster, or polygons with a class attribute."""

    path: str
    kind: Literal["raster", "vector"] = Field(description="inferred from the file extension")
    band: int = Field(1, ge=1, description="raster: band holding the classes")
    encoding: Literal["ids", "rgb"] = Field(
        "ids", description="raster: pixel values are class ids, or RGB colours of the class table")
    ignore: int | None = Field(None, description="raster: value of unlabelled pixels "
                               "(default: the file's nodata)")  # fmt: skip
    class_field: str | None = Field(None, description="vector: attribute with the class id or name")
    class_value: int | None = Field(None, ge=0, le=254, description="vector: one class for every "
                                    "feature (e.g. building footprints)")  # fmt: skip
    layer: str | None = Field(None, description="vector: layer name (default: the first)")

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"path": data}
        if isinstance(data, dict) and "kind" not in data and isinstance(data.get("path"), str):
            ext = os.path.splitext(data["path"].split("?")[0])[1].lower()
            if ext in VECTOR_EXT:
                data = {**data, "kind": "vector"}
            elif ext in RASTER_EXT:
                data = {**data, "kind": "raster"}
            else:
                raise ValueError(f"cannot tell from {ext or 'no extension'!r} whether the labels "
                                 "are a raster or vectors; add kind: raster or kind: vector")
        return data

    @model_validator(mode="after")
    def _vector_field(self) -> LabelSpec:
        if self.kind == "vector" and (self.class_field is None) == (self.class_value is None):
            raise ValueError("vector labels need either class_field (the attribute holding the "
                             "class) or class_value (one class for all features)")
        if self.kind == "raster" and (self.class_field or self.class_value is not None):
            raise ValueError("class_field/class_value apply to vector labels only; remove them")
        return self


class CatalogScene(StrictModel):
    """One scene: co-registered modalities (the first sets the grid), labels, split."""

    id: str = Field(pattern=ID_PATTERN, description="unique; names the scene's outputs")
    modalities: dict[str, ModalitySpec] = Field(min_length=1)
    labels: LabelSpec | None = None
    split: Literal["train", "val", "test"] | None = None
    datetime: dt.datetime | None = Field(None, description="acquisition time (ISO 8601)")

    @field_validator("modalities")
    @classmethod
    def _names(cls, v: dict[str, ModalitySpec]) -> dict[str, ModalitySpec]:
        import re

        bad = [n for n in v if not re.match(NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"modality name {bad[0]!r} must be lower case letters, digits and _ "
                             "(e.g. image, height, dem)")  # fmt: skip
        return v

    @property
    def reference(self) -> str:
        """Name of the modality whose grid the scene uses (the first)."""
        return next(iter(self.modalities))

    @property
    def sources(self) -> dict[str, str]:
        return {n: m.path for n, m in self.modalities.items()}

    def open(self, modalities: Sequence[str] | None = None,
             bands: Mapping[str, Sequence[int | str] | None] | None = None) -> Scene:  # fmt: skip
        """Open the scene lazily (all modalities, or the named ones in that order).

        Args:
            modalities: names to open; the first sets the grid. Default: all, catalog order.
            bands: per modality, bands overriding the catalog's selection.
        """
        names = list(modalities) if modalities else list(self.modalities)
        for n in names:
            if n not in self.modalities:
                raise InputError(f"scene {self.id!r} has no modality {n!r} (it has "
                                 f"{list(self.modalities)}); add {n} to the scene in the catalog")
        bands = bands or {}
        return Scene.open(
            {n: self.modalities[n].path for n in names},
            bands={n: bands.get(n, self.modalities[n].bands) for n in names},
            resampling={n: r for n in names if (r := self.modalities[n].resampling)},
        )  # fmt: skip


class CatalogSpec(StrictModel):
    """A scene catalog file."""

    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    classes: list[ClassInfo] = Field(default_factory=list)
    scenes: list[CatalogScene] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CatalogSpec:
        for what, values in (("scene id", [s.id for s in self.scenes]),
                             ("class id", [c.id for c in self.classes]),
                             ("class name", [c.name for c in self.classes])):  # fmt: skip
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"{what} {dup[0]!r} appears more than once; make it unique")
        if any(s.labels and s.labels.encoding == "rgb" for s in self.scenes):
            colors = [c.color for c in self.classes]
            if not colors or len(set(colors)) != len(colors):
                raise ValueError("labels with encoding: rgb need a class table with one distinct "
                                 "color per class")  # fmt: skip
        return self


# --------------------------------------------------------------------------- catalog


class Catalog:
    """A loaded catalog: scenes with absolute paths, class table, where it came from."""

    def __init__(self, spec: CatalogSpec, source: str | Path | None = None):
        self.spec = spec
        self.source = Path(source) if source is not None else None

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a YAML catalog or a STAC Collection/ItemCollection/Catalog (JSON)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: catalog file not found; check the path")
        from geoseg.catalog import stac

        if stac.is_stac(path):
            return stac.load_stac(path)
        data, node = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a catalog is a mapping with a scenes: list; "
                              "see docs/catalogs.md")  # fmt: skip
        spec = parse(CatalogSpec, data, path, node)
        return cls(resolve_paths(spec, path.parent), path)

    @property
    def name(self) -> str:
        return self.spec.name or (self.source.stem if self.source else "catalog")

    @property
    def scenes(self) -> list[CatalogScene]:
        return list(self.spec.scenes)

    @property
    def classes(self) -> list[ClassInfo]:
        return list(self.spec.classes)

    def __len__(self) -> int:
        return len(self.spec.scenes)

    def __iter__(self) -> Iterator[CatalogScene]:
        return iter(self.spec.scenes)

    def scene(self, scene_id: str) -> CatalogScene:
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
            spec = _map_paths(spec, lambda p: _relative(p, Path(relative_to)))
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


def load_catalog(path: str | Path) -> Catalog:
    """Shorthand for ``Catalog.load``."""
    return Catalog.load(path)


# --------------------------------------------------------------------------- paths


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
    return _map_paths(spec, lambda p: resolve_href(p, base))


def _relative(path: str, base: Path) -> str:
    if not is_local(path):
        return path
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive (Windows)
        return path


def _map_paths(spec: CatalogSpec, fn: Callable[[str], str]) -> CatalogSpec:
    scenes = []
    for s in spec.scenes:
        mods = {n: m.model_copy(update={"path": fn(m.path)}) for n, m in s.modalities.items()}
        labels = s.labels.model_copy(update={"path": fn(s.labels.path)}) if s.labels else None
        scenes.append(s.model_copy(update={"modalities": mods, "labels": labels}))
    return spec.model_copy(update={"scenes": scenes})


# --------------------------------------------------------------------------- YAML + errors


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; also return its node tree (for line numbers in error messages)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}); fix the syntax") from None


M = typing.TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, path: Path | str, node: yaml.Node | None = None,
          prefix: tuple = ()) -> M:  # fmt: skip
    """Validate ``data`` against ``model``; errors become one-line ConfigErrors."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, path, data, node, model, prefix) from None


def config_error(exc: ValidationError, path: Path | str, data: Any, node: yaml.Node | None,
                 model: type[BaseModel], prefix: tuple = ()) -> ConfigError:  # fmt: skip
    """One line: file:line: where: what is wrong; how to fix it (first error, count of others)."""
    # unknown keys first: a misspelt key also shows up as a missing one
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = _data_loc(data, err["loc"])
    line = _line_of(node, prefix + loc)
    where = f"{path}:{line}" if line else str(path)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        at = _fmt_loc(prefix + loc[:-1]) or "the top level"
        return ConfigError(f"{where}: unknown key {key!r} in {at}; {hint}allowed keys: "
                           f"{', '.join(allowed)}{more}")  # fmt: skip
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = f"missing required key {str(loc[-1])!r}; add it"
        loc = loc[:-1] if loc else loc
        at = _fmt_loc(prefix + loc) or "the top level"
        return ConfigError(f"{where}: {at}: {msg}{more}")
    at = _fmt_loc(prefix + loc) or "the top level"
    fix = "" if ";" in msg else "; fix this value"
    return ConfigError(f"{where}: {at}: {msg}{fix}{more}")


def _data_loc(data: Any, loc: Sequence) -> tuple:
    """Keep the parts of a pydantic location that exist in the data (drop union-member tags)."""
    out: list = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        if in_dict or (isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict | list):
            if isinstance(part, str) and not part.startswith(("function-", "union", "int", "str")):
                out.append(part)  # a missing key: name it, stop walking
                break
        else:
            break
    return tuple(out)


def _fmt_loc(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: Sequence) -> int | None:
    """1-based line of the deepest node of ``loc`` found in the YAML node tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _allowed_keys(model: type[BaseModel], loc: Sequence) -> list[str]:
    """Field names of the model found at ``loc`` (following lists, dicts and optionals)."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann, part)
        if ann is None:
            return []
    ann = _unwrap(ann, None)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _unwrap(ann: Any, part: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(ann)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        ann = models[0] if models else None
        origin = None
    if part is None:
        return ann
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(str(part))
        return _unwrap(field.annotation, None) if field else None
    if origin in (list, Sequence, tuple) and isinstance(part, int):
        return _unwrap(typing.get_args(ann)[0], None)
    if origin in (dict, Mapping):
        return _unwrap(typing.get_args(ann)[1], None)
    return None


# --------------------------------------------------------------------------- validation


@dataclass
class CatalogCheck:
    """Result of ``validate_catalog``: one row per scene and every problem found."""

    rows: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        return format_table(self.rows)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain fixed-width text table of dict rows (keys of the first row are the columns)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]  # fmt: skip
    return "\n".join(lines)


def validate_catalog(catalog: Catalog, pixels: bool = True) -> CatalogCheck:
    """Check every scene: files exist and open, bands resolve, grids overlap, labels match.

    Args:
        pixels: also read the data (a decimated probe of each raster, every label value
            against the class table); off, only headers are read.
    """
    check = CatalogCheck()
    counts: dict[str, dict[str, int]] = {}
    bad: set[str] = set()
    for s in catalog.scenes:
        row, problems, counts[s.id] = _check_scene(s, catalog.classes, pixels)
        check.rows.append(row)
        check.problems += [f"scene {s.id!r}: {p}" for p in problems]
        bad |= {s.id} if problems else set()
    for sid, problem in _consistency(catalog.scenes, counts):
        check.problems.append(f"scene {sid!r}: {problem}")
        bad.add(sid)
    for row in check.rows:
        row["status"] = "PROBLEM" if row["scene"] in bad else "ok"
    return check


def _check_scene(s: CatalogScene, classes: Sequence[ClassInfo],
                 pixels: bool) -> tuple[dict[str, str], list[str], dict[str, int]]:  # fmt: skip
    row = {"scene": s.id, "split": s.split or "-", "modalities": "", "size": "?", "crs": "?",
           "res": "?", "labels": s.labels.kind if s.labels else "-", "status": ""}  # fmt: skip
    problems: list[str] = []
    counts: dict[str, int] = {}
    for name, m in s.modalities.items():
        try:
            counts[name] = _check_modality(m, pixels)
        except GeosegError as exc:
            problems.append(f"modality {name!r}: {exc}")
    row["modalities"] = " ".join(f"{n}:{counts.get(n, '?')}" for n in s.modalities)
    if problems:
        return row, problems, counts
    try:
        grid = s.open().grid
    except GeosegError as exc:
        return row, [str(exc)], counts
    row["size"] = f"{grid.width}x{grid.height}"
    row["crs"] = _crs_name(grid.crs)
    row["res"] = f"{grid.resolution[0]:.4g}"
    if s.labels:
        problems += [f"labels: {p}" for p in _check_labels(s.labels, grid, classes, pixels)]
    return row, problems, counts


def _open(path: str):
    import rasterio
    from rasterio.errors import RasterioIOError

    if is_local(path) and not os.path.exists(path):
        raise InputError(f"{path}: file not found; fix the path in the catalog")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        detail = str(exc).splitlines()[0]
        raise InputError(f"{path}: cannot be opened as a raster ({detail}); replace the "
                         "file or fix its path") from None  # fmt: skip


def _check_modality(m: ModalitySpec, pixels: bool) -> int:
    from geoseg.scene.scene import resolve_bands

    with _open(m.path) as ds:
        idx = resolve_bands(m.path, ds, m.bands)
        if m.roles is not None and m.bands is None and len(m.roles) != ds.count:
            raise InputError(f"{m.path}: roles names {len(m.roles)} band(s) but the file has "
                             f"{ds.count}; select bands with bands: or fix roles")  # fmt: skip
        if pixels:
            _probe(ds, m.path, idx[0])
    return len(idx)


def _probe(ds, path: str, band: int) -> None:
    """Read a decimated overview of a band: truncated or corrupt files fail here."""
    from rasterio.errors import RasterioError

    h, w = min(ds.height, 256), min(ds.width, 256)
    try:
        ds.read(band, out_shape=(h, w))
    except RasterioError as exc:
        detail = str(exc).splitlines()[0]
        raise InputError(f"{path}: pixels cannot be read ({detail}); the file is corrupt or "
                         "truncated: replace it") from None  # fmt: skip


def _crs_name(crs: Any) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_dict().get("proj") or "custom")


def _check_labels(lab: LabelSpec, grid: Any, classes: Sequence[ClassInfo],
                  pixels: bool) -> list[str]:  # fmt: skip
    try:
        if lab.kind == "raster":
            values, crs, bounds = _raster_label_values(lab, pixels)
        else:
            values, crs, bounds = _vector_label_values(lab, pixels)
    except GeosegError as exc:
        return [str(exc)]
    problems = []
    if crs is None:
        problems.append(f"{lab.path}: has no CRS; assign one so labels can be placed on the scene")
    elif not _overlaps(bounds, crs, grid):
        problems.append(f"{lab.path}: does not overlap the scene's grid; check that labels and "
                        "imagery cover the same area")  # fmt: skip
    if not classes:
        problems.append("the catalog has labels but no classes: table; add one (id, name, color)")
    elif values is not None:
        known: set = ({c.color for c in classes} if lab.encoding == "rgb"
                      else {c.id for c in classes} | {c.name for c in classes})  # fmt: skip
        extra = sorted((v for v in values if v not in known), key=str)
        if extra:
            what = "colours" if lab.encoding == "rgb" else "values"
            problems.append(f"{lab.path}: label {what} {extra[:8]} are not in the class table "
                            f"({len(classes)} classes); add them to classes: or set ignore:")
    return problems


def _raster_label_values(lab: LabelSpec, pixels: bool) -> tuple[set | None, Any, tuple]:
    import numpy as np

    with _open(lab.path) as ds:
        need = 3 if lab.encoding == "rgb" else lab.band
        if ds.count < need:
            raise InputError(f"{lab.path}: has {ds.count} band(s), labels need band {need}; "
                             "fix band: or encoding:")  # fmt: skip
        crs, bounds = ds.crs, tuple(ds.bounds)
        if not pixels:
            return None, crs, bounds
        ignore = lab.ignore if lab.ignore is not None else ds.nodata
        values: set = set()
        for _, win in ds.block_windows(1):
            if lab.encoding == "rgb":
                rgb = ds.read([1, 2, 3], window=win).reshape(3, -1).T.astype(np.uint32)
                packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
                values |= {f"#{int(v):06x}" for v in packed}
            else:
                vals = np.unique(ds.read(lab.band, window=win))
                values |= {int(v) if float(v).is_integer() else float(v) for v in vals}
            if len(values) > 1024:  # not a class raster; stop scanning
                break
        if ignore is not None and lab.encoding == "ids":
            values.discard(int(ignore) if float(ignore).is_integer() else ignore)
        return values, crs, bounds


def _vector_label_values(lab: LabelSpec, pixels: bool) -> tuple[set | None, Any, tuple]:
    import pyogrio
    from rasterio.crs import CRS

    if is_local(lab.path) and not os.path.exists(lab.path):
        raise InputError(f"{lab.path}: file not found; fix the path in the catalog")
    try:
        info = pyogrio.read_info(lab.path, layer=lab.layer, force_total_bounds=True)
    except Exception as exc:  # pyogrio raises several unrelated error types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{lab.path}: cannot be opened as vectors ({detail}); replace the "
                         "file or fix its path/layer") from None  # fmt: skip
    fields = list(info["fields"])
    crs = CRS.from_user_input(info["crs"]) if info.get("crs") else None
    bounds = tuple(info["total_bounds"])
    if lab.class_field is None:
        return {lab.class_value}, crs, bounds
    if lab.class_field not in fields:
        raise InputError(f"{lab.path}: no attribute {lab.class_field!r} (it has {fields}); "
                         "fix class_field")  # fmt: skip
    if not pixels:
        return None, crs, bounds
    df = pyogrio.read_dataframe(lab.path, layer=lab.layer, columns=[lab.class_field],
                                read_geometry=False)  # fmt: skip
    values = {v.item() if hasattr(v, "item") else v for v in df[lab.class_field].dropna().unique()}
    return values, crs, bounds


def _overlaps(bounds: tuple, crs: Any, grid: Any) -> bool:
    from rasterio.warp import transform_bounds

    try:
        left, bottom, right, top = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
    except Exception:
        return False
    gl, gb, gr, gt = grid.bounds
    return left < gr and right > gl and bottom < gt and top > gb


def _consistency(scenes: Sequence[CatalogScene],
                 counts: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str]]:  # fmt: skip
    """Modalities and band counts every scene should share (those of the majority)."""
    from collections import Counter

    problems = []
    n = len(scenes)
    names = Counter(name for s in scenes for name in s.modalities)
    for name, have in names.items():
        if have * 2 <= n:
            continue  # a minority modality: not expected of every scene
        bands = Counter(c[name] for c in counts.values() if name in c)
        usual = bands.most_common(1)[0][0] if bands else None
        for s in scenes:
            if name not in s.modalities:
                problems.append((s.id, f"has no modality {name!r} that {have} of {n} scenes "
                                       f"have; add it to the scene or remove the scene"))
            elif usual is not None and counts[s.id].get(name, usual) != usual:
                problems.append((s.id, f"modality {name!r} has {counts[s.id][name]} band(s) but "
                                       f"{bands[usual]} other scene(s) have {usual}; select "
                                       f"{usual} with bands:"))  # fmt: skip
    return problems
