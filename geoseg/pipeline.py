"""Pipelines: a YAML file with a list of steps over a catalog, run by ``geoseg run``.

::

    version: 1
    name: demo
    catalog: ../catalogs/vendored.yaml      # default catalog of every step
    workdir: ../results/demo                # default: ./results/<name>
    steps:
      - type: predict                        # keys of PredictOptions = `geoseg predict` options
        model: ../models/unet
        tile: 256
        vector: gpkg
        merge_vectors: true
        mosaic: true

Steps are looked up in a registry by their ``type``: ``register_step("train", TrainStep)``
adds one (a ``StepBase`` subclass with a ``run(ctx) -> StepOutcome`` method). A type that is
not registered yet is imported from ``geoseg.<type>`` (or the ``geoseg.pipeline_steps`` entry
point group) before giving up, so step modules register themselves on import.

Relative paths in the file resolve against the file's folder. A step may refer to an earlier
step's output as ``@name`` (its ``model`` output) or ``@name.key``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import Field

from geoseg.catalog import Catalog, load_yaml, parse
from geoseg.config import StrictModel
from geoseg.errors import ConfigError
from geoseg.runner import PredictOptions

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    """What a step reports: ``ok`` False means it finished but some items failed."""

    ok: bool = True
    summary: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


class StepBase(StrictModel):
    """Fields every step has; subclasses add their own and implement ``run``."""

    type: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                             description="unique step name (default: the type)")  # fmt: skip

    def run(self, ctx: PipelineContext) -> StepOutcome:
        raise NotImplementedError


S = TypeVar("S", bound=type[StepBase])
STEP_TYPES: dict[str, type[StepBase]] = {}
ENTRY_POINT_GROUP = "geoseg.pipeline_steps"


def register_step(name: str, cls: type[StepBase] | None = None) -> Any:
    """Register a step class under ``name``; also usable as ``@register_step("name")``."""

    def add(c: S) -> S:
        if not (isinstance(c, type) and issubclass(c, StepBase)):
            raise TypeError(f"step {name!r}: {c!r} is not a StepBase subclass")
        STEP_TYPES[name] = c
        return c

    return add(cls) if cls is not None else add


def step_class(name: str) -> type[StepBase] | None:
    """The class of a step type, importing ``geoseg.<name>`` or entry points on first use."""
    if name in STEP_TYPES:
        return STEP_TYPES[name]
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        try:
            importlib.import_module(f"geoseg.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"geoseg.{name}":
                raise
    if name not in STEP_TYPES:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                obj = ep.load()
                if isinstance(obj, type) and name not in STEP_TYPES:
                    register_step(name, obj)
    return STEP_TYPES.get(name)


# --------------------------------------------------------------------------- context


@dataclass
class PipelineContext:
    """What steps share: paths, the default catalog, progress, earlier steps' outputs."""

    source: Path
    workdir: Path
    catalog_path: str | None = None
    progress: bool = True
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _catalogs: dict[Path, Catalog] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    def path(self, value: str | Path) -> Path:
        """A path of the pipeline file: ``@step[.key]`` reference, or relative to its folder."""
        text = str(value)
        if text.startswith("@"):
            return Path(self.ref(text))
        p = Path(text).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def ref(self, text: str) -> Any:
        """Value of ``@step`` (its ``model`` output) or ``@step.key``."""
        step, _, key = text[1:].partition(".")
        if step not in self.outputs:
            raise ConfigError(f"{self.source}: {text!r} refers to step {step!r}, which has not run "
                              f"before this one (ran: {list(self.outputs)}); fix the reference")
        key = key or "model"
        if key not in self.outputs[step]:
            raise ConfigError(f"{self.source}: step {step!r} has no output {key!r} (it has "
                              f"{list(self.outputs[step])}); fix {text!r}")  # fmt: skip
        return self.outputs[step][key]

    def catalog(self, override: str | None = None) -> Catalog:
        """The step's catalog, else the pipeline's (loaded once)."""
        ref = override or self.catalog_path
        if ref is None:
            raise ConfigError(f"{self.source}: no catalog; add catalog: PATH at the top level "
                              "or to the step")  # fmt: skip
        path = self.path(ref)
        if path not in self._catalogs:
            self._catalogs[path] = Catalog.load(path)
        return self._catalogs[path]


# --------------------------------------------------------------------------- schema


class PipelineSpec(StrictModel):
    """Top level of a pipeline file (steps are validated by their own classes)."""

    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    catalog: str | None = Field(None, description="default catalog of the steps")
    workdir: str | None = Field(None, description="outputs root (default ./results/<name>)")
    progress: bool = True
    steps: list[dict[str, Any]] = Field(min_length=1)


@dataclass
class PipelineResult:
    """Outcomes by step name."""

    outcomes: dict[str, StepOutcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes.values())


