"""CLI: ``geoseg train PIPELINE.yaml`` and ``geoseg evaluate --model BUNDLE``.

``register(cli)`` adds both commands to the main ``geoseg`` group. Errors are GeosegErrors
(one line on stderr, exit 2); a pipeline whose steps partly failed exits 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from geoseg._files import safe_name
from geoseg.cli.options import options_from, predict_options
from geoseg.errors import ConfigError, InputError


@click.command("train")
@click.argument("pipeline")
@click.option("--profile", default=None, help="Profile of the steps (e.g. smoke, full); "
              "default: each step's profile: key.")
@click.option("--workdir", default=None, help="Outputs root (default: the pipeline's).")
@click.option("--step", "only", multiple=True, help="Run only this step (repeatable).")
@click.option("--device", default=None, help="Override the device: cpu, cuda, cuda:1, auto.")
@click.option("--steps", "n_steps", type=int, default=None, help="Override the number of steps.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the run folder's last checkpoint.")
@click.option("--stop-after", type=int, default=None,
              help="Stop after this many steps in this session (checkpointed; for time-sliced "
              "jobs): re-run to continue.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--folds", type=click.IntRange(2, 50), default=None,
              help="k-fold cross-validation by label features (split.by: features): mean ± std "
              "of mIoU/OA/kappa over the folds (cv_report.md).")
@click.option("--compare", is_flag=True, help="Also train the per-pixel random forest and "
              "LightGBM on the same split; one table of per-class IoU, mIoU, OA, kappa, time "
              "(compare.md).")
def train_cmd(pipeline: str, profile: str | None, workdir: str | None, only: tuple[str, ...],
              device: str | None, n_steps: int | None, resume: bool, stop_after: int | None,
              no_progress: bool, folds: int | None, compare: bool) -> None:  # fmt: skip
    """Train the model(s) of PIPELINE (its train steps, then its other steps).

    Under torchrun (``torchrun --nproc_per_node N -m geoseg.cli.main train PIPELINE``) each process
    trains on its own windows with DistributedDataParallel; rank 0 writes the outputs.
    """
    from geoseg.pipeline.pipeline import Pipeline

    pipe = Pipeline.load(pipeline)
    _check_train_pipeline(pipe, pipeline, profile)
    if stop_after is not None and (folds or compare):
        raise InputError("--stop-after cannot be combined with --folds or --compare; run "
                         "the folds to the end (each resumes on its own)")  # fmt: skip
    session = {"stop_after": stop_after, "folds": folds, "compare": compare}
    steps = [_override(s, profile, device, n_steps, resume, session) for s in pipe.steps]
    run = type(pipe)(pipe.spec, steps, pipe.source)
    if stop_after is not None:
        only = only or tuple(str(s.name) for s in steps if s.type == "train")
    result = run.run(workdir, only=list(only) or None, progress=not no_progress, echo=click.echo)
    if not result.ok:
        sys.exit(1)


def _check_train_pipeline(pipe: Any, pipeline: str, profile: str | None) -> None:
    """The pipeline has a train step, and ``--profile`` (if given) is defined by some step."""
    from geoseg.pipeline.profiles import Profiled

    if not any(s.type == "train" for s in pipe.steps):
        raise ConfigError(f"{pipeline}: no step of type train; use `geoseg run` for other "
                          "pipelines, or add a train step")  # fmt: skip
    if profile is not None and not any(
            isinstance(s, Profiled) and profile in s.profiles for s in pipe.steps):
        names = sorted({p for s in pipe.steps if isinstance(s, Profiled) for p in s.profiles})
        raise ConfigError(f"{pipeline}: no step has profile {profile!r}; profiles: "
                          f"{names or 'none'}")  # fmt: skip


def _override(step: Any, profile: str | None, device: str | None, n_steps: int | None,
              resume: bool, session: dict[str, Any]) -> Any:  # fmt: skip
    """``step`` with the command line's profile and overrides, validated before anything runs."""
    from geoseg.pipeline.profiles import Profiled

    if not isinstance(step, Profiled):
        return step
    over: dict[str, Any] = {}
    if device is not None:
        over["device"] = device
    if step.type == "train":
        if n_steps is not None:
            over["steps"] = n_steps
        if not resume:
            over["resume"] = False
    step = step.with_profile(profile if profile in step.profiles else None, over,
                             session if step.type == "train" else {})  # fmt: skip
    step.config()  # the effective settings must validate before anything runs
    return step


