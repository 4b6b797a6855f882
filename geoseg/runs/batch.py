"""Batch prediction over the scenes of a catalog, surviving the bad ones.

Each scene goes through ``geoseg.runs.predict.predict`` into ``<out>/<scene id>/``; the runner skips
a finished run and resumes an interrupted one chunk by chunk, so re-running a batch only
computes what is missing. A scene that fails (corrupt file, missing modality...) is recorded
with its error and the batch goes on. The batch report (JSON + Markdown), the per-run log
file, the optional merged polygon layer and the optional mosaics are written in ``<out>``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from geoseg._files import atomic_write_text
from geoseg.bundle.card import ModelCard
from geoseg.catalog.loader import Catalog
from geoseg.catalog.spec import CatalogScene
from geoseg.errors import GeosegError, InputError
from geoseg.runs.options import PredictOptions

log = logging.getLogger(__name__)
#: tracebacks go to the run's log file only (never to the console)
_trace = logging.getLogger("geoseg.runs.batch.traceback")
_trace.propagate = False

Status = Literal["done", "skipped", "failed"]


@dataclass
class SceneResult:
    """Outcome of one scene of a batch."""

    id: str
    status: Status
    seconds: float
    split: str | None = None
    error: str | None = None
    run: str | None = None
    valid_pixels: int = 0
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchReport:
    """All scenes of a batch, plus the merged outputs."""

    catalog: str
    model: str
    out_dir: str
    started: str
    scenes: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0
    log_file: str | None = None
    merged_vectors: str | None = None
    mosaics: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[SceneResult]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for s in self.scenes:
            out[s.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts()}

    def to_markdown(self) -> str:
        c = self.counts()
        names = list(dict.fromkeys(n for s in self.scenes for n in s.classes))
        lines = [f"# Batch prediction: {self.catalog}", "",
                 f"- model: `{self.model}`", f"- started: {self.started} "
                 f"({self.seconds:.1f} s)", f"- scenes: {len(self.scenes)} — {c['done']} done, "
                 f"{c['skipped']} skipped (already finished), {c['failed']} failed"]  # fmt: skip
        if self.log_file:
            lines.append(f"- log: `{self.log_file}`")
        if self.merged_vectors:
            lines.append(f"- merged polygons: `{self.merged_vectors}`")
        lines += [f"- mosaic: `{m}`" for m in self.mosaics]
        lines += [f"- problem: {p}" for p in self.problems]
        head = ["scene", "split", "status", "time (s)", "valid px", *(f"{n} area" for n in names),
                "error"]  # fmt: skip
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in self.scenes:
            areas = [_area(s.classes.get(n, {}).get("area_m2")) for n in names]
            err = (s.error or "").replace("|", "\\|")
            lines.append(f"| {s.id} | {s.split or '-'} | {s.status} | {s.seconds:.1f} | "
                         f"{s.valid_pixels} | " + " | ".join([*areas, err]) + " |")  # fmt: skip
        return "\n".join(lines) + "\n"


def _area(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v / 1e6:,.2f} km²" if v >= 1e5 else f"{v:,.1f} m²"


def scene_inputs(scene: CatalogScene, card: ModelCard, options: PredictOptions
                 ) -> tuple[str, dict[str, str], PredictOptions]:  # fmt: skip
    """The runner's arguments for a scene: image, extra modalities, options with bands.

    Bands come from the options when given there, else from the catalog: the bands whose
    roles match the model card's band names, else the catalog's band selection.
    """
    missing = [m for m in card.raster_modalities if m not in scene.modalities]
    if missing:
        raise InputError(f"scene {scene.id!r} has no modality {missing[0]!r}, which the model "
                         f"needs (it has {list(scene.modalities)}); add it to the catalog")
    ref = card.reference
    image = scene.modalities[ref].path
    extra = {n: scene.modalities[n].path for n in card.raster_modalities if n != ref}
    bands = options.bands
    if bands is None:
        bands = scene.modalities[ref].bands_for(card.modalities[ref].bands)
    mod_bands = dict(options.modality_bands)
    for n in extra:
        if n not in mod_bands:
            sel = scene.modalities[n].bands_for(card.modalities[n].bands)
            if sel is not None:
                mod_bands[n] = sel
    return image, extra, options.model_copy(update={"bands": bands, "modality_bands": mod_bands})


def predict_catalog(
    catalog: Catalog,
    model: str | Path,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    *,
    scenes: Sequence[str] | None = None,
    split: str | None = None,
    merge_vectors: str | Path | None = None,
    merge_crs: str | None = None,
    mosaic: bool = False,
    log_file: str | Path | None = None,
    fail_fast: bool = False,
    progress_callback: Callable[[str, int, int], None] | None = None,
) -> BatchReport:
    """Predict every (selected) scene of ``catalog``; a failing scene does not stop the batch.

    Args:
        scenes, split: restrict to these scene ids and/or this split.
        merge_vectors: write all scenes' polygons into this one layer (with a scene_id field).
        merge_crs: CRS of the merged layer (default: the scenes' CRS if they share one, else
            EPSG:4326).
        mosaic: mosaic the class rasters of adjacent scenes of one CRS into COGs.
        log_file: log of this run (default ``<out>/logs/batch-<UTC time>.log``).
        fail_fast: stop at the first failing scene.
        progress_callback: ``("scene", scenes done, scenes)`` before each scene, then the
            scene's own ``predict`` progress (the service follows a batch with it).
    """
    from geoseg.bundle.folder import read_card

    opts = options or PredictOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = read_card(model)  # a bad bundle fails the whole batch at once, before any scene
    selected = catalog.select(scenes, split)
    started = datetime.now(UTC)
    log_path = Path(log_file) if log_file else (
        out / "logs" / f"batch-{started.strftime('%Y%m%dT%H%M%SZ')}.log")  # fmt: skip
    report = BatchReport(catalog=str(catalog.source or catalog.name), model=str(model),
                         out_dir=str(out), started=started.isoformat(timespec="seconds"),
                         log_file=str(log_path))  # fmt: skip
    t0 = time.perf_counter()
    with _log_to(log_path):
        log.info("batch: %d scene(s) of %s with %s into %s", len(selected), report.catalog,
                 model, out)  # fmt: skip
        try:
            _predict_scenes(report, selected, card, model, out, opts, fail_fast, progress_callback)
            _finish(report, card, merge_vectors, merge_crs, mosaic, out)
        finally:
            report.seconds = round(time.perf_counter() - t0, 3)
            write_report(report, out)
            c = report.counts()
            log.info("batch: %d done, %d skipped, %d failed in %.1f s; report %s",
                     c["done"], c["skipped"], c["failed"], report.seconds,
                     out / "batch_report.md")  # fmt: skip
    return report


def _predict_scenes(report: BatchReport, selected: Sequence[CatalogScene], card: ModelCard,
                    model: str | Path, out: Path, opts: PredictOptions, fail_fast: bool,
                    progress_callback: Callable[[str, int, int], None] | None = None) -> None:  # fmt: skip
    """Predict scene after scene into ``report`` (a failure is recorded, not raised)."""
    bar = tqdm(selected, unit="scene", desc="scenes", disable=not opts.progress)
    try:
        for i, scene in enumerate(bar):
            bar.set_postfix_str(scene.id)
            if progress_callback is not None:
                progress_callback("scene", i, len(selected))
            result = _predict_scene(scene, card, model, out, opts, progress_callback)
            report.scenes.append(result)
            if opts.progress:
                bar.write(f"{scene.id}: {result.status} ({result.seconds:.1f} s)"
                          + (f" — {result.error}" if result.error else ""))
            if fail_fast and result.status == "failed":
                break
    finally:
        bar.close()


def _predict_scene(scene: CatalogScene, card: ModelCard, model: str | Path, out: Path,
                   opts: PredictOptions,
                   progress_callback: Callable[[str, int, int], None] | None = None,
                   ) -> SceneResult:  # fmt: skip
    from geoseg.runs.predict import predict

    t = time.perf_counter()
    scene_dir = out / scene.id
    try:
        image, extra, sopts = scene_inputs(scene, card, opts)
        report_path = scene_dir / f"{scene.id}_report.json"
        before = report_path.stat().st_mtime_ns if report_path.exists() else None
        rep = predict(image, model, scene_dir, extra, sopts, name=scene.id,
                      progress_callback=progress_callback)  # fmt: skip
    except Exception as exc:
        msg = _one_line(exc)
        log.error("scene %s failed: %s", scene.id, msg)
        _trace.error("scene %s failed", scene.id, exc_info=True)
        return SceneResult(scene.id, "failed", round(time.perf_counter() - t, 3), scene.split,
                           error=msg)  # fmt: skip
    after = report_path.stat().st_mtime_ns if report_path.exists() else None
    status: Status = "skipped" if before is not None and before == after else "done"
    log.info("scene %s: %s", scene.id, status)
    return SceneResult(
        scene.id, status, round(time.perf_counter() - t, 3), scene.split, run=rep.get("run"),
        valid_pixels=int(rep.get("valid_pixels", 0)), classes=rep.get("classes", {}),
        outputs={k: v for k, v in rep.get("outputs", {}).items()
                 if k in ("classes", "confidence", "probabilities", "vectors", "report")},
    )  # fmt: skip


def _one_line(exc: BaseException) -> str:
    """The first line of a geoseg error (it names the file and the fix); ``Type: first line``
    of another, with its cause when the message only points to it."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, GeosegError) and text:
        return text[0]
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or "previous exception" in text[0]):
        line += f" ({_one_line(cause)})"
    return line


