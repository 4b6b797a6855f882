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

Step types come from an explicit table (``geoseg.pipeline.steps.BUILTIN_STEPS``: predict,
train, evaluate); ``register_step("name", MyStep)`` or the ``geoseg.pipeline_steps`` entry point
group add others (a ``StepBase`` subclass with a ``run(ctx) -> StepOutcome`` method).

Relative paths in the file resolve against the file's folder. A step may refer to an earlier
step's output as ``@name`` (its ``model`` output) or ``@name.key``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import Field

from geoseg.catalog.paths import outside_paths_allowed
from geoseg.config import StrictModel, load_yaml, parse
from geoseg.errors import ConfigError
from geoseg.pipeline.base import PipelineContext, StepBase, StepOutcome
from geoseg.pipeline.steps import BUILTIN_STEPS

log = logging.getLogger(__name__)


S = TypeVar("S", bound=type[StepBase])
STEP_TYPES: dict[str, type[StepBase]] = dict(BUILTIN_STEPS)
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
    """The class of a step type: the table, registered steps, then entry points."""
    if name not in STEP_TYPES:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                obj = ep.load()
                if isinstance(obj, type):
                    register_step(name, obj)
    return STEP_TYPES.get(name)


# --------------------------------------------------------------------------- schema


class PipelineSpec(StrictModel):
    """Top level of a pipeline file (steps are validated by their own classes)."""

    version: Literal[1] = 1
    name: str = ""
    description: str = ""
    catalog: str | None = Field(None, description="default catalog of the steps")
    workdir: str | None = Field(None, description="outputs root (default ./results/<name>)")
    progress: bool = True
    allow_outside_paths: bool = Field(
        False, description="let catalogs point outside their folder (through .. or symbolic "
        "links): trust the catalogs this pipeline names")
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
        with outside_paths_allowed(True if self.spec.allow_outside_paths else None):
            for step in self.steps:
                if only and step.name not in only:
                    continue
                log.info("pipeline %s: step %s (%s)", self.name, step.name, step.type)
                outcome = step.run(ctx)
                ctx.outputs[str(step.name)] = outcome.outputs
                result.outcomes[str(step.name)] = outcome
                if echo:
                    echo(f"step {step.name}: {'ok' if outcome.ok else 'PARTIAL'} — "
                         f"{outcome.summary}")  # fmt: skip
        return result


def _parse_step(raw: Any, path: Path, node: yaml.Node | None, i: int) -> StepBase:
    from geoseg.config import line_of as _line_of

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


def load_pipeline(path: str | Path) -> Pipeline:
    """Shorthand for ``Pipeline.load``."""
    return Pipeline.load(path)


__all__ = ["STEP_TYPES", "Pipeline", "PipelineContext", "PipelineResult", "StepBase", "StepOutcome",
           "load_pipeline", "register_step"]
