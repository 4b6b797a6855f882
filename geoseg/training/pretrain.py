"""Self-supervised pre-training on the unlabelled pixels of the training scenes.

Labels are few; pixels are not. ``pretrain: {steps: 300}`` in a train step (or ``geoseg
pretrain PIPELINE``) first trains the step's architecture on a masked-reconstruction objective
(the convolutional analogue of a masked autoencoder): random windows of the training area
(``gap`` pixels away from validation, as training windows; labels are never read), random
``patch``×``patch`` squares covering ``mask_ratio`` of the window set to 0 (the normalised
mean) in every modality, and the model — with one output channel per input band instead of
one per class — regresses the normalised bands; the loss is the mean squared error over the
hidden valid pixels. The result is a bundle in ``<run>/pretrain`` (card: ``pretraining``, its
"classes" are the bands); the training then starts from its tensors of matching shape
(``model.init``): encoder and decoder, not the class head.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geoseg.bundle.bundle import save_bundle
from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.bundle.folder import CARD, WEIGHTS
from geoseg.geometry.window import PixelWindow
from geoseg.models import SegModel, create
from geoseg.scene.classes import ClassInfo
from geoseg.training.augment import geometric
from geoseg.training.config import AugmentSpec, PretrainSpec, TrainConfig
from geoseg.training.optim import lr_factor
from geoseg.training.prepare import Prepared
from geoseg.training.windows import normalise

log = logging.getLogger("geoseg.training")


def _windows(prep: Prepared, window: int, gap: int, rng: np.random.Generator,
             n: int) -> list[tuple[int, PixelWindow]]:  # fmt: skip
    """``n`` random windows of the training area (scenes drawn by area)."""
    scenes = [i for i, sp in enumerate(prep.splits) if sp.train]
    area = np.array([prep.splits[i].shape[0] * prep.splits[i].shape[1] for i in scenes], float)
    out: list[tuple[int, PixelWindow]] = []
    for _ in range(n):
        s = scenes[int(rng.choice(len(scenes), p=area / area.sum()))]
        sp = prep.splits[s]
        h, w = sp.shape
        for _try in range(50):
            r0 = int(rng.integers(0, max(h - window, 0) + 1))
            c0 = int(rng.integers(0, max(w - window, 0) + 1))
            if sp.allowed(np.array([r0]), np.array([c0]), window, window, gap)[0]:
                break
        out.append((s, PixelWindow.at(r0, c0, window, window)))
    return out


Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


def _batch(prep: Prepared, spec: PretrainSpec, window: int, gap: int, step: int,
           seed: int) -> Batch:  # fmt: skip
    """Masked inputs, the full target bands, the hidden mask and the validity of a batch."""
    rng = np.random.default_rng([seed, 7, step])
    xs, ts, ms, vs = [], [], [], []
    names = list(prep.modalities)
    flips = AugmentSpec(flip=True, rotate=True)
    for s, win in _windows(prep, window, gap, rng, spec.batch):
        arrays, _, valid = prep.scenes[s].read(win)
        x = normalise(arrays, valid, prep.norm)
        x["__valid__"] = valid[None].astype(np.float32)
        x, _ = geometric(x, np.zeros(win.shape, np.uint8), flips, rng)
        valid = x.pop("__valid__")[0] > 0.5
        cells = -(-window // spec.patch)
        hide = rng.random((cells, cells)) < spec.mask_ratio
        hide = np.kron(hide, np.ones((spec.patch, spec.patch), bool))[:window, :window]
        xs.append({n: np.where(hide[None], 0.0, x[n]).astype(np.float32) for n in names})
        ts.append(np.concatenate([x[n] for n in names]))
        ms.append(hide)
        vs.append(valid)
    inputs = {n: torch.from_numpy(np.stack([x[n] for x in xs])) for n in names}
    return (inputs, torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ms)),
            torch.from_numpy(np.stack(vs)))  # fmt: skip


def build(cfg: TrainConfig, prep: Prepared) -> SegModel:
    """The step's architecture with one output channel per input band."""
    torch.manual_seed(cfg.seed)
    bands = sum(prep.modalities.values())
    return create(cfg.model.architecture, prep.modalities, bands, **cfg.model.arguments)


