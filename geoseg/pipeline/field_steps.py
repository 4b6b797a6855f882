"""The field steps of a pipeline: ``field_polygons`` (a 3-class prediction -> one polygon per
field, fiboa GeoParquet) and ``field_stats`` (per-field class fractions, areas and spectral-index
statistics). Both take the class rasters of an earlier ``predict`` step (``@predict``: one per
scene) or a raster path; ``field_stats`` takes the fields of a ``field_polygons`` step
(``@fields``, paired by scene) or one vector file for every scene.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from geoseg.errors import ConfigError
from geoseg.pipeline.base import PipelineContext, StepBase, StepOutcome


def _per_scene(ctx: PipelineContext, value: str, key: str) -> dict[str, Path]:
    """``@step`` (its ``key`` output: one path per scene), ``@step.key`` or a path."""
    if value.startswith("@"):
        ref = ctx.ref(value if "." in value else f"{value}.{key}")
        if isinstance(ref, dict):
            return {str(k): Path(v) for k, v in ref.items() if v}
        return {Path(str(ref)).stem: Path(str(ref))}
    path = ctx.path(value)
    return {path.stem.removesuffix("_classes"): path}


def _out(ctx: PipelineContext, out: str | None, name: str | None, kind: str) -> Path:
    folder = ctx.path(out) if out else ctx.workdir / str(name or kind)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class FieldPolygonsStep(StepBase):
    """One polygon per field from 3-class predictions (background, interior, boundary)."""

    type: Literal["field_polygons"] = "field_polygons"
    prediction: str = Field(description="@predict (its class COG of every scene), a class or "
                            "score raster, or a prediction run folder")  # fmt: skip
    out: str | None = Field(None, description="output folder (default <workdir>/<step name>)")
    format: Literal["parquet", "gpkg", "fgb"] = Field("parquet", description="parquet: fiboa "
                                                      "GeoParquet")  # fmt: skip
    chunk: int = Field(1024, ge=16, description="chunk size (the result does not depend on it)")
    grow: int = Field(2, ge=0, description="pixels interiors grow into the boundary class")
    min_area: float = Field(0.0, ge=0, description="drop fields smaller than this (m²)")
    simplify: float = Field(0.0, ge=0, description="simplification tolerance (CRS units)")
    nodata: float | Literal["auto", "none"] = Field("auto", description="nodata of the rasters: "
                                                    "auto (their tag), none, or a value")  # fmt: skip
    interior: int = Field(1, ge=0, le=254)
    boundary: int = Field(2, ge=0, le=254)
    datetime: dt.datetime | None = Field(None, description="determination_datetime (image date)")

    def run(self, ctx: PipelineContext) -> StepOutcome:
        """Delineate the fields of every raster into the step's folder."""
        from geoseg.fields.delineate import Delineation, delineate_fields
        from geoseg.fields.raster import open_class_raster, parse_nodata

        out = _out(ctx, self.out, self.name, self.type)
        how = Delineation(interior=self.interior, boundary=self.boundary, grow=self.grow,
                          chunk=self.chunk, min_area=self.min_area, simplify=self.simplify)  # fmt: skip
        files: dict[str, str] = {}
        total = 0
        for scene, raster in _per_scene(ctx, self.prediction, "classes").items():
            src = open_class_raster(raster, nodata=parse_nodata(str(self.nodata)))
            res = delineate_fields(src, out / f"{scene}_fields.{self.format}", how,
                                   determination_datetime=self.datetime, collection=scene)  # fmt: skip
            files[scene] = str(res["files"][0])
            total += res["fields"]
        return StepOutcome(ok=True, summary=f"{total} fields in {len(files)} scene(s) -> {out}",
                           outputs={"fields": files, "out": str(out)})  # fmt: skip


class FieldStatsStep(StepBase):
    """Per-field ground area, class fractions, valid fraction and spectral-index statistics."""

    type: Literal["field_stats"] = "field_stats"
    fields: str = Field(description="@field_polygons step (its fields of every scene) or one "
                        "vector file (any CRS) used for every scene")  # fmt: skip
    prediction: str = Field(description="@predict (class COG of every scene) or a class raster")
    out: str | None = Field(None, description="output folder (default <workdir>/<step name>)")
    format: Literal["parquet", "gpkg"] = "parquet"
    indices: list[str] = Field(default_factory=list, description="indices of each scene's "
                               "catalog modality (e.g. [ndvi, ndre]); none: classes only")  # fmt: skip
    catalog: str | None = Field(None, description="catalog of the scenes (default: the pipeline's)")
    modality: str | None = Field(None, description="modality the indices are computed from "
                                 "(default: the scene's first); its catalog roles name the bands")
    scale: float = Field(1.0, description="reflectance = value * scale + offset")
    offset: float = 0.0
    percentiles: list[float] = Field(default_factory=lambda: [10.0, 50.0, 90.0])
    block: int = Field(2048, ge=16, description="raster block (px) the fields are grouped by")
    nodata: float | Literal["auto", "none"] = "auto"

    def run(self, ctx: PipelineContext) -> StepOutcome:
        """Measure the fields of every scene into the step's folder."""
        from geoseg.fields.raster import open_class_raster, parse_nodata
        from geoseg.fields.scene import open_index_scene
        from geoseg.fields.stats import StatsOptions, field_stats

        out = _out(ctx, self.out, self.name, self.type)
        rasters = _per_scene(ctx, self.prediction, "classes")
        many = self.fields.startswith("@")
        fields = _per_scene(ctx, self.fields, "fields") if many else {}
        opts = StatsOptions(percentiles=tuple(self.percentiles), block=self.block)
        files: dict[str, str] = {}
        counts = {"fields": 0, "outside": 0}
        for scene, raster in rasters.items():
            vec = fields.get(scene) if many else ctx.path(self.fields)
            if vec is None:
                raise ConfigError(f"{ctx.source}: step {self.name!r}: no fields for scene "
                                  f"{scene!r} in {self.fields}; fix fields:")  # fmt: skip
            index_scene: Any = None
            if self.indices:
                catalog = ctx.catalog(self.catalog)
                index_scene = open_index_scene(
                    scene, ",".join(self.indices), scale=self.scale, offset=self.offset,
                    catalog=str(catalog.source), modality=self.modality)  # fmt: skip
            src = open_class_raster(raster, nodata=parse_nodata(str(self.nodata)))
            res = field_stats(vec, src, out / f"{scene}_field_stats.{self.format}",
                              scene=index_scene, options=opts)  # fmt: skip
            files[scene] = str(res["files"][0])
            counts["fields"] += res["fields"]
            counts["outside"] += res["outside"]
        summary = (f"{counts['fields']} fields ({counts['outside']} outside their raster) in "
                   f"{len(files)} scene(s) -> {out}")  # fmt: skip
        return StepOutcome(ok=True, summary=summary, outputs={"stats": files, "out": str(out)})


__all__ = ["FieldPolygonsStep", "FieldStatsStep"]
