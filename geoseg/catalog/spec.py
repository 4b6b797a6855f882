"""The catalog schema: strict models of scenes, their modalities and labels, and the catalog file.

A catalog is a YAML file (or a STAC Collection/ItemCollection, see ``geoseg.catalog.stac``)
validated by these models: unknown keys are errors naming the key, the file and the line
(``geoseg.config.format_validation_error``). ``CatalogScene.open`` opens a geoseg ``Scene``;
loading files is ``geoseg.catalog.loader``'s job.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from geoseg.config import StrictModel
from geoseg.errors import InputError
from geoseg.scene.classes import ClassInfo
from geoseg.scene.scene import Scene

#: scene ids become file and folder names: keep them portable
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
SPLITS = ("train", "val", "test")
RASTER_EXT = {".tif", ".tiff", ".vrt", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".bmp", ".h5",
              ".hdf5", ".bsq", ".dat", ".nc"}  # fmt: skip
VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".gml", ".kml"}


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
        """Path of each modality, by name."""
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
