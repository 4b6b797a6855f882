"""What every pipeline step shares: its base class, its outcome and the run context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from geoseg.catalog.loader import Catalog
from geoseg.config import StrictModel
from geoseg.errors import ConfigError


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
        """Do the step's work in ``ctx``; errors are GeosegErrors naming the pipeline file."""
        raise NotImplementedError


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
        """The pipeline file's folder (relative paths of the file start here)."""
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
