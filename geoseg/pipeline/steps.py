"""The built-in pipeline steps, in one explicit table: ``predict``, ``train``, ``evaluate`` and
the field steps ``field_polygons`` and ``field_stats`` (``geoseg.pipeline.field_steps``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from geoseg._files import safe_name
from geoseg.errors import ConfigError
from geoseg.evaluation.evaluate import evaluate, holdout_regions
from geoseg.pipeline.base import PipelineContext, StepBase, StepOutcome
from geoseg.pipeline.field_steps import FieldPolygonsStep, FieldStatsStep
from geoseg.pipeline.profiles import Profiled
from geoseg.runs.options import PredictOptions
from geoseg.scene.labels import VectorLabels
from geoseg.training.config import TrainConfig


class PredictStep(StepBase, PredictOptions):
    """Predict the scenes of a catalog (keys of ``PredictOptions`` = ``geoseg predict`` options)."""

    type: Literal["predict"] = "predict"
    model: str = Field(description="model bundle folder, or @step for an earlier step's model")
    catalog: str | None = Field(None, description="default: the pipeline's catalog")
    scenes: list[str] | None = Field(None, description="scene ids (default: all)")
    split: Literal["train", "val", "test"] | None = None
    out: str | None = Field(None, description="output folder (default <workdir>/<step name>)")
    merge_vectors: bool | str = Field(
        False, description="true or a path: one polygon layer of all scenes (scene_id field)")
    merge_crs: str | None = Field(None, description="CRS of the merged layer")
    mosaic: bool = Field(False, description="mosaic class rasters of adjacent scenes per CRS")
    fail_fast: bool = Field(False, description="stop at the first failing scene")

    def options(self, ctx: PipelineContext) -> PredictOptions:
        """The PredictOptions part; paths resolved, tiles in the workdir unless set."""
        return _predict_options(self, ctx)

    def run(self, ctx: PipelineContext) -> StepOutcome:
        """Predict the selected scenes of the catalog into the step's folder."""
        from geoseg.runs.batch import predict_catalog

        catalog = ctx.catalog(self.catalog)
        out, model = _out_dir(ctx, self.out, self.name), ctx.path(self.model)
        merge = None
        if self.merge_vectors is True:
            merge = out / f"{safe_name(catalog.name, default='catalog')}_polygons.gpkg"
        elif isinstance(self.merge_vectors, str):
            merge = ctx.path(self.merge_vectors)
        if merge is not None and self.vector == "none":
            raise ConfigError(f"{ctx.source}: step {self.name!r}: merge_vectors needs polygons; "
                              "set vector: gpkg (or shp, parquet, fgb)")  # fmt: skip
        report = predict_catalog(catalog, model, out, self.options(ctx), scenes=self.scenes,
                                 split=self.split, merge_vectors=merge, merge_crs=self.merge_crs,
                                 mosaic=self.mosaic, fail_fast=self.fail_fast)  # fmt: skip
        c = report.counts()
        summary = (f"{len(report.scenes)} scene(s): {c['done']} done, {c['skipped']} skipped, "
                   f"{c['failed']} failed; report {out / 'batch_report.md'}")  # fmt: skip
        outputs: dict[str, Any] = {
            "out": str(out), "report": str(out / "batch_report.json"),
            "failed": [s.id for s in report.failed], "log": report.log_file,
            "classes": {s.id: s.outputs.get("classes") for s in report.scenes
                        if s.status != "failed"},
            "merged_vectors": report.merged_vectors, "mosaics": report.mosaics}  # fmt: skip
        return StepOutcome(ok=report.ok, summary=summary, outputs=outputs)


def _out_dir(ctx: PipelineContext, out: str | None, name: str | None) -> Path:
    """A step's output folder: ``out`` (relative to the pipeline file), else <workdir>/<name>."""
    return ctx.path(out) if out else ctx.workdir / str(name)


def _predict_options(step: PredictOptions, ctx: PipelineContext) -> PredictOptions:
    """The PredictOptions part of a step's settings: tiles in the workdir unless set (else
    relative to the pipeline file), progress only when the run shows it."""
    data = step.model_dump(include=set(PredictOptions.model_fields))
    data["tiles_dir"] = (ctx.path(step.tiles_dir) if "tiles_dir" in step.model_fields_set
                         else ctx.workdir / "tiles")  # fmt: skip
    data["progress"] = step.progress and ctx.progress
    return PredictOptions(**data)



