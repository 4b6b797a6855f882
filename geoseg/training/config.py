"""The training configuration: a strict schema (unknown keys are errors), recipes as presets."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from pydantic import Field, model_validator

from geoseg.catalog.spec import CatalogScene
from geoseg.config import StrictModel
from geoseg.scene.classes import ClassInfo
from geoseg.scene.indices import IndexBands
from geoseg.scene.labels import VectorLabels


class ModelSpec(StrictModel):
    """The architecture to train and how its bundle is stamped."""

    architecture: str = Field(description="registered name: unet, deeptrinet, farseg, ...")
    arguments: dict[str, Any] = Field(default_factory=dict, description="architecture arguments")
    tile: int | None = Field(None, ge=16, description="tile size written to the bundle for "
                             "prediction (default: the training window; models with global "
                             "pooling such as SE blocks behave best near the size they saw)")
    init: str | None = Field(None, description="bundle whose weights start the training")
    description: str = ""


class SplitSpec(StrictModel):
    """Spatially honest validation: by scene, by random blocks, by one stripe, or by whole label
    features (polygons/points), with a gap."""

    by: Literal["scene", "blocks", "stripe", "features"] = "blocks"
    val_scenes: list[str] | None = Field(None, description="by scene: ids (default: split val)")
    block: int = Field(256, ge=16, description="blocks: side in pixels")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    gap: int = Field(32, ge=0, description="pixels between training windows and validation")
    seed: int = 0
    axis: Literal["rows", "columns"] = Field("rows", description="stripe: cut across rows/cols")
    position: Literal["start", "end"] = Field("end", description="stripe: where validation is")
    folds: int | None = Field(None, ge=2, le=50, description="features: k of a k-fold "
                              "cross-validation by features (geoseg train --folds)")  # fmt: skip
    fold: int = Field(0, ge=0, description="features: the held-out fold (0 .. folds-1)")
    group_field: str | None = Field(None, description="features: attribute grouping features "
                                    "that are held out together (e.g. a survey id)")  # fmt: skip

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitSpec:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"split.fold {self.fold} must be below split.folds {self.folds}")
        if self.by != "features" and (self.folds is not None or self.group_field):
            raise ValueError("split.folds and split.group_field need split.by: features")
        return self


class SamplingSpec(StrictModel):
    """Training windows drawn from the scenes (never loaded whole)."""

    window: int | None = Field(None, ge=16, description="window side in pixels (default: "
                               "from the label features' size and the model's halo, else 256)")
    mode: Literal["random", "balanced", "features"] = Field(
        "features", description="random: any candidate window; balanced: a class uniformly, "
        "then a window holding it; features: a class uniformly, then one of its label features "
        "(polygon/point) uniformly, then a window holding it (vector labels; else balanced)")
    stride: int | None = Field(None, ge=4, description="candidate grid (default window/4)")
    min_labelled: float = Field(1, ge=0.0, description="labelled pixels a window needs (a "
                                "count; a value below 1 is read as the former fraction of "
                                "the window)")  # fmt: skip

    @property
    def size(self) -> int:
        """The window side (after :func:`geoseg.training.prepare.prepare` has resolved it)."""
        return 256 if self.window is None else self.window

    def min_pixels(self, area: int) -> int:
        """Labelled pixels a window of ``area`` pixels needs (at least 1)."""
        if 0 < self.min_labelled < 1:
            return max(math.ceil(self.min_labelled * area), 1)
        return max(int(self.min_labelled), 1)
    val_context: int | None = Field(None, ge=0, description="context px read around validation "
                                    "tiles (default window/8)")  # fmt: skip


class AugmentSpec(StrictModel):
    """Geometric augmentations hit every modality and the labels; photometric only imagery."""

    flip: bool = True
    rotate: bool = Field(True, description="random multiples of 90°")
    brightness: float = Field(0.0, ge=0, description="± additive shift (normalised units)")
    contrast: float = Field(0.0, ge=0, lt=1, description="± relative scale")
    noise: float = Field(0.0, ge=0, description="Gaussian noise std (normalised units)")
    band_jitter: float = Field(0.0, ge=0, description="spectral jitter: ± per-band shift "
                               "(normalised units), imagery only")  # fmt: skip


class PretrainSpec(StrictModel):
    """Self-supervised pre-training before the training (geoseg.training.pretrain): masked
    reconstruction of the bands on unlabelled windows of the training area."""

    steps: int = Field(300, ge=1, description="optimiser steps of the pre-training")
    batch: int = Field(16, ge=1)
    mask_ratio: float = Field(0.5, gt=0, lt=1, description="share of patches hidden")
    patch: int = Field(8, ge=1, description="side of the hidden square patches (pixels)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)


class FixedNorm(StrictModel):
    """Fixed per-band normalisation: (x − mean) / std."""

    mean: list[float]
    std: list[float]


NormChoice = Literal["stats", "fixed"] | FixedNorm


class LossSpec(StrictModel):
    """auto: the model's own training loss if it has one (FarSeg, HPCL-Net), else CE."""

    name: Literal["auto", "ce", "dice", "ce_dice", "focal"] = "auto"
    class_weights: Literal["none", "auto"] | list[float] = Field(
        "none", description="auto: inverse sqrt of the training class frequencies")
    dice_weight: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    focal_gamma: float = Field(2.0, ge=0, description="focal: the focusing exponent")
    balance: Literal["pixels", "features"] = Field(
        "pixels", description="features: each labelled pixel weighs 1/sqrt(pixels of its label "
        "feature), so one huge polygon does not drown ten small ones (vector labels)")