def pretrain(cfg: TrainConfig, prep: Prepared, out: Path, device: torch.device,
             progress: bool = True) -> Path:  # fmt: skip
    """Masked-reconstruction pre-training into the bundle ``out`` (reused when finished)."""
    if (out / CARD).is_file() and (out / WEIGHTS).is_file():
        return out
    spec = cfg.pretrain or PretrainSpec()
    model = build(cfg, prep).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr,
                            weight_decay=spec.weight_decay)  # fmt: skip
    schedule = cfg.schedule.model_copy(update={"name": "cosine"})
    window, gap = cfg.sampling.size, cfg.split.gap
    t0, loss_v = time.perf_counter(), float("nan")
    for step in tqdm(range(spec.steps), desc="pretrain", unit="step", leave=False,
                     disable=not progress):  # fmt: skip
        for g in opt.param_groups:
            g["lr"] = spec.lr * lr_factor(schedule, step, spec.steps)
        inputs, target, hide, valid = _batch(prep, spec, window, gap, step, cfg.seed)
        inputs = {n: v.to(device) for n, v in inputs.items()}
        pred = model(inputs)
        sel = (hide & valid).to(device)[:, None].expand_as(pred)
        if not sel.any():
            continue
        loss = ((pred - target.to(device)) ** 2)[sel].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
    seconds = time.perf_counter() - t0
    log.info("pretrained %s for %d steps in %.0f s (masked MSE %.4f)", cfg.model.architecture,
             spec.steps, seconds, loss_v)  # fmt: skip
    save_bundle(model.eval(), _card(cfg, prep, model, spec, loss_v, seconds), out)
    return out


def _card(cfg: TrainConfig, prep: Prepared, model: SegModel, spec: PretrainSpec, loss: float,
          seconds: float) -> ModelCard:  # fmt: skip
    """The card of a pre-training bundle: its outputs are the bands, not classes."""
    names = [f"{m}:{b}" for m in prep.modalities for b in prep.roles[m]]
    mods = {n: ModalityCard(bands=prep.roles[n], mean=prep.norm[n]["mean"],
                            std=prep.norm[n]["std"], resampling=prep.resampling[n])
            for n in prep.modalities}  # fmt: skip
    return ModelCard(
        architecture=cfg.model.architecture, arguments=model.args.model_dump(mode="json"),
        modalities=mods, derived=dict(cfg.indices),
        classes=[ClassInfo(id=i, name=n) for i, n in enumerate(names)],
        tile_size=cfg.sampling.size, halo=model.halo, gsd=prep.gsd, trained=True,
        metrics={"pretraining": {"masked_mse": loss, "steps": spec.steps,
                                 "seconds": round(seconds, 1)}},
        training={"pretraining": spec.model_dump(mode="json"), "window": cfg.sampling.size,
                  "scenes": [s.id for s in prep.scenes], "seed": cfg.seed},
        description="self-supervised masked-reconstruction pre-training (outputs are the "
        "bands, not classes): use it as model.init of a training",
    )  # fmt: skip


def pretrained_config(cfg: TrainConfig, prep: Prepared, out: Path, device: torch.device,
                      dist: Any, progress: bool) -> TrainConfig:  # fmt: skip
    """``cfg`` whose ``model.init`` is the run's pre-training bundle (rank 0 trains it)."""
    from geoseg.training import ddp

    path = out / "pretrain"
    if dist.main:
        pretrain(cfg, prep, path, device, progress)
    ddp.barrier(dist)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"init": str(path)})})


def run_pretraining(cfg: TrainConfig, out: Path, *, resolve: Any, default_catalog: str | None,
                    source: str, progress: bool = True) -> Path:  # fmt: skip
    """Only the pre-training stage of a train step (``geoseg pretrain``): ``<out>/pretrain``."""
    from geoseg.training import ddp
    from geoseg.training.prepare import prepare

    prep = prepare(cfg, resolve, default_catalog, source, out / "cache")
    run_cfg = prep.config or cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return pretrain(run_cfg, prep, out / "pretrain", ddp.resolve_device(cfg.device), progress)
