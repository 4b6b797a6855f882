"""From a training config to data ready to sample: scenes, scans, split, windows, statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.catalog.loader import Catalog
from geoseg.catalog.paths import resolve_paths
from geoseg.catalog.spec import CatalogScene, CatalogSpec
from geoseg.errors import ConfigError
from geoseg.scene.classes import ClassInfo
from geoseg.scene.scene import Scene
from geoseg.training import sparse
from geoseg.training.config import TrainConfig
from geoseg.training.data import Scan, TrainScene, band_roles, cached_scan
from geoseg.training.features import FeatureIndex, describe
from geoseg.training.sampling import Candidates, ValTile, training_candidates, validation_tiles
from geoseg.training.split import SceneSplit, split_by_features, split_scenes
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
    #: a torchgeo dataset source, described for cards and reports (None: catalog scenes)
    source: dict[str, Any] | None = None
    #: the config with what prepare resolved (the automatic window)
    config: TrainConfig | None = None
    #: per scene, its label features (vector labels; None where raster), when needed
    features: list[FeatureIndex | None] | None = None
    #: features split: the scenes with labels of the held-out features only (validation)
    val_scenes: list[TrainScene] | None = None
    #: why validation may be too small to choose anything
    warnings: list[str] = field(default_factory=list)

    def split_report(self, cfg: TrainConfig) -> dict[str, Any]:
        """The split, stated for the run report (and checked: no window touches validation)."""
        gap = cfg.split.gap
        win = self.cands.window
        touching = sum(  # vectorised allows_training (many held-out features)
            int((~sp.allowed(self.cands.r0[self.cands.scene == i],
                             self.cands.c0[self.cands.scene == i], win, win, gap)).sum())
            for i, sp in enumerate(self.splits) if sp.train)  # fmt: skip
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
            **self._features_report(cfg),
        }  # fmt: skip

    def _features_report(self, cfg: TrainConfig) -> dict[str, Any]:
        """Label features per class (vector labels), the group field and the warnings."""
        out: dict[str, Any] = {"warnings": list(self.warnings)}
        if self.features is not None:
            names = [c.name for c in self.classes]
            out["features"] = describe([f for f in self.features if f is not None], names)
            out["group_field"] = cfg.split.group_field
            out["folds"] = cfg.split.folds
            out["fold"] = cfg.split.fold if cfg.split.folds else None
            out["val_features"] = sum(len(s.val_features or []) for s in self.splits)
        return out


def _labelled(prep: Prepared, tile: ValTile) -> int:
    scan = prep.scans[tile.scene]
    c, core = scan.cell, tile.core
    # cells fully inside the core (an estimate at cell resolution)
    return int(scan.labelled[-(-core.r0 // c): core.r1 // c, -(-core.c0 // c): core.c1 // c].sum())


def _statement(cfg: TrainConfig, prep: Prepared) -> str:
    sp = cfg.split
    if sp.by == "features":
        n_val = sum(len(s.val_features or []) for s in prep.splits)
        fold = f"fold {sp.fold + 1} of {sp.folds}" if sp.folds else f"{sp.val_fraction:.0%}"
        group = f", grouped by {sp.group_field!r}" if sp.group_field else ""
        keep = (f"training pixels (with their feature window) keep {sp.gap} px away from every "
                "held-out feature's box" if sparse.is_pixel(cfg) else
                f"training windows keep {sp.gap} px away from every held-out feature's box "
                f"(checked: {len(prep.cands)} candidate windows, none touching)")  # fmt: skip
        return (f"validation on {n_val} whole label features ({fold} of each class's features"
                f"{group}, seed {sp.seed}), scored on their own pixels only; {keep}")
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
    if cfg.source is not None and cfg.sampling.window is None:
        cfg = sparse.with_window(cfg, sparse.MAX_WINDOW)
    if cfg.source is not None:  # a torchgeo dataset instead of catalog scenes
        return _prepare_torchgeo(cfg, resolve, source, cache)
    cat_scenes, classes, catalog = load_scenes(cfg, resolve, default_catalog, source)
    scenes = open_scenes(cfg, cat_scenes, classes, source)
    modalities = scenes[0].scene.band_counts
    auto = cfg.sampling.window is None
    cfg = sparse.resolve_window(cfg, scenes, len(classes))
    cell = cfg.sampling.stride or max(cfg.sampling.size // 4, 4)
    extra = f"{cfg.vector_labels.model_dump_json()}|{[c.id for c in classes]}"
    scans = [cached_scan(ts, len(classes), cell, cache, extra) for ts in scenes]
    feats = sparse.feature_indexes(cfg, scenes, cell, cache, len(classes), extra)
    infos = [(ts.id, ts.shape, ts.split) for ts in scenes]
    if cfg.split.by == "features":
        splits = split_by_features(cfg.split, infos, feats or [None] * len(scenes), source)
    else:
        splits = split_scenes(cfg.split, infos, [s.labelled for s in scans], cell, source)
    cands, cfg = _candidates(cfg, scans, splits, source, auto)
    tiles = _validation_tiles(cfg, splits, scans, source)
    norm = normalisation(modalities, cfg.normalise, scans, splits, source)
    first = scenes[0].scene
    val_scenes = sparse.validation_scenes(scenes, splits, feats)
    val_px = sum(_labelled_of(scans, t) for t in tiles) if val_scenes is None else (
        _held_out_pixels(splits, feats))  # fmt: skip
    return Prepared(
        classes=classes, modalities=modalities,
        roles={m: _roles(cat_scenes[0], first, m) for m in modalities},
        resampling={m: first.modalities[m].resampling if m in first.modalities else "bilinear"
                    for m in modalities},  # derived index modalities are never resampled
        scenes=scenes, scans=scans, splits=splits, cands=cands, val_tiles=tiles, norm=norm,
        class_pixels=_class_pixels(scans, splits, len(classes)),
        gsd=float(first.grid.resolution[0]), catalog=catalog, catalog_scenes=cat_scenes,
        config=cfg, features=feats, val_scenes=val_scenes,
        warnings=sparse.split_warnings(splits, feats, val_px, [c.name for c in classes]),
    )  # fmt: skip


def _candidates(cfg: TrainConfig, scans: Sequence[Scan], splits: Sequence[SceneSplit],
                source: str, auto: bool) -> tuple[Candidates, TrainConfig]:  # fmt: skip
    """Training windows; an automatic window is halved (down to 32 px) while none fits between
    the validation areas. The pixel family needs none (it trains on pixels)."""
    while True:
        try:
            return training_candidates(scans, splits, cfg.sampling, cfg.split.gap, source), cfg
        except ConfigError:
            window = cfg.sampling.size
            if auto and window // 2 >= max(sparse.MIN_WINDOW, 2 * scans[0].cell):
                cfg = sparse.with_window(cfg, window // 2)
                continue
            if sparse.is_pixel(cfg):
                empty = np.zeros(0, np.int64)
                return Candidates(empty, empty, empty, np.zeros((0, len(scans[0].counts[0, 0]))),
                                  window, scans[0].cell), cfg  # fmt: skip
            raise


def _labelled_of(scans: Sequence[Scan], tile: ValTile) -> int:
    scan = scans[tile.scene]
    c, core = scan.cell, tile.core
    return int(scan.labelled[-(-core.r0 // c): core.r1 // c, -(-core.c0 // c): core.c1 // c].sum())


def _held_out_pixels(splits: Sequence[SceneSplit], feats: Sequence[FeatureIndex | None] | None) -> int:
    """Labelled pixels of the held-out features (features split)."""
    return sum(int(f.pixels[sp.val_features or []].sum())
               for sp, f in zip(splits, feats or [], strict=False) if f is not None)  # fmt: skip


def _prepare_torchgeo(cfg: TrainConfig, resolve: Callable[[str], Path], source: str,
                      cache: Path) -> Prepared:  # fmt: skip
    """:func:`prepare` for ``source: {torchgeo: ...}``: samples or chips as one-tile scenes."""
    from geoseg.training.torchgeo_source import open_source

    cell = cfg.sampling.stride or max(cfg.sampling.window // 4, 4)
    data = open_source(cfg, resolve, source, cell, cache)
    cands = training_candidates(data.scans, data.splits, cfg.sampling, cfg.split.gap, source)
    norm = normalisation(data.modalities, cfg.normalise, data.scans, data.splits, source)
    return Prepared(
        classes=data.classes, modalities=data.modalities, roles=data.roles,
        resampling=dict.fromkeys(data.modalities, "bilinear"), scenes=data.scenes,
        scans=data.scans, splits=data.splits, cands=cands,
        val_tiles=_validation_tiles(cfg, data.splits, data.scans, source), norm=norm,
        class_pixels=_class_pixels(data.scans, data.splits, len(data.classes)), gsd=data.gsd,
        catalog=None, catalog_scenes=[], source=data.description,
    )  # fmt: skip


def open_scenes(cfg: TrainConfig, cat_scenes: Sequence[CatalogScene], classes: Sequence[ClassInfo],
                source: str) -> list[TrainScene]:  # fmt: skip
    """The training scenes with the model's modalities and bands (the same in every scene)."""
    names = cfg.modalities or list(cat_scenes[0].modalities)
    unknown = sorted(set(cfg.bands) - set(names))
    if unknown:
        raise ConfigError(f"{source}: bands names modality {unknown[0]!r}, which the model does "
                          f"not take ({names}); fix the name")  # fmt: skip
    scenes = [TrainScene.open(cs, names, cfg.bands, classes, cfg.vector_labels, cfg.indices)
              for cs in cat_scenes]  # fmt: skip
    modalities = scenes[0].scene.band_counts
    for ts in scenes[1:]:
        if ts.scene.band_counts != modalities:
            raise ConfigError(f"{source}: scene {ts.id!r} has bands {ts.scene.band_counts} but "
                              f"{scenes[0].id!r} has {modalities}; select the same bands in "
                              "every scene (bands: or the catalog's roles)")  # fmt: skip
    return scenes


def _roles(cs: CatalogScene, scene: Scene, name: str) -> list[str]:
    """Band names of a modality for the card: index names of a derived one, else its roles."""
    if scene.indices is not None and name in scene.indices.names:
        return scene.indices.names[name]
    return band_roles(cs, scene, name)


def _validation_tiles(cfg: TrainConfig, splits: Sequence[SceneSplit], scans: Sequence[Scan],
                      source: str) -> list[ValTile]:  # fmt: skip
    """Tiles of the validation areas (window-sized, with context); at least one."""
    context = cfg.sampling.val_context
    tiles = validation_tiles(splits, scans, cfg.sampling.size,
                             cfg.sampling.size // 8 if context is None else context)
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