class OptimizerSpec(StrictModel):
    """Optimiser and its hyper-parameters."""

    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleSpec(StrictModel):
    """Learning-rate factor as a function of the step (stateless, so resuming is exact)."""

    name: Literal["constant", "poly", "cosine", "step"] = "poly"
    power: float = Field(0.9, gt=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    step_size: int = Field(1000, ge=1, description="step: decay every this many steps")
    gamma: float = Field(0.1, gt=0, le=1, description="step: decay factor")


class GeoLayer(StrictModel):
    """A torchgeo GeoDataset layer: an extra modality (DEM, nDSM) or the labels."""

    torchgeo: str = Field("RasterDataset", description="GeoDataset class, e.g. RasterDataset")
    paths: str | list[str] = Field(description="files or folders (relative to the pipeline)")
    args: dict[str, Any] = Field(default_factory=dict, description="other keyword arguments")
    roles: list[str] | None = Field(None, description="band roles (default: the modality name)")


class TorchgeoSource(StrictModel):
    """A torchgeo dataset as the training data instead of catalog scenes.

    NonGeoDatasets (LandCoverAI, LoveDA, Vaihingen2D, Potsdam2D, FieldsOfTheWorld): every
    sample of ``split`` is a training tile, every sample of ``val_split`` a validation tile;
    classes and band roles come from the dataset. GeoDatasets (RasterDataset, Sentinel2,
    NAIP...): the image is intersected (``&``) with ``modalities`` and ``labels``; chips come
    from RandomGeoSampler (training) and GridGeoSampler (validation) over two boxes kept
    ``split.gap`` pixels apart.
    """

    torchgeo: str = Field(description="dataset class name in torchgeo.datasets")
    root: str | None = Field(None, description="NonGeoDataset: the dataset folder")
    split: str = Field("train", description="NonGeoDataset: split trained on")
    val_split: str | None = Field("val", description="NonGeoDataset: split validated on; null: "
                                  "split.val_fraction of the samples (seed split.seed)")
    args: dict[str, Any] = Field(default_factory=dict, description="further keyword arguments "
                                 "of the dataset, e.g. {scene: [urban]} for LoveDA")
    limit: int | None = Field(None, ge=1, description="at most this many samples per split")
    paths: str | list[str] | None = Field(None, description="GeoDataset: image files/folders")
    roles: list[str] | None = Field(None, description="image band roles (default: from the "
                                    "dataset's band names, else b1, b2...)")  # fmt: skip
    modalities: dict[str, GeoLayer] = Field(default_factory=dict, description="GeoDataset: "
                                            "more inputs on the image's grid, e.g. dem")
    labels: GeoLayer | None = Field(None, description="GeoDataset: the class raster(s)")
    chip: int = Field(256, ge=16, description="GeoDataset: chip side in pixels")
    train_chips: int = Field(500, ge=1, description="GeoDataset: random training chips")
    val_stride: int | None = Field(None, ge=1, description="GeoDataset: validation grid stride "
                                   "(default: the chip)")  # fmt: skip
    train_roi: tuple[float, float, float, float] | None = Field(
        None, description="GeoDataset: training box xmin, ymin, xmax, ymax in the image CRS")
    val_roi: tuple[float, float, float, float] | None = Field(
        None, description="GeoDataset: validation box (default for both: a stripe of "
        "split.val_fraction at the split.position end of split.axis, split.gap px apart)")
    cache_samples: int = Field(2, ge=0, description="decoded samples kept per process (large "
                               "tiles such as Potsdam's are read whole)")  # fmt: skip


# Paper recipes (docs/models.md); explicit keys of a pipeline override them.
RECIPES: dict[str, dict[str, Any]] = {
    # FarSeg official iSAID config: SGD 0.007, poly 0.9, 60k iterations, batch 8, 896² windows,
    # flips + rot90, grad clip 35, AMP
    "farseg": {"optimizer": {"name": "sgd", "lr": 0.007, "momentum": 0.9, "weight_decay": 1e-4},
               "schedule": {"name": "poly", "power": 0.9}, "steps": 60000, "batch": 8,
               "sampling": {"window": 896}, "clip_grad": 35.0, "amp": True,
               "augment": {"flip": True, "rotate": True}},
    # DeepTriNet reconstruction: Adam 1e-4, poly, batch 16, 256² patches, flips/rot90
    "deeptrinet": {"optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0},
                   "schedule": {"name": "poly", "power": 0.9}, "steps": 80000, "batch": 16,
                   "sampling": {"window": 256}, "augment": {"flip": True, "rotate": True}},
    # HPCL-Net reconstruction: SGD 0.01, poly 0.9, batch 8, 512² crops; best by landslide IoU
    "hpclnet": {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4},
                "schedule": {"name": "poly", "power": 0.9}, "steps": 40000, "batch": 8,
                "sampling": {"window": 512}, "augment": {"flip": True, "rotate": True}},
    # TIMF (GAMUS): AdamW 6e-5, wd 0.01, poly 0.9 with 1.5k warm-up, 512² crops, batch 8
    "timf": {"optimizer": {"name": "adamw", "lr": 6e-5, "weight_decay": 0.01},
             "schedule": {"name": "poly", "power": 0.9, "warmup_steps": 1500}, "steps": 80000,
             "batch": 8, "sampling": {"window": 512}, "augment": {"flip": True, "rotate": True}},
    # sparse labels (a few dozen polygons/points; issue 16, measured in docs/benchmarks.md):
    # AdamW with weight decay, cosine decay, a few hundred steps, windows drawn per label
    # feature, flips/rot90 + light photometric/spectral jitter, plain cross-entropy (label
    # smoothing, class weights and feature balancing measured no better on the three cases);
    # the model, unless the pipeline names one: sparsecnn (4 small nets averaged, flips/rot90
    # averaged at prediction): ahead of tinycnn and of the random forest on the means of
    # the three benchmark cases, within the fold-to-fold noise (docs/benchmarks.md)
    "sparse": {"model": {"architecture": "sparsecnn"},
               "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
               "schedule": {"name": "cosine", "warmup_steps": 20}, "steps": 400, "batch": 16,
               "sampling": {"mode": "features"},
               "augment": {"flip": True, "rotate": True, "brightness": 0.05, "contrast": 0.05,
                           "band_jitter": 0.05},
               "loss": {"name": "ce"}},
    # U-Net baseline: Adam 1e-3 with cosine decay
    "unet": {"optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
             "schedule": {"name": "cosine"}, "steps": 20000, "batch": 16,
             "sampling": {"window": 256}, "augment": {"flip": True, "rotate": True}},
}  # fmt: skip


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; nested mappings merge, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class TrainConfig(StrictModel):
    """Everything a training run needs. Relative paths resolve against the pipeline file."""

    recipe: str | None = Field(None, description=f"paper recipe preset: {', '.join(RECIPES)}")
    catalog: str | None = Field(None, description="scene catalog (default: the pipeline's)")
    source: TorchgeoSource | None = Field(None, description="a torchgeo dataset to train on "
                                          "instead of catalog scenes")  # fmt: skip
    scenes: list[str | CatalogScene] | None = Field(
        None, description="scene ids of the catalog, or scenes written out here")
    classes: list[ClassInfo] | None = Field(None, description="class table (default: catalog's)")
    modalities: list[str] | None = Field(None, description="modalities the model takes, in "
                                         "order (default: all of the first scene)")  # fmt: skip
    bands: dict[str, list[int | str]] = Field(
        default_factory=dict, description="per modality: band indices, descriptions or roles")
    indices: dict[str, IndexBands] = Field(
        default_factory=dict, description="derived modalities of spectral indices, e.g. {vi: "
        "{source: image, indices: [ndvi, ndre]}} (from the source's band roles)")  # fmt: skip
    vector_labels: VectorLabels = Field(default_factory=VectorLabels)
    model: ModelSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    normalise: dict[str, NormChoice] = Field(
        default_factory=dict, description="per modality: stats (from the training scenes), "
        "fixed (the elevation scaling of the models) or {mean, std}; default stats, "
        "fixed for height/dem")
    loss: LossSpec = Field(default_factory=LossSpec)
    pretrain: PretrainSpec | None = Field(None, description="self-supervised pre-training on "
                                          "unlabelled windows first (masked reconstruction)")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    steps: int = Field(1000, ge=1, description="optimiser steps in all")
    batch: int = Field(8, ge=1, description="windows per step (per process under DDP)")
    val_every: int = Field(200, ge=1, description="validate (and keep the best) every N steps")
    checkpoint_every: int | None = Field(None, ge=1, description="default: val_every")
    time_limit: float | None = Field(None, gt=0, description="stop after this many minutes")
    clip_grad: float | None = Field(None, gt=0, description="max L2 norm of the gradients")
    amp: bool = Field(True, description="autocast on CUDA (bf16 where supported)")
    seed: int = 0
    device: str = Field("auto", description="auto (cuda if present), cpu, cuda, cuda:1")
    threads: int | None = Field(None, ge=1, description="torch threads (default: all cores)")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    ignore_classes: list[int | str] = Field(
        default_factory=list, description="class ids/names left out of mIoU (e.g. GAMUS 0)")
    best_metric: str = Field("miou", description="miou, overall_accuracy, or iou:<class name>")
    stats_chunks: int = Field(64, ge=1, description="max chunks read for band statistics")
    out: str | None = Field(None, description="run folder (default <workdir>/<step name>)")
    resume: bool = Field(True, description="continue from the run folder's last checkpoint")

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("recipe"):
            return data
        name = str(data["recipe"])
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
        return deep_merge(RECIPES[name], data)

    @model_validator(mode="after")
    def _checks(self) -> TrainConfig:
        if self.source is not None and (self.scenes is not None or self.catalog is not None):
            raise ValueError("source (a torchgeo dataset) replaces catalog and scenes; keep one")
        metric = self.best_metric
        if metric not in ("miou", "overall_accuracy") and not metric.startswith("iou:"):
            raise ValueError(f"best_metric {metric!r}: use miou, overall_accuracy or "
                             "iou:<class name>")  # fmt: skip
        if self.split.by == "blocks" and self.split.block < self.sampling.size // 4:
            raise ValueError(f"split.block {self.split.block} is much smaller than the window "
                             f"{self.sampling.size}; no training window would fit between "
                             "validation blocks: use blocks >= window/4")  # fmt: skip
        return self
