"""Jobs: a request resolved into what to run (checked at submission, so a queued job only
fails for reasons found while running), running it with THE predict job of ``geoseg.runs``
(``predict`` for one scene, ``predict_catalog`` for several or a catalog), its progress, and
what the API shows of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator

from geoseg._files import safe_name
from geoseg.config import StrictModel, format_validation_error
from geoseg.errors import InputError
from geoseg.runs.options import PredictOptions
from geoseg.service.access import AccessError, check_url, inside, is_url, resolve_path
from geoseg.service.bundles import find_model, raster_modalities
from geoseg.service.settings import ServiceSettings

if TYPE_CHECKING:
    from geoseg.catalog.spec import CatalogScene

#: PredictOptions fields the server sets itself (they name its files or its cluster)
SERVER_OPTIONS = {"tiles_dir": "the server keeps tile stores in its data folder",
                  "scheduler": "the server runs jobs on its own cluster (--scheduler)",
                  "progress": "progress is reported by the API"}  # fmt: skip


class JobRequest(StrictModel):
    """``POST /api/v1/jobs``: one scene, several scenes or a catalog, a model, predict options
    (the names of ``geoseg predict``'s flags, validated by the same model)."""

    model: str = Field(description="model name (GET /api/v1/models)")
    scene: str | None = Field(None, description="a scene id (POST /api/v1/scenes)")
    scenes: list[str] | None = Field(None, min_length=1, max_length=1000)
    catalog: str | None = Field(None, description="catalog file relative to an allowed root")
    root: str | None = Field(None, description="allowed root holding the catalog")
    options: dict[str, Any] = Field(default_factory=dict, description="PredictOptions fields")
    name: str | None = Field(None, max_length=100, description="label of the job")

    @model_validator(mode="after")
    def _one(self) -> JobRequest:
        given = [k for k in ("scene", "scenes", "catalog") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of scene, scenes or catalog")
        return self


def parse_job_request(data: Any) -> JobRequest:
    """Validate a job request; a problem is one line naming the key and the fix."""
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "job", model=JobRequest, data=data)) from None


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """The user's predict options, validated by ``PredictOptions`` (only those given are kept,
    so the defaults stay those of ``geoseg predict``)."""
    for key, why in SERVER_OPTIONS.items():
        if key in options:
            raise InputError(f"options.{key}: set by the server ({why}); remove it")
    try:
        opts = PredictOptions.model_validate(options)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "options", model=PredictOptions,
                                                 data=options)) from None  # fmt: skip
    return opts.model_dump(mode="json", include=set(options))