def _finish(report: BatchReport, card: ModelCard, merge: str | Path | None, crs: str | None,
            do_mosaic: bool, out: Path) -> None:  # fmt: skip
    good = [s for s in report.scenes if s.status != "failed"]
    if merge is not None:
        try:
            report.merged_vectors = str(merge_vector_layers(good, merge, crs))
        except Exception as exc:
            report.problems.append(f"merged polygons: {_one_line(exc)}")
            log.error("merged polygons failed: %s", _one_line(exc))
    if do_mosaic:
        try:
            report.mosaics = [str(p) for p in mosaic_scenes(good, out)]
        except Exception as exc:
            report.problems.append(f"mosaic: {_one_line(exc)}")
            log.error("mosaic failed: %s", _one_line(exc))


def merge_vector_layers(results: Iterable[SceneResult], path: str | Path,
                        crs: str | None = None) -> Path:  # fmt: skip
    """One polygon layer from the scenes' layers, with a ``scene_id`` field.

    Not rewritten when it is newer than its sources and was made from the same scenes.
    """
    from geoseg.outputs.vectors import write_vectors

    results = list(results)
    path = Path(path)
    sources = [r.outputs.get("vectors", "") for r in results]
    key = {"scenes": [r.id for r in results], "crs": crs}
    if _up_to_date(path, sources, key):
        log.info("merged polygons %s: up to date", path)
        return path
    merged = _merged_frame(results, crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_vectors(merged, path, layer=path.stem)
    _stamp(path, key)
    return path


def _merged_frame(results: list[SceneResult], crs: str | None):
    """The scenes' polygons in one GeoDataFrame (``crs``, else the shared one, else WGS 84)."""
    import geopandas as gpd
    import pandas as pd

    frames = []
    for r in results:
        src = r.outputs.get("vectors")
        if not src:
            raise InputError(f"scene {r.id!r} has no polygon layer; predict with a vector "
                             "format (not vector: none) to merge polygons")  # fmt: skip
        # a GeoPackage also holds the QGIS layer_styles table: read the polygon layer by name
        gdf = gpd.read_file(src, layer=Path(src).stem) if src.endswith(".gpkg") else \
            gpd.read_file(src)
        gdf.insert(0, "scene_id", r.id)
        frames.append(gdf)
    crss = {f.crs.to_wkt() for f in frames if f.crs is not None}
    target = crs or (frames[0].crs if len(crss) == 1 else "EPSG:4326")
    if not frames:
        return gpd.GeoDataFrame({"scene_id": [], "class_id": [], "class_name": [],
                                 "area_m2": []}, geometry=[], crs=target)  # fmt: skip
    return gpd.GeoDataFrame(pd.concat([f.to_crs(target) for f in frames], ignore_index=True),
                            crs=target)  # fmt: skip


def _stamp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.sources.json")


def _stamp(target: Path, key: dict[str, Any]) -> None:
    atomic_write_text(_stamp_path(target), json.dumps(key))


def _up_to_date(target: Path, sources: Sequence[str], key: dict[str, Any]) -> bool:
    """True when ``target`` was made from ``key`` and is newer than every source."""
    stamp = _stamp_path(target)
    try:
        if json.loads(stamp.read_text()) != key:
            return False
        t = target.stat().st_mtime_ns
        return all(Path(s).stat().st_mtime_ns <= t for s in sources)
    except (OSError, ValueError):
        return False


def mosaic_scenes(results: Iterable[SceneResult], out: Path) -> list[Path]:
    """Mosaic the class rasters of adjacent scenes of one CRS: ``<out>/mosaic_<n>.tif``."""
    from geoseg.outputs.mosaic import group_adjacent, mosaic

    rasters = [r.outputs["classes"] for r in results if r.outputs.get("classes")]
    written = []
    for i, group in enumerate(g for g in group_adjacent(rasters) if len(g) > 1):
        target = out / f"mosaic_{i + 1}.tif"
        key = {"rasters": group}
        if not _up_to_date(target, group, key):
            mosaic(group, target)
            _stamp(target, key)
            log.info("mosaic %s from %d scenes", target, len(group))
        written.append(target)
    for old in out.glob("mosaic_*.tif"):  # groups of an earlier run that no longer exist
        if old not in written:
            old.unlink(missing_ok=True)
            _stamp_path(old).unlink(missing_ok=True)
    return written


def write_report(report: BatchReport, out: Path) -> tuple[Path, Path]:
    """``batch_report.json`` and ``batch_report.md`` in ``out`` (written atomically)."""
    js, md = out / "batch_report.json", out / "batch_report.md"
    atomic_write_text(js, json.dumps(report.to_dict(), indent=2, default=str))
    atomic_write_text(md, report.to_markdown())
    return js, md


@contextmanager
def _log_to(path: Path):
    """Send geoseg's log records (INFO and up, plus failure tracebacks) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("geoseg")
    level = root.level
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    _trace.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        _trace.removeHandler(handler)
        root.setLevel(level)
        handler.close()
