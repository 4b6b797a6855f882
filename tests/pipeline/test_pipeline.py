"""Pipeline files: strict schema with errors naming key, file and line; the step registry."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from geoseg.errors import ConfigError
from geoseg.pipeline.pipeline import (
    STEP_TYPES,
    Pipeline,
    PipelineContext,
    StepBase,
    StepOutcome,
    register_step,
)
from geoseg.pipeline.steps import PredictStep
from geoseg.runs.options import PredictOptions

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expect"), [
    ("steps:\n  - type: predict\n    model: m\n    tiel: 256\n",
     [":4:", "unknown key 'tiel' in steps[0]", "did you mean 'tile'", "allowed keys"]),
    ("catalg: c.yaml\nsteps:\n  - {type: predict, model: m}\n",
     [":1:", "unknown key 'catalg'", "did you mean 'catalog'"]),
    ("steps:\n  - type: predcit\n    model: m\n",
     [":2:", "steps[0].type: unknown step type 'predcit'", "did you mean 'predict'"]),
    ("steps:\n  - model: m\n", ["steps[0] needs a type: key"]),
    ("steps:\n  - type: predict\n    tile: 256\n", [":2:", "steps[0]", "missing required key "
                                                   "'model'"]),
    ("steps:\n  - type: predict\n    model: m\n    chunk: 4\n",
     [":4:", "steps[0].chunk", "greater than or equal to 16"]),
    ("steps:\n  - type: predict\n    model: m\n    vector: kml\n", [":4:", "steps[0].vector"]),
    ("steps: []\n", ["steps", "at least 1"]),
    ("steps:\n  - {type: predict, model: m}\n  - {type: predict, model: m, name: predict}\n",
     ["two steps are named 'predict'"]),
    ("nope: [\n", ["not valid YAML"]),
])  # fmt: skip
def test_schema_errors_name_key_and_file(tmp_path: Path, text: str, expect: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        Pipeline.load(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for part in expect:
        assert part in msg, msg


def test_predict_step_shares_predict_options(tmp_path: Path) -> None:
    path = write(tmp_path, "catalog: cats/c.yaml\nsteps:\n  - type: predict\n    model: ../m\n"
                           "    tile: 256\n    overlap: 16\n    vector: fgb\n"
                           "    modality_bands: {dem: [1]}\n  - {type: predict, model: m,"
                           " tiles_dir: t, progress: false}\n")  # fmt: skip
    pipe = Pipeline.load(path)
    first, second = pipe.steps
    assert isinstance(first, PredictStep) and (first.name, second.name) == ("predict", "predict-2")
    ctx = pipe.context(workdir=tmp_path / "w")
    opts = first.options(ctx)
    assert isinstance(opts, PredictOptions)
    assert (opts.tile, opts.overlap, opts.vector) == (256, 16, "fgb")
    assert opts.tiles_dir == tmp_path / "w" / "tiles"  # default: in the workdir
    assert second.options(ctx).tiles_dir == tmp_path / "t"  # relative to the pipeline file
    assert second.options(ctx).progress is False
    assert ctx.path(first.model) == tmp_path.parent / "m"
    # every PredictOptions key is a step key, so CLI and pipeline share names
    assert set(PredictOptions.model_fields) <= set(PredictStep.model_fields)


def test_defaults_and_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pipe = Pipeline.load(write(tmp_path, "name: demo\nsteps:\n  - {type: predict, model: m}\n"))
    ctx = pipe.context()
    assert ctx.workdir == tmp_path / "results" / "demo"
    with pytest.raises(ConfigError, match="no catalog; add catalog: PATH"):
        ctx.catalog()
    with pytest.raises(ConfigError, match="refers to step 'train', which has not run"):
        ctx.path("@train")


class EchoStep(StepBase):
    """A step registered by a test, as the training issue will register train/evaluate."""

    type: str = "echo"
    message: str
    runs: ClassVar[list[str]] = []

    def run(self, ctx: PipelineContext) -> StepOutcome:
        self.runs.append(self.message)
        model = ctx.workdir / "bundle"
        return StepOutcome(ok=self.message != "fail", summary=self.message,
                           outputs={"model": str(model), "n": len(self.runs)})  # fmt: skip


class UsesModel(StepBase):
    type: str = "uses"
    model: str

    def run(self, ctx: PipelineContext) -> StepOutcome:
        return StepOutcome(outputs={"model": str(ctx.path(self.model))})


def test_registered_steps_run_in_order(tmp_path: Path) -> None:
    register_step("echo", EchoStep)
    register_step("uses")(UsesModel)
    try:
        EchoStep.runs.clear()
        pipe = Pipeline.load(write(tmp_path, "steps:\n  - {type: echo, message: hi}\n"
                                             "  - {type: uses, model: '@echo'}\n"
                                             "  - {type: echo, message: fail, name: last}\n"))
        lines: list[str] = []
        result = pipe.run(workdir=tmp_path / "w", echo=lines.append)
        assert EchoStep.runs == ["hi", "fail"]
        assert result.outcomes["uses"].outputs["model"] == str(tmp_path / "w" / "bundle")
        assert not result.ok and result.outcomes["echo"].ok
        assert lines[-1].startswith("step last: PARTIAL")
        EchoStep.runs.clear()
        assert pipe.run(workdir=tmp_path / "w", only=["echo"]).ok and EchoStep.runs == ["hi"]
        with pytest.raises(ConfigError, match="no step 'nope'"):
            pipe.run(only=["nope"])
        bad = write(tmp_path, "steps:\n  - {type: echo, mesage: hi}\n")
        with pytest.raises(ConfigError, match=r"unknown key 'mesage'.*did you mean 'message'"):
            Pipeline.load(bad)
    finally:
        STEP_TYPES.pop("echo", None)
        STEP_TYPES.pop("uses", None)
    with pytest.raises(TypeError):
        register_step("bad", dict)  # type: ignore[arg-type]


def test_merge_vectors_needs_polygons(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(f"scenes:\n  - id: a\n    modalities:\n      image: "
                                     f"{REPO / 'tests/data/RGB.byte.tif'}\n")  # fmt: skip
    pipe = Pipeline.load(write(tmp_path, "catalog: c.yaml\nsteps:\n  - {type: predict, model: m,"
                                         " vector: none, merge_vectors: true}\n"))  # fmt: skip
    with pytest.raises(ConfigError, match="merge_vectors needs polygons; set vector: gpkg"):
        pipe.run(workdir=tmp_path / "w")


def test_example_pipelines_parse() -> None:
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        pipe = Pipeline.load(path)
        assert pipe.steps and all(s.type in STEP_TYPES for s in pipe.steps), path
