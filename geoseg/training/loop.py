"""The training loop: steps of sampled windows, periodic validation, checkpoints, bundles.

What a run settles before its first step is in :mod:`geoseg.training.run_setup`; the history
rows it records at each validation come from :mod:`geoseg.training.history`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from geoseg.bundle.bundle import save_bundle
from geoseg.config import IGNORE
from geoseg.training import ddp
from geoseg.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from geoseg.training.config import TrainConfig
from geoseg.training.criterion import TrainModule
from geoseg.training.history import history_row, new_running, summary_line
from geoseg.training.model import build_model, ignore_indices, make_card, score
from geoseg.training.optim import build_optimizer, lr_factor, set_lr
from geoseg.training.report import RunFacts, run_report, write_history, write_report
from geoseg.training.result import TrainResult
from geoseg.training.run_setup import amp_dtype, class_weights, prepare_run, set_threads
from geoseg.training.sampling import WindowSampler
from geoseg.training.sparse import holdout_specs, is_pixel
from geoseg.training.validation import validate
from geoseg.training.windows import TrainWindows

log = logging.getLogger("geoseg.training")


class Trainer:
    """One training run in ``out``; rank 0 writes, every rank trains."""

    def __init__(self, cfg: TrainConfig, out: Path, resolve: Callable[[str], Path],
                 default_catalog: str | None, source: str, progress: bool = True):  # fmt: skip
        self.cfg, self.out, self.source, self.progress = cfg, out, source, progress
        # under torchrun each process takes the GPU of its local rank
        self.device = ddp.resolve_device(cfg.device, ddp.local_rank())
        self.dist = ddp.setup(self.device)
        set_threads(cfg.threads, self.dist, self.device)
        if self.dist.main:
            out.mkdir(parents=True, exist_ok=True)
        self.prep, cfg = prepare_run(cfg, resolve, default_catalog, source, out, self.device,
                                     self.dist, progress)  # fmt: skip
        self.cfg = cfg
        self.split = self.prep.split_report(cfg)
        self.ignore = ignore_indices(cfg, self.prep, source)
        self.model = build_model(cfg, self.prep, resolve).to(self.device)
        weights = class_weights(cfg, self.prep, source)
        self.module = TrainModule(self.model, cfg.loss, weights).to(self.device)
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters())
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.sampler = WindowSampler(self.prep.cands, self.prep.splits, cfg.sampling.mode,
                                     cfg.split.gap, cfg.seed, self.prep.features)  # fmt: skip
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"score": None, "step": None, "metrics": None}
        self.samples = 0
        self.elapsed = 0.0
        self._t0 = 0.0  # start of the time not yet added to elapsed (while fitting)
        self.resumed_from: int | None = None
        self.status = "running"
        self.last_metrics: dict[str, Any] | None = None
        #: training loss/accuracy sums since the last validation (checkpointed, so the history
        #: row after a resume averages the same steps as without the interruption)
        self.running = new_running()
        self._holdout: list[Any] | None = None

    # ------------------------------------------------------------------ state

    @property
    def ckpt(self) -> Path:
        """The run's checkpoint folder."""
        return self.out / "checkpoint"

    def resume(self) -> None:
        """Continue from the run folder's checkpoint, when there is one and ``resume`` is set."""
        if not self.cfg.resume or not has_checkpoint(self.ckpt):
            return
        meta = load_checkpoint(self.ckpt, self.model, self.optimizer, self.scaler)
        self.step, self.history = int(meta["step"]), list(meta["history"])
        self.best, self.samples = meta["best"], int(meta["samples"])
        self.elapsed = float(meta["elapsed"])
        self.running = {**new_running(), **meta.get("running", {})}
        self.resumed_from = self.step
        log.info("resumed %s at step %d of %d", self.out, self.step, self.cfg.steps)

    def save_state(self) -> None:
        """Checkpoint model, optimiser and progress (rank 0)."""
        if not self.dist.main:
            return
        meta = {"step": self.step, "history": self.history, "best": self.best,
                "samples": self.samples, "elapsed": self.elapsed, "status": self.status,
                "running": {k: v for k, v in self.running.items() if k != "t"},
                "config": self.cfg.model_dump(mode="json")}  # fmt: skip
        save_checkpoint(self.ckpt, self.model, self.optimizer, meta, self.scaler)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, Any], float]:
        """Metrics and mean loss over the validation tiles (summed over DDP ranks)."""
        return validate(self.model, self.prep, self.device, self.dist, self._autocast, self.ignore)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # ------------------------------------------------------------------ training

    def _loader(self, start: int, stop: int) -> torch.utils.data.DataLoader:
        ds = TrainWindows(self.prep.scenes, self.sampler, self.prep.norm, self.cfg.augment,
                          self.cfg.sampling.size, self.cfg.batch, start, stop,
                          self.dist.rank, self._feature_weights())  # fmt: skip
        return torch.utils.data.DataLoader(
            ds, batch_size=self.cfg.batch, shuffle=False, num_workers=self.cfg.loader_workers,
            pin_memory=self.device.type == "cuda")  # fmt: skip

    def _feature_weights(self) -> list[tuple[Any, Any]] | None:
        """``loss.balance: features``: per scene, its feature index and per-feature weights."""
        feats = self.prep.features
        if self.cfg.loss.balance != "features" or feats is None:
            return None
        return [(f, f.weights()) if f is not None else (None, None) for f in feats]

    def _train_step(self, net: torch.nn.Module, inputs: dict, target: torch.Tensor) -> dict:
        cfg = self.cfg
        lr = set_lr(self.optimizer, cfg.optimizer.lr, lr_factor(cfg.schedule, self.step, cfg.steps))
        inputs = {n: v.to(self.device, non_blocking=True) for n, v in inputs.items()}
        target = target.to(self.device, non_blocking=True)
        with self._autocast():
            out = net(inputs, target)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {float(loss)} at step {self.step}; "
                                     "lower the learning rate or check the labels")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lab = target != IGNORE
        pred = out["logits"].argmax(1)
        correct = float((pred[lab] == target[lab]).sum())
        return {"loss": float(loss.detach()), "lr": lr, "correct": correct,
                "labelled": float(lab.sum())}  # fmt: skip

    def fit(self, stop_after: int | None = None) -> str:
        """Train to ``steps`` (or ``stop_after`` more steps, or the time limit); returns status.

        Steps run in segments that end at the next validation or checkpoint; after each
        segment the run validates when due, then checkpoints.
        """
        cfg = self.cfg
        net = self._parallel()
        self.model.train()
        self._t0 = time.perf_counter()
        session_start = self.step
        self.running["t"] = time.perf_counter()
        status = "finished"
        lr = 0.0
        with self._progress_bar() as bar:
            while self.step < cfg.steps:
                end = self._segment_end(session_start, stop_after)
                out_of_time, lr = self._train_segment(net, end, bar, lr)
                self._tick()
                if self.step % cfg.val_every == 0 or self.step >= cfg.steps or out_of_time:
                    self._validate_and_record(self.running, lr)
                    self.running = new_running()
                if out_of_time:
                    status = "time_limit"
                    break
                if self._paused(session_start, stop_after):
                    status = "paused"
                    break
                self.status = "running"
                self.save_state()
                ddp.barrier(self.dist)
        self._tick()
        self.status = status
        self.save_state()
        ddp.barrier(self.dist)
        return status

    def _parallel(self) -> torch.nn.Module:
        """The training module, wrapped in DistributedDataParallel under torchrun."""
        if not self.dist.enabled:
            return self.module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.module, device_ids=ids)

    def _progress_bar(self) -> tqdm:
        """The steps bar (rank 0, when progress is shown)."""
        return tqdm(total=self.cfg.steps, initial=self.step, unit="step", desc="train",
                    disable=not (self.progress and self.dist.main), leave=False)  # fmt: skip

    def _segment_end(self, session_start: int, stop_after: int | None) -> int:
        """The step before which this segment stops: the next validation or checkpoint, the
        last step, or the end of this session."""
        cfg = self.cfg
        ckpt_every = cfg.checkpoint_every or cfg.val_every
        end = min(cfg.steps, (self.step // cfg.val_every + 1) * cfg.val_every,
                  (self.step // ckpt_every + 1) * ckpt_every)  # fmt: skip
        if stop_after is not None:
            end = min(end, session_start + stop_after)
        return end

    def _train_segment(self, net: torch.nn.Module, end: int, bar: tqdm, lr: float) -> tuple[bool, float]:
        """Train steps up to ``end``; returns whether the time limit stopped it, and the last lr."""
        for inputs, target in self._loader(self.step, end):
            r = self._train_step(net, inputs, target)
            lr = r["lr"]
            self._count(r, target.shape[0] * self.dist.world)
            bar.update(1)
            bar.set_postfix(loss=f"{r['loss']:.4f}", lr=f"{r['lr']:.2e}", miou=self._last_miou())
            if ddp.broadcast_flag(self._out_of_time(), self.dist, self.device):
                return True, lr
        return False, lr

    def _count(self, r: dict[str, float], samples: int) -> None:
        """Add one step's results to the totals and to the running sums since validation."""
        self.step += 1
        self.samples += samples
        run = self.running
        run["loss"] += r["loss"]
        run["n"] += 1
        run["correct"] += r["correct"]
        run["labelled"] += r["labelled"]
        run["samples"] += samples

    def _out_of_time(self) -> bool:
        """The run's ``time_limit`` (minutes, over all sessions) is spent."""
        limit = self.cfg.time_limit
        return limit is not None and self.elapsed + time.perf_counter() - self._t0 > limit * 60

    def _tick(self) -> None:
        """Add the time since the last tick to ``elapsed``."""
        now = time.perf_counter()
        self.elapsed += now - self._t0
        self._t0 = now

    def _paused(self, session_start: int, stop_after: int | None) -> bool:
        """This session did its ``stop_after`` steps and the run is not finished."""
        return (stop_after is not None and self.step - session_start >= stop_after
                and self.step < self.cfg.steps)  # fmt: skip

    def _last_miou(self) -> str:
        if not self.history or self.history[-1].get("val_miou") is None:
            return "-"
        return f"{self.history[-1]['val_miou']:.3f}"

    def _validate_and_record(self, run: dict[str, Any], lr: float) -> None:
        metrics, val_loss = self.validate()
        row = history_row(run, metrics, val_loss, step=self.step, samples=self.samples, lr=lr,
                          elapsed=self.elapsed)  # fmt: skip
        self.history.append(row)
        self.last_metrics = metrics
        value = score(metrics, self.cfg.best_metric, self.source)
        best = self.best["score"]
        if best is None or value > best:
            self.best = {"score": value, "step": self.step, "metrics": metrics}
            if self.dist.main:
                card = make_card(self.cfg, self.prep, self.model, metrics, self.step,
                                 self.source, self.split)  # fmt: skip
                save_bundle(self.model, card, self.out / "best")
        if self.dist.main:
            write_history(self.history, self.out)
        if self.dist.main:
            msg = summary_line(self.step, metrics, row["train_loss"])
            tqdm.write(msg) if self.progress else log.info(msg)

    def finish(self) -> TrainResult:
        """Write the last bundle (after a final validation) and the run report (rank 0)."""
        best_metrics = self.best.get("metrics") or {}
        if self.dist.main:
            if self.last_metrics is not None:
                card = make_card(self.cfg, self.prep, self.model, self.last_metrics, self.step,
                                 self.source, self.split)  # fmt: skip
                save_bundle(self.model, card, self.out / "last")
            write_report(self.report(), self.out)
        ddp.barrier(self.dist)
        return TrainResult(self.out, self.out / "best", self.out / "last",
                           self.out / "train_report.json", self.out / "history.csv",
                           self.status, best_metrics)  # fmt: skip

    def report(self) -> dict[str, Any]:
        """The run report (train_report.json) as it stands."""
        rep = run_report(self.cfg, self.prep, self.facts())
        if self._holdout is None:  # features split: the held-out features, for evaluate
            self._holdout = [holdout_specs(self.out, self.prep.catalog_scenes, self.prep.splits,
                                           self.prep.features)]  # fmt: skip
        rep["holdout_scene_specs"] = self._holdout[0]
        return rep

    def facts(self) -> RunFacts:
        """Where the run stands, as plain values for the report."""
        n_params = sum(p.numel() for p in self.model.inference_state_dict().values())
        return RunFacts(
            source=self.source, out=self.out, checkpoint=self.ckpt, status=self.status,
            step=self.step, resumed_from=self.resumed_from, samples=self.samples,
            elapsed=self.elapsed, device=str(self.device), world=self.dist.world,
            model_arguments=self.model.args.model_dump(mode="json"),
            inference_parameters=int(n_params), loss_name=self.module.loss_name,
            amp=self.amp_dtype is not None, ignore=self.ignore, split=self.split, best=self.best,
        )  # fmt: skip

    def close(self) -> None:
        """Leave the process group (DDP)."""
        ddp.cleanup(self.dist)


def train(cfg: TrainConfig, out: str | Path, *, resolve: Callable[[str], Path] | None = None,
          default_catalog: str | None = None, source: str = "pipeline",
          progress: bool = True, stop_after: int | None = None) -> TrainResult:  # fmt: skip
    """Train ``cfg`` into the run folder ``out`` (resuming from its checkpoint if allowed).

    Args:
        resolve: turns paths of the config into absolute ones (default: relative to cwd).
        stop_after: stop (checkpointed, status ``paused``) after this many steps this session.
    """
    out = Path(out).resolve()
    resolve = resolve or (lambda p: Path(p).expanduser().resolve())
    if is_pixel(cfg):  # random forest / gradient boosting: an ONNX bundle, no loop
        from geoseg.training.pixel import train_pixel

        return train_pixel(cfg, out, resolve=resolve, default_catalog=default_catalog,
                           source=source)  # fmt: skip
    tr = Trainer(cfg, out, resolve, default_catalog, source, progress)
    try:
        tr.resume()
        if tr.step >= cfg.steps and (out / "last").is_dir() and (out / "best").is_dir():
            tr.status = "finished"
            log.info("%s: already trained (%d steps); set resume: false to train again", out,
                     tr.step)  # fmt: skip
        else:
            tr.fit(stop_after)
        return tr.finish()
    finally:
        tr.close()