def resolve_job(req: JobRequest, user_id: int, settings: ServiceSettings,
                scene_of: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:  # fmt: skip
    """The stored spec of a job: model path, scenes (their modalities) or catalog path, options;
    anything that cannot run is refused now with a one-line error."""
    model_path, card = find_model(settings.models, req.model)
    options = validate_options(req.options)
    inputs = raster_modalities(card)
    spec: dict[str, Any] = {"model": req.model, "model_path": str(model_path), "options": options,
                            "classes": [c.model_dump() for c in card.classes], "scenes": [],
                            "catalog": None, "label": req.name}  # fmt: skip
    if req.catalog is not None:
        path = resolve_path(req.catalog, settings.allow_roots, req.root, "catalog")
        spec["catalog"] = str(path)
        spec["kind"] = "catalog"
        _check_catalog(path, settings.allow_roots)
        spec["lock"] = _lock_key(str(model_path), [str(path)])
        return spec
    ids = [req.scene] if req.scene is not None else list(req.scenes or [])
    names: set[str] = set()
    for sid in ids:
        spec["scenes"].append(_job_scene(sid, scene_of(sid), req.model, inputs, names))
    spec["kind"] = "scene" if req.scene is not None else "scenes"
    spec["lock"] = _lock_key(str(model_path),
                             sorted(s["modalities"][next(iter(s["modalities"]))]["path"]
                                    for s in spec["scenes"]))  # fmt: skip
    return spec


def _job_scene(sid: str, scene: dict[str, Any] | None, model: str, inputs: list[str],
               names: set[str]) -> dict[str, Any]:  # fmt: skip
    """A registered scene as a job runs it, under a name unique in ``names`` (added to it);
    refused when it is unknown or lacks a modality the model needs."""
    if scene is None:
        raise LookupError(f"scene {sid!r}: no such scene; register it with POST /api/v1/scenes")
    extra = list(scene["modalities"])[1:]
    missing = [m for m in inputs[1:] if m not in extra]
    if missing:
        raise InputError(f"scene {sid!r}: model {model!r} also needs modality "
                         f"{missing[0]!r}; register the scene with modalities: "
                         f"{{{missing[0]}: PATH}}")  # fmt: skip
    name = safe_name(scene["name"], "scene")[:80]
    base, n = name, 1
    while name in names:
        n += 1
        name = f"{base}-{n}"
    names.add(name)
    return {"id": sid, "name": name, "modalities": scene["modalities"],
            "bounds": scene["info"].get("bounds"),
            "pixels": scene["info"]["width"] * scene["info"]["height"]}  # fmt: skip


def _lock_key(model: str, sources: list[str]) -> str:
    """Jobs with the same key share tile stores: they run one after the other."""
    return hashlib.sha256("|".join([model, *sources]).encode()).hexdigest()[:16]


def _check_catalog(path: Path, roots: tuple[Path, ...]) -> None:
    """A catalog may only name rasters under the allowed roots (or URLs)."""
    from geoseg.catalog.loader import Catalog

    catalog = Catalog.load(path)
    for scene in catalog.scenes:
        for name, mod in scene.modalities.items():
            where = f"catalog {path.name}: scene {scene.id!r} modality {name!r}"
            loc = mod.path
            if loc.startswith("/vsicurl/"):  # the loader's form of an https:// URL
                check_url(loc[len("/vsicurl/"):], where)
            elif loc.startswith("/vsis3/") or is_url(loc):
                continue
            elif "://" in loc or loc.startswith("/vsi") or not inside(loc, roots):
                raise AccessError(f"{where} lies outside the allowed roots; keep the rasters "
                                  "under an allowed root")  # fmt: skip


# --------------------------------------------------------------------------- running


class JobCancelled(BaseException):
    """Raised in a runner when its job is cancelled (a BaseException: batch runs catch
    Exception per scene, and a cancellation must stop the whole job)."""


class JobInterrupted(BaseException):
    """Raised in a runner when the server stops: the job goes back to the queue."""


class Progress:
    """Turns ``predict``'s progress hook into the job's progress (written at most every
    ``interval`` seconds, and at every change of stage)."""

    def __init__(self, write: Callable[[dict[str, Any]], None], scenes: int,
                 pixels: int | None, interval: float = 0.3):  # fmt: skip
        self.write, self.interval = write, interval
        self.state: dict[str, Any] = {"stage": "planning", "chunks_done": 0, "chunks_total": None,
                                      "scenes_done": 0, "scenes_total": scenes, "percent": 0.0,
                                      "pixels_total": pixels, "pixels_done": 0, "eta_s": None}  # fmt: skip
        self._last = 0.0
        self._t0: float | None = None
        self._done0 = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        s, now = self.state, time.time()
        changed = stage != s["stage"]
        if stage == "scene":
            s["scenes_done"], s["chunks_done"], s["chunks_total"] = done, 0, None
            self._t0 = None
        elif stage == "chunks":
            if self._t0 is None or done < self._done0:
                self._t0, self._done0 = now, done
            s["chunks_done"], s["chunks_total"] = done, total
            rate = (done - self._done0) / max(now - self._t0, 1e-6)
            s["eta_s"] = round((total - done) / rate, 1) if rate > 0 and done < total else None
        elif stage == "outputs":
            s["chunks_done"], s["chunks_total"], s["eta_s"] = done, total, None
        s["stage"] = stage
        frac = (s["chunks_done"] / s["chunks_total"]) if s["chunks_total"] else 0.0
        if stage == "outputs":
            frac = 1.0
        n = max(1, s["scenes_total"])
        s["percent"] = round(95.0 * (s["scenes_done"] + frac) / n, 1)
        if s["pixels_total"]:
            s["pixels_done"] = int(s["pixels_total"] * (s["scenes_done"] + frac) / n)
        if changed or now - self._last >= self.interval or (stage == "chunks" and done == total):
            self._last = now
            self.flush()

    def flush(self) -> None:
        self.write({**self.state, "updated": time.time()})

    def finish(self) -> None:
        s = self.state
        s.update(stage="done", percent=100.0, eta_s=None, scenes_done=s["scenes_total"])
        if s["pixels_total"]:
            s["pixels_done"] = s["pixels_total"]
        self.flush()


def run_job(job: dict[str, Any], data: Path, scheduler: str,
            write_progress: Callable[[dict[str, Any]], None],
            gpu_resource: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run a job's predictions into ``DATA/jobs/<id>/out``; returns its result summary.

    ``gpu_resource``: a job on ``device: cuda`` asks its chunk tasks for one ``GPU`` resource
    (an existing cluster whose GPU workers declare ``--resources GPU=1``).
    """
    import dask

    device = str(job["spec"]["options"].get("device", "cpu"))
    annotations = {"resources": {"GPU": 1}} if gpu_resource and device.startswith("cuda") else {}
    with dask.annotate(**annotations):
        return _run_job(job, data, scheduler, write_progress)


def _run_job(job: dict[str, Any], data: Path, scheduler: str,
             write_progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:  # fmt: skip
    from geoseg.runs.batch import scene_inputs
    from geoseg.runs.predict import predict
    from geoseg.service.bundles import read_card

    spec = job["spec"]
    model = Path(spec["model_path"])
    card = read_card(model)
    out = data / "jobs" / job["id"] / "out"
    opts = _predict_options(job, data, scheduler)
    pixels = sum(s["pixels"] for s in spec["scenes"]) or None
    progress = Progress(write_progress, max(1, len(spec["scenes"])), pixels)
    progress.flush()
    scenes = _catalog_scenes(spec["scenes"], card.reference)
    if spec["kind"] == "scene":
        image, extra, sopts = scene_inputs(scenes[0], card, opts)
        report = predict(image, model, out, extra, sopts, name=scenes[0].id,
                         progress_callback=progress)  # fmt: skip
        result = {"scenes": [_scene_result(scenes[0].id, report, out)]}
    else:
        result = _run_batch(spec, scenes, model, out, opts, progress)
    progress.finish()
    return result


def _predict_options(job: dict[str, Any], data: Path, scheduler: str) -> PredictOptions:
    """The job's options with the server's own: its tile stores, its cluster, resume on retry."""
    options = job["spec"]["options"]
    fixed: dict[str, Any] = {"tiles_dir": data / "tiles", "scheduler": scheduler, "progress": False}
    if job["attempts"] > 1:  # a retry (server restart): the store holds this job's own chunks
        fixed.update(overwrite=False, resume=True)
    if "wait" in PredictOptions.model_fields:  # a run busy elsewhere (RunLock): wait for it
        fixed["wait"] = options.get("wait", True)
    return PredictOptions(**{**options, **fixed})


def _catalog_scenes(scenes: list[dict[str, Any]], reference: str) -> list[CatalogScene]:
    """The job's scenes as catalog scenes, the main image under the model's reference modality."""
    from geoseg.catalog.spec import CatalogScene

    out = []
    for s in scenes:
        mods = list(s["modalities"].items())
        named = {reference: mods[0][1], **dict(mods[1:])}
        out.append(CatalogScene(id=s["name"], modalities=named))
    return out


def _run_batch(spec: dict[str, Any], scenes: list[CatalogScene], model: Path, out: Path,
               opts: PredictOptions, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """A catalog job, or one of several scenes: ``predict_catalog``; fails if every scene did."""
    from geoseg.catalog.loader import Catalog
    from geoseg.catalog.spec import CatalogSpec
    from geoseg.runs.batch import predict_catalog

    catalog = (Catalog.load(spec["catalog"]) if spec["kind"] == "catalog"
               else Catalog(CatalogSpec(name=spec.get("label") or "scenes", scenes=scenes)))  # fmt: skip
    if spec["kind"] == "catalog":
        progress.state["scenes_total"] = len(catalog.scenes)
    batch = predict_catalog(catalog, model, out, opts, progress_callback=progress)
    result = {"scenes": [
        {"name": r.id, "status": r.status, "error": r.error, "valid_pixels": r.valid_pixels,
         "classes": r.classes, "outputs": {k: _rel(v, out) for k, v in r.outputs.items()}}
        for r in batch.scenes], "batch_report": "batch_report.json"}  # fmt: skip
    if batch.scenes and not any(r.status != "failed" for r in batch.scenes):
        raise InputError(f"every scene failed; first: {batch.scenes[0].id}: "
                         f"{batch.scenes[0].error}")  # fmt: skip
    return result


def _rel(path: str, out: Path) -> str:
    try:
        return Path(path).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _scene_result(name: str, report: dict[str, Any], out: Path) -> dict[str, Any]:
    return {"name": name, "status": "done", "run": report.get("run"),
            "valid_pixels": report.get("valid_pixels"), "polygons": report.get("polygons"),
            "chunks": report.get("chunks"), "timings_s": report.get("timings_s"),
            "classes": report.get("classes"),
            "outputs": {k: _rel(v, out) for k, v in report.get("outputs", {}).items()}}  # fmt: skip


# --------------------------------------------------------------------------- what users see


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API returns it."""
    spec, now = job["spec"], time.time()
    started, finished = job["started"], job["finished"]
    state = job["state"]  # a cancelled running job stays "running" (cancelling) until it stops
    view = {
        "id": job["id"], "state": state, "cancelling": bool(job["cancel_requested"]) and
        state == "running", "model": spec["model"], "label": spec.get("label"),
        "kind": spec["kind"], "options": spec["options"],
        "scenes": [{"id": s["id"], "name": s["name"], "bounds": s.get("bounds")}
                   for s in spec["scenes"]],
        "progress": job["progress"] or {"stage": state, "percent": 0.0},
        "created": job["created"], "started": started, "finished": finished,
        "elapsed_s": round((finished or now) - started, 1) if started else None,
        "attempts": job["attempts"], "error": job["error"],
        "classes": spec.get("classes", []),
    }  # fmt: skip
    if state == "done":
        view["progress"] = {**view["progress"], "percent": 100.0, "stage": "done"}
    result = job["result"] or {}
    if result:
        view["result"] = result
        view["timings_s"] = {s["name"]: s.get("timings_s") for s in result.get("scenes", [])
                             if s.get("timings_s")}  # fmt: skip
    return view


def job_files(out: Path) -> dict[str, Path]:
    """The files a job's owner may download: ``{relative name: path}`` (hidden files, i.e.
    temporaries, left out; symlinks never followed)."""
    files: dict[str, Path] = {}
    if not out.is_dir():
        return files
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if any(part.startswith(".") for part in rel.parts) or p.is_symlink() or not p.is_file():
            continue
        files[rel.as_posix()] = p
    return files