class TrainStep(StepBase, Profiled, TrainConfig):
    """Train a model on labelled scenes; outputs ``model`` (the best bundle), ``last``, ``report``."""

    config_class: ClassVar[Any] = TrainConfig
    type: Literal["train"] = "train"

    def run(self, ctx: PipelineContext) -> StepOutcome:
        """Train (or resume) into the step's folder."""
        from geoseg.training.loop import train

        cfg: TrainConfig = self.config()
        out = _out_dir(ctx, cfg.out, self.name)
        if self._session.get("pretrain_only"):  # geoseg pretrain
            from geoseg.training.pretrain import run_pretraining

            path = run_pretraining(cfg, out, resolve=ctx.path, default_catalog=ctx.catalog_path,
                                   source=str(ctx.source), progress=ctx.progress)  # fmt: skip
            return StepOutcome(ok=True, summary=f"pre-trained bundle {path}",
                               outputs={"model": str(path), "out": str(out)})  # fmt: skip
        folds, compare = self._session.get("folds"), self._session.get("compare")
        if folds or compare:
            return _study(cfg, out, ctx, folds, bool(compare))
        res = train(cfg, out, resolve=ctx.path, default_catalog=ctx.catalog_path,
                    source=str(ctx.source), progress=ctx.progress,
                    stop_after=self._session.get("stop_after"))
        m = res.best_metrics or {}
        miou = m.get("miou")
        summary = (f"{res.status}; best validation mIoU "
                   f"{'–' if miou is None else f'{100 * miou:.2f} %'}; bundle {res.best}")
        outputs: dict[str, Any] = {"model": str(res.best), "last": str(res.last),
                                   "report": str(res.report), "history": str(res.history),
                                   "out": str(res.out), "status": res.status}  # fmt: skip
        return StepOutcome(ok=res.status != "failed", summary=summary, outputs=outputs)


def _study(cfg: TrainConfig, out: Path, ctx: PipelineContext, folds: int | None,
           compare: bool) -> StepOutcome:  # fmt: skip
    """``--folds`` / ``--compare``: the runs, and the table of their scores."""
    from geoseg.training.crossval import study
    from geoseg.training.loop import train

    def one(c: TrainConfig, o: Path) -> Any:
        return train(c, o, resolve=ctx.path, default_catalog=ctx.catalog_path,
                     source=str(ctx.source), progress=ctx.progress)  # fmt: skip

    rep = study(cfg, out, folds=folds, compare=compare, train=one, source=str(ctx.source))
    rows = [f"{name} mIoU {100 * (m['summary']['miou']['mean'] or 0):.2f} %"
            + (f" ± {100 * (m['summary']['miou']['std'] or 0):.2f}" if folds else "")
            for name, m in rep["models"].items()]  # fmt: skip
    summary = "; ".join(rows) + f"; table {rep['paths']['md']}"
    # a following evaluate step (@train, @train.report) gets the first run (fold 0)
    first = rep["first_run"]
    outputs: dict[str, Any] = {"model": first["model"], "report": first["report"], "out": str(out),
                               "table": rep["paths"]["json"], "status": "finished"}  # fmt: skip
    return StepOutcome(ok=True, summary=summary, outputs=outputs)


class EvaluateConfig(PredictOptions):
    """Keys of an ``evaluate`` step besides type/name/profiles (plus every predict option)."""

    model: str = Field(description="bundle folder, or @train for a training step's best model")
    catalog: str | None = Field(None, description="default: the pipeline's catalog")
    scenes: list[str] | None = Field(None, description="scene ids (default: labelled scenes)")
    split: Literal["train", "val", "test"] | None = None
    holdout: str | None = Field(None, description="a train_report.json (or @train.report): "
                                "score its held-out validation areas only")  # fmt: skip
    vector_labels: VectorLabels = Field(default_factory=VectorLabels)
    ignore_classes: list[int | str] = Field(default_factory=list)
    score_chunk: int = Field(1024, ge=16, description="chunk size of the scoring pass")
    out: str | None = Field(None, description="default <workdir>/<step name>")


class EvaluateStep(StepBase, Profiled, EvaluateConfig):
    """Evaluate a bundle on labelled scenes (whole scenes, or a training run's held-out area)."""

    config_class: ClassVar[Any] = EvaluateConfig
    type: Literal["evaluate"] = "evaluate"

    def run(self, ctx: PipelineContext) -> StepOutcome:
        """Predict and score the scenes (or the held-out areas) into the step's folder."""
        cfg: EvaluateConfig = self.config()
        out, model = _out_dir(ctx, cfg.out, self.name), ctx.path(cfg.model)
        regions = None
        vl = cfg.vector_labels
        if cfg.holdout:
            scenes, regions, vl = holdout_regions(ctx.path(cfg.holdout))
            if "vector_labels" in cfg.model_fields_set:
                vl = cfg.vector_labels
        else:
            catalog = ctx.catalog(cfg.catalog)
            scenes = [s for s in catalog.select(cfg.scenes, cfg.split) if s.labels is not None]
        rep = evaluate(model, scenes, out, _predict_options(cfg, ctx),
                       ignore_classes=cfg.ignore_classes, vector_labels=vl, regions=regions,
                       chunk=cfg.score_chunk)  # fmt: skip
        miou = rep["miou"]
        summary = (f"{len(scenes)} scene(s), mIoU {'–' if miou is None else f'{100 * miou:.2f} %'}"
                   f", OA {100 * (rep['overall_accuracy'] or 0):.2f} %; report "
                   f"{out / 'evaluation.md'}")  # fmt: skip
        return StepOutcome(ok=True, summary=summary,
                           outputs={"report": str(out / "evaluation.json"), "out": str(out),
                                    "miou": miou})  # fmt: skip


BUILTIN_STEPS: dict[str, type[StepBase]] = {
    "predict": PredictStep,
    "train": TrainStep,
    "evaluate": EvaluateStep,
    "field_polygons": FieldPolygonsStep,
    "field_stats": FieldStatsStep,
}