@click.command("pretrain")
@click.argument("pipeline")
@click.option("--profile", default=None, help="Profile of the steps (e.g. smoke, full).")
@click.option("--workdir", default=None, help="Outputs root (default: the pipeline's).")
@click.option("--step", "only", multiple=True, help="Only this train step (repeatable).")
@click.option("--device", default=None, help="Override the device: cpu, cuda, cuda:1, auto.")
@click.option("--steps", "n_steps", type=int, default=None, help="Pre-training steps.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def pretrain_cmd(pipeline: str, profile: str | None, workdir: str | None, only: tuple[str, ...],
                 device: str | None, n_steps: int | None, no_progress: bool) -> None:  # fmt: skip
    """Self-supervised pre-training of the train steps of PIPELINE on unlabelled windows.

    Masked reconstruction of the bands (no labels read) into <run>/pretrain. A train step with
    a pretrain: block starts from it (and runs it first when it is missing).
    """
    from geoseg.pipeline.pipeline import Pipeline
    from geoseg.pipeline.profiles import Profiled

    pipe = Pipeline.load(pipeline)
    _check_train_pipeline(pipe, pipeline, profile)
    steps = []
    for s in pipe.steps:
        if s.type == "train" and isinstance(s, Profiled):
            over: dict[str, Any] = {"pretrain": {"steps": n_steps} if n_steps else {}}
            if device is not None:
                over["device"] = device
            s = s.with_profile(profile if profile in s.profiles else None, over,
                               {"pretrain_only": True})  # fmt: skip
            s.config()
        steps.append(s)
    names = list(only) or [str(s.name) for s in steps if s.type == "train"]
    run = type(pipe)(pipe.spec, steps, pipe.source)
    result = run.run(workdir, only=names, progress=not no_progress, echo=click.echo)
    if not result.ok:
        sys.exit(1)


@click.command("evaluate")
@click.argument("image", required=False)
@click.option("--model", required=True, help="Model bundle folder (or .onnx).")
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--labels", default=None, help="Labels of IMAGE: class raster or vector file.")
@click.option("--class-field", default=None, help="Vector labels: attribute with ids/names.")
@click.option("--class-value", type=int, default=None, help="Vector labels: one class for all.")
@click.option("--label-band", type=int, default=1, show_default=True, help="Raster label band.")
@click.option("--ignore-value", type=int, default=None,
              help="Raster label value of unlabelled pixels (default: its nodata).")
@click.option("--modality", multiple=True, help="Extra modality of IMAGE: NAME=PATH.")
@click.option("--catalog", default=None, help="Evaluate labelled scenes of this catalog.")
@click.option("--allow-outside-paths", "allow_outside", is_flag=True, default=None,
              help="Let --catalog point outside its folder: only for catalogs you trust.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Catalog scenes of this split only.")
@click.option("--scene", "scene_ids", multiple=True, help="Catalog scene id (repeatable).")
@click.option("--holdout", default=None,
              help="A train_report.json: score its held-out validation areas only.")
@click.option("--ignore-class", multiple=True, help="Class id/name left out of mIoU.")
@click.option("--background", type=int, default=None,
              help="Vector labels: class id of pixels outside every polygon.")
@click.option("--extent", type=click.Choice(["scene", "labels"]), default="scene",
              show_default=True, help="Vector labels: area where --background applies.")