@dataclass
class Pipeline:
    """A validated pipeline file."""

    spec: PipelineSpec
    steps: list[StepBase]
    source: Path

    @property
    def name(self) -> str:
        return self.spec.name or self.source.stem

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: pipeline file not found; check the path")
        data, node = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a pipeline is a mapping with a steps: list; see "
                              "pipelines/ for examples")  # fmt: skip
        spec = parse(PipelineSpec, data, path, node)
        steps: list[StepBase] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(spec.steps):
            step = _parse_step(raw, path, node, i)
            seen[step.type] = n = seen.get(step.type, 0) + 1
            if step.name is None:  # unnamed steps: predict, predict-2, ...
                step = step.model_copy(update={"name": step.type if n == 1 else f"{step.type}-{n}"})
            steps.append(step)
        names = [s.name for s in steps]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ConfigError(f"{path}: two steps are named {dup!r}; give each a unique name: key")
        return cls(spec, steps, path.resolve())

    def context(self, workdir: str | Path | None = None, progress: bool | None = None
                ) -> PipelineContext:  # fmt: skip
        if workdir is not None:
            wd = Path(workdir).resolve()
        elif self.spec.workdir:
            wd = (self.source.parent / self.spec.workdir).resolve()
        else:
            wd = (Path.cwd() / "results" / self.name).resolve()
        return PipelineContext(self.source, wd, self.spec.catalog,
                               self.spec.progress if progress is None else progress)

    def run(self, workdir: str | Path | None = None, only: list[str] | None = None,
            progress: bool | None = None,
            echo: Callable[[str], None] | None = None) -> PipelineResult:  # fmt: skip
        """Run the steps in order (or only the named ones); later steps see earlier outputs."""
        ctx = self.context(workdir, progress)
        unknown = [n for n in only or [] if n not in {s.name for s in self.steps}]
        if unknown:
            raise ConfigError(f"{self.source}: no step {unknown[0]!r}; steps are "
                              f"{[s.name for s in self.steps]}")  # fmt: skip
        result = PipelineResult()
        for step in self.steps:
            if only and step.name not in only:
                continue
            log.info("pipeline %s: step %s (%s)", self.name, step.name, step.type)
            outcome = step.run(ctx)
            ctx.outputs[str(step.name)] = outcome.outputs
            result.outcomes[str(step.name)] = outcome
            if echo:
                echo(f"step {step.name}: {'ok' if outcome.ok else 'PARTIAL'} — {outcome.summary}")
        return result


def _parse_step(raw: Any, path: Path, node: yaml.Node | None, i: int) -> StepBase:
    from geoseg.catalog import _line_of

    line = _line_of(node, ("steps", i))
    where = f"{path}:{line}" if line else str(path)
    if not isinstance(raw, dict) or "type" not in raw:
        raise ConfigError(f"{where}: steps[{i}] needs a type: key (one of "
                          f"{sorted(STEP_TYPES)})")  # fmt: skip
    kind = str(raw["type"])
    cls = step_class(kind)
    if cls is None:
        close = difflib.get_close_matches(kind, list(STEP_TYPES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        line = _line_of(node, ("steps", i, "type")) or line
        raise ConfigError(f"{path}:{line}: steps[{i}].type: unknown step type {kind!r}; {hint}"
                          f"registered types: {', '.join(sorted(STEP_TYPES))}")  # fmt: skip
    return parse(cls, raw, path, node, prefix=("steps", i))


# --------------------------------------------------------------------------- predict step


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

    STEP_KEYS: ClassVar[set[str]] = {"type", "name", "model", "catalog", "scenes", "split", "out",
                                     "merge_vectors", "merge_crs", "mosaic", "fail_fast"}

    def options(self, ctx: PipelineContext) -> PredictOptions:
        """The PredictOptions part; paths resolved, tiles in the workdir unless set."""
        data = self.model_dump(exclude=self.STEP_KEYS)
        data["tiles_dir"] = (ctx.path(self.tiles_dir) if "tiles_dir" in self.model_fields_set
                             else ctx.workdir / "tiles")  # fmt: skip
        data["progress"] = self.progress and ctx.progress
        return PredictOptions(**data)

    def run(self, ctx: PipelineContext) -> StepOutcome:
        from geoseg.batch import predict_catalog

        catalog = ctx.catalog(self.catalog)
        out = ctx.path(self.out) if self.out else ctx.workdir / str(self.name)
        model = ctx.path(self.model)
        merge = None
        if self.merge_vectors is True:
            merge = out / f"{_safe(catalog.name)}_polygons.gpkg"
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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "catalog"


register_step("predict", PredictStep)


def load_pipeline(path: str | Path) -> Pipeline:
    """Shorthand for ``Pipeline.load``."""
    return Pipeline.load(path)


__all__ = ["STEP_TYPES", "Pipeline", "PipelineContext", "PipelineResult", "PredictStep",
           "StepBase", "StepOutcome", "load_pipeline", "register_step"]  # fmt: skip
