"""From a training config to data ready to sample: scenes, scans, split, windows, statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.catalog.loader import Catalog
from geoseg.catalog.paths import resolve_paths
from geoseg.catalog.spec import CatalogScene, CatalogSpec
from geoseg.errors import ConfigError
from geoseg.scene.classes import ClassInfo
from geoseg.training.config import TrainConfig
from geoseg.training.data import Scan, TrainScene, band_roles, cached_scan
from geoseg.training.sampling import Candidates, ValTile, training_candidates, validation_tiles
from geoseg.training.split import SceneSplit, split_scenes
from geoseg.training.stats import normalisation, train_cells


@dataclass
class Prepared:
    """Everything the loop needs besides the model."""

    classes: list[ClassInfo]
    modalities: dict[str, int]
    roles: dict[str, list[str]]
    resampling: dict[str, str]
    scenes: list[TrainScene]
    scans: list[Scan]
    splits: list[SceneSplit]
    cands: Candidates
    val_tiles: list[ValTile]
    norm: dict[str, dict]
    class_pixels: list[int]
    gsd: float
    catalog: str | None
    catalog_scenes: list[CatalogScene]

    def split_report(self, cfg: TrainConfig) -> dict[str, Any]:
        """The split, stated for the run report (and checked: no window touches validation)."""
        gap = cfg.split.gap
        touching = sum(
            not self.splits[int(s)].allows_training(self.cands.rect(i), gap)
            for i, s in enumerate(self.cands.scene)
        )
        return {
            "by": cfg.split.by, "gap_px": gap,
            "block_px": cfg.split.block if cfg.split.by == "blocks" else None,
            "val_fraction": cfg.split.val_fraction if cfg.split.by != "scene" else None,
            "seed": cfg.split.seed,
            "scenes": [s.to_dict() for s in self.splits],
            "train_windows": len(self.cands), "window_px": self.cands.window,
            "val_tiles": len(self.val_tiles),
            "val_labelled_pixels_approx": sum(_labelled(self, t) for t in self.val_tiles),
            "train_windows_touching_validation": int(touching),
            "statement": _statement(cfg, self),
        }  # fmt: skip


def _labelled(prep: Prepared, tile: ValTile) -> int:
    scan = prep.scans[tile.scene]
    c, core = scan.cell, tile.core
    # cells fully inside the core (an estimate at cell resolution)
    return int(scan.labelled[-(-core.r0 // c): core.r1 // c, -(-core.c0 // c): core.c1 // c].sum())


def _statement(cfg: TrainConfig, prep: Prepared) -> str:
    sp = cfg.split
    if sp.by == "scene":
        val = [s.scene_id for s in prep.splits if not s.train]
        return (f"validation on whole scenes {val}; training windows only from the other "
                f"{sum(s.train for s in prep.splits)} scene(s)")  # fmt: skip
    what = (f"random {sp.block} px blocks ({sp.val_fraction:.0%} of the labelled blocks of each "
            f"scene, seed {sp.seed})" if sp.by == "blocks" else
            f"a stripe of {sp.val_fraction:.0%} of the labelled extent at the {sp.position} of "
            f"the {sp.axis}")  # fmt: skip
    return (f"validation on {what}; training windows keep {sp.gap} px away from every "
            f"validation pixel (checked: {len(prep.cands)} candidate windows, none touching)")


def load_scenes(cfg: TrainConfig, resolve: Callable[[str], Path], default_catalog: str | None,
                source: str) -> tuple[list[CatalogScene], list[ClassInfo], str | None]:  # fmt: skip
    """Training-side scenes (labelled, not split: test) and the class table."""
    ref = cfg.catalog or default_catalog
    catalog = Catalog.load(resolve(ref)) if ref else None
    inline = [s for s in cfg.scenes or [] if isinstance(s, CatalogScene)]
    if inline:
        spec = CatalogSpec(classes=cfg.classes or [], scenes=inline)
        inline = resolve_paths(spec, resolve(".")).scenes
    scenes: list[CatalogScene] = []
    it = iter(inline)
    for item in cfg.scenes or []:
        if isinstance(item, CatalogScene):
            scenes.append(next(it))
        elif catalog is None:
            raise ConfigError(f"{source}: scene {item!r} is an id but there is no catalog; add "
                              "catalog: PATH or write the scene out")  # fmt: skip
        else:
            scenes.append(catalog.scene(item))
    if cfg.scenes is None:
        if catalog is None:
            raise ConfigError(f"{source}: no scenes: add catalog: PATH or a scenes: list")
        scenes = [s for s in catalog.scenes if s.labels is not None and s.split != "test"]
    if not scenes:
        raise ConfigError(f"{source}: no labelled scene to train on; add labels: to the "
                          "catalog's scenes (scenes of split test are never used)")  # fmt: skip
    classes = list(cfg.classes or (catalog.classes if catalog else []))
    if not classes:
        raise ConfigError(f"{source}: no class table; add classes: (id, name, color) to the "
                          "pipeline or the catalog")  # fmt: skip
    return scenes, classes, str(catalog.source) if catalog else None


def prepare(cfg: TrainConfig, resolve: Callable[[str], Path], default_catalog: str | None,
            source: str, cache: Path) -> Prepared:  # fmt: skip
    """Open and scan the scenes, split them, list windows, compute normalisation."""
    cat_scenes, classes, catalog = load_scenes(cfg, resolve, default_catalog, source)
    scenes = open_scenes(cfg, cat_scenes, classes, source)
    modalities = scenes[0].scene.band_counts
    cell = cfg.sampling.stride or max(cfg.sampling.window // 4, 4)
    extra = f"{cfg.vector_labels.model_dump_json()}|{[c.id for c in classes]}"
    scans = [cached_scan(ts, len(classes), cell, cache, extra) for ts in scenes]
    splits = split_scenes(cfg.split, [(ts.id, ts.shape, ts.split) for ts in scenes],
                          [s.labelled for s in scans], cell, source)  # fmt: skip
    cands = training_candidates(scans, splits, cfg.sampling, cfg.split.gap, source)
    tiles = _validation_tiles(cfg, splits, scans, source)
    norm = normalisation(modalities, cfg.normalise, scans, splits, source)
    first = scenes[0].scene
    return Prepared(
        classes=classes, modalities=modalities,
        roles={m: band_roles(cat_scenes[0], first, m) for m in modalities},
        resampling={m: first.modalities[m].resampling for m in modalities},
        scenes=scenes, scans=scans, splits=splits, cands=cands, val_tiles=tiles, norm=norm,
        class_pixels=_class_pixels(scans, splits, len(classes)),
        gsd=float(first.grid.resolution[0]), catalog=catalog, catalog_scenes=cat_scenes,
    )  # fmt: skip


def open_scenes(cfg: TrainConfig, cat_scenes: Sequence[CatalogScene], classes: Sequence[ClassInfo],
                source: str) -> list[TrainScene]:  # fmt: skip
    """The training scenes with the model's modalities and bands (the same in every scene)."""
    names = cfg.modalities or list(cat_scenes[0].modalities)
    unknown = sorted(set(cfg.bands) - set(names))
    if unknown:
        raise ConfigError(f"{source}: bands names modality {unknown[0]!r}, which the model does "
                          f"not take ({names}); fix the name")  # fmt: skip
    scenes = [TrainScene.open(cs, names, cfg.bands, classes, cfg.vector_labels)
              for cs in cat_scenes]  # fmt: skip
    modalities = scenes[0].scene.band_counts
    for ts in scenes[1:]:
        if ts.scene.band_counts != modalities:
            raise ConfigError(f"{source}: scene {ts.id!r} has bands {ts.scene.band_counts} but "
                              f"{scenes[0].id!r} has {modalities}; select the same bands in "
                              "every scene (bands: or the catalog's roles)")  # fmt: skip
    return scenes


def _validation_tiles(cfg: TrainConfig, splits: Sequence[SceneSplit], scans: Sequence[Scan],
                      source: str) -> list[ValTile]:  # fmt: skip
    """Tiles of the validation areas (window-sized, with context); at least one."""
    context = cfg.sampling.val_context
    tiles = validation_tiles(splits, scans, cfg.sampling.window,
                             cfg.sampling.window // 8 if context is None else context)
    if not tiles:
        raise ConfigError(f"{source}: the validation area holds no labelled pixel; change the "
                          "split")  # fmt: skip
    return tiles


def _class_pixels(scans: Sequence[Scan], splits: Sequence[SceneSplit], k: int) -> list[int]:
    """Labelled pixels per class in the training area (cells usable for training)."""
    pixels = np.zeros(k, np.int64)
    for scan, sp in zip(scans, splits, strict=True):
        pixels += scan.counts[train_cells(sp, scan)].sum(axis=0)
    return [int(v) for v in pixels]
