"""Setting a prediction run up: the scene against the card, the tile plan, the run id, the
output paths. Nothing is computed here; :func:`plan_run` fails fast on bad input."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from geoseg.bundle.card import ModelCard
from geoseg.bundle.formats import is_onnx, model_digest, read_model_card
from geoseg.errors import InputError, OutputError
from geoseg.runs.options import VECTOR_EXT, PredictOptions
from geoseg.runtime import auto_chunk, available_cores, default_batch, plan_threads
from geoseg.scene.scene import Scene
from geoseg.tiling.plan import TilePlan


@dataclass(frozen=True)
class RunSetup:
    """Everything a prediction run needs before computing: inputs, plan, id and outputs."""

    image: str | Path
    model: str | Path
    card: ModelCard
    scene: Scene
    plan: TilePlan
    opts: PredictOptions  # with chunk and batch resolved (batch None: measured on the GPU)
    digest: str
    rid: str
    paths: dict[str, Path]

    @property
    def store_root(self) -> Path:
        """The run's tile store: ``<tiles_dir>/<run id>`` (its lock: ``<run id>.lock``)."""
        return (Path(self.opts.tiles_dir) / self.rid).resolve()


def plan_run(image: str | Path, model: str | Path, out_dir: str | Path,
             modalities: Mapping[str, str | Path], opts: PredictOptions,
             name: str | None = None) -> RunSetup:  # fmt: skip
    """Open and check the scene, plan tiles and chunks, name the run and its outputs."""
    card = read_model_card(model)
    scene = open_scene_for(card, image, modalities, opts)
    tile = opts.tile or card.tile_size
    if str(model).lower().endswith(".onnx") and tile > card.tile_size:
        raise InputError(f"{model}: exported for tiles of {card.tile_size} px; use tile="
                         f"{card.tile_size} or less (or export again)")  # fmt: skip
    overlap = opts.overlap if opts.overlap is not None else card.default_overlap(tile)
    h, w = scene.grid.shape
    chunk = opts.chunk or auto_chunk(h, w, tile, plan_threads(opts.workers or available_cores())[0])
    batch = resolve_batch(model, opts)
    opts = opts.model_copy(update={"chunk": chunk, "batch": batch})
    plan = TilePlan(scene.grid.height, scene.grid.width, tile, overlap, chunk)
    out_dir = Path(out_dir)
    check_writable(out_dir)
    paths = output_paths(out_dir, name or Path(image).stem, opts)
    digest = model_digest(model)
    return RunSetup(image, model, card, scene, plan, opts, digest,
                    run_id(scene, digest, plan, opts, opts.device), paths)  # fmt: skip


def resolve_batch(model: str | Path, opts: PredictOptions) -> int | None:
    """Tiles per model call: ``batch`` when given; None on a GPU of this process (measured
    from its free memory once the model is loaded: ``Engine.fitting_batch``); else
    ``runtime.default_batch`` (1 on CPU, 8 on a Dask cluster's GPUs, which this process
    cannot measure)."""
    if opts.batch:
        return opts.batch
    if opts.device.startswith("cuda") and opts.scheduler is None and not is_onnx(model):
        return None
    return default_batch(opts.device)


def open_scene_for(card: ModelCard, image: str | Path, modalities: Mapping[str, str | Path],
                   opts: PredictOptions) -> Scene:  # fmt: skip
    """Open the scene with the bundle's modality names and check it against the card."""
    ref = card.reference
    sources: dict[str, str | Path] = {ref: image}
    for name, path in modalities.items():
        if name == ref:
            raise InputError(f"modalities={name}=...: {name!r} is the main image (image=)")
        if name not in card.raster_modalities:
            raise InputError(f"modalities={name}: the model has no raster modality {name!r}; "
                             f"it takes {card.raster_modalities}")
        sources[name] = path
    missing = [m for m in card.raster_modalities if m not in sources]
    if missing:
        raise InputError(f"the model needs modalities {missing} too: add modalities="
                         f"{missing[0]}=PATH")
    bands = {ref: opts.bands, **opts.modality_bands}
    resampling = {n: m.resampling for n, m in card.modalities.items()}
    ordered = {n: sources[n] for n in card.raster_modalities}
    scene = Scene.open(ordered, bands=bands, resampling=resampling, reference=ref)
    for name, mod in scene.modalities.items():
        want = len(card.modalities[name].bands)
        if mod.count != want:
            flag = "bands=" if name == ref else f"modality_bands={name}="
            raise InputError(
                f"{mod.path}: {name!r} has {mod.count} band(s) but the model expects {want} "
                f"({', '.join(card.modalities[name].bands)}); select them with {flag}"
                f"{','.join(str(i + 1) for i in range(want))}"
            )
    # spectral indices the model was trained with, recomputed window by window
    return scene.with_indices(card.derived, card.source_roles())


def run_id(scene: Scene, digest: str, plan: TilePlan, opts: PredictOptions, device: str) -> str:
    """Stable id of a run: same inputs, model and output-affecting settings -> same id."""
    h = hashlib.sha256()
    for mod in scene.modalities.values():
        st = os.stat(mod.path) if os.path.exists(mod.path) else None
        h.update(f"{os.path.abspath(mod.path)}|{st and st.st_size}|{st and st.st_mtime_ns}|"
                 f"{mod.bands}|{mod.resampling}".encode())  # fmt: skip
    h.update(f"{digest}|{plan.tile}|{plan.overlap}|{plan.chunk}|{opts.probabilities}|{opts.amp}|"
             f"{device.split(':')[0]}".encode())  # fmt: skip
    stem = Path(scene.reference.path).stem
    return f"{stem}-{h.hexdigest()[:12]}"


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it writable before any work starts."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".geoseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder is not writable ({exc.strerror}); "
                          "choose another out_dir=") from None


def output_paths(out_dir: Path, stem: str, opts: PredictOptions) -> dict[str, Path]:
    """Where each output of the run goes (only those the options ask for)."""
    paths = {"classes": out_dir / f"{stem}_classes.tif",
             "classes_style": out_dir / f"{stem}_classes.qml",
             "quicklook": out_dir / f"{stem}_quicklook.png",
             "report": out_dir / f"{stem}_report.json"}  # fmt: skip
    if opts.confidence:
        paths["confidence"] = out_dir / f"{stem}_confidence.tif"
    if opts.probabilities:
        paths["probabilities"] = out_dir / f"{stem}_probabilities.tif"
    if opts.vector != "none":
        paths["vectors"] = out_dir / f"{stem}_polygons{VECTOR_EXT[opts.vector]}"
        paths["vectors_style"] = out_dir / f"{stem}_polygons.qml"
    return paths