@predict_options()
def evaluate_cmd(image: str | None, model: str, out: str, labels: str | None, **kw: Any) -> None:
    """Evaluate a bundle against labels: IMAGE with --labels, a --catalog, or --holdout.

    Predicts each scene with the tiled predictor, then scores it chunk by chunk: per-class
    IoU/F1/precision/recall, mIoU, overall accuracy, Cohen's kappa. Writes evaluation.json,
    evaluation.md and evaluation_confusion.png into --out.
    """
    from geoseg.evaluation.evaluate import evaluate

    sources = sum(x is not None for x in (image, kw["catalog"], kw["holdout"]))
    if sources != 1:
        raise InputError("give exactly one of: IMAGE --labels LABELS, --catalog CATALOG, "
                         "--holdout TRAIN_REPORT")  # fmt: skip
    scenes, regions, vl = _eval_scenes(image, model, labels, kw)
    rep = evaluate(model, scenes, out, options_from(kw), ignore_classes=list(kw["ignore_class"]),
                   vector_labels=vl, regions=regions)  # fmt: skip
    _echo_evaluation(rep, len(scenes), Path(out))


def _eval_scenes(image: str | None, model: str, labels: str | None,
                 kw: dict[str, Any]) -> tuple[list[Any], dict[str, Any] | None, Any]:  # fmt: skip
    """Scenes, regions (None: whole scenes) and vector-label settings of ``geoseg evaluate``."""
    from geoseg.evaluation.evaluate import holdout_regions
    from geoseg.scene.labels import VectorLabels

    vl = VectorLabels(background=kw["background"], extent=kw["extent"])
    if image is not None:
        return [_image_scene(image, model, labels, kw)], None, vl
    if kw["catalog"]:
        from geoseg.catalog.loader import load_catalog

        cat = load_catalog(kw["catalog"], kw["allow_outside"] or None)
        scenes = [s for s in cat.select(list(kw["scene_ids"]) or None, kw["split"]) if s.labels]
        return scenes, None, vl
    scenes, regions, vl_report = holdout_regions(kw["holdout"])
    return scenes, regions, vl_report if kw["background"] is None else vl


def _echo_evaluation(rep: dict[str, Any], n_scenes: int, out: Path) -> None:
    """The summary, per-class IoU/F1 and the written files, on stdout."""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.2f} %"

    click.echo(f"{n_scenes} scene(s), {rep['pixels']:,} labelled pixels "
               f"({rep['regions']}): mIoU {pct(rep['miou'])}, OA "
               f"{pct(rep['overall_accuracy'])}, kappa "
               f"{'–' if rep['kappa'] is None else round(rep['kappa'], 4)}")  # fmt: skip
    for name, c in rep["per_class"].items():
        click.echo(f"  {name:16s} IoU {pct(c['iou']):>9s}  F1 {pct(c['f1']):>9s}")
    for stem in ("evaluation.json", "evaluation.md", "evaluation_confusion.png"):
        click.echo(f"  {out / stem}")


def _image_scene(image: str, model: str, labels: str | None, kw: dict[str, Any]) -> Any:
    from geoseg.bundle.formats import read_model_card
    from geoseg.catalog.spec import CatalogScene

    if labels is None:
        raise InputError(f"{image}: give its labels with --labels (a class raster or vectors)")
    card = read_model_card(model)
    mods: dict[str, Any] = {card.reference: str(Path(image).resolve())}
    for item in kw["modality"]:
        if "=" not in item:
            raise InputError(f"--modality {item!r}: expected NAME=PATH, e.g. dem=dem.tif")
        name, path = item.split("=", 1)
        mods[name.strip()] = str(Path(path.strip()).resolve())
    lab: dict[str, Any] = {"path": str(Path(labels).resolve())}
    if kw["class_field"] is not None:
        lab["class_field"] = kw["class_field"]
    if kw["class_value"] is not None:
        lab["class_value"] = kw["class_value"]
    if lab.get("class_field") is None and lab.get("class_value") is None:
        lab.update(band=kw["label_band"])
        if kw["ignore_value"] is not None:
            lab["ignore"] = kw["ignore_value"]
    try:
        return CatalogScene.model_validate({"id": safe_name(Path(image).stem),
                                            "modalities": mods, "labels": lab})
    except ValueError as exc:
        raise InputError(f"{labels}: {str(exc).splitlines()[-1].strip()}") from None


def register(cli: click.Group) -> None:
    """Add ``train`` and ``evaluate`` to the ``geoseg`` command group."""
    cli.add_command(train_cmd)
    cli.add_command(pretrain_cmd)
    cli.add_command(evaluate_cmd)

