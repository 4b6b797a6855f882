"""The ``train`` pipeline step (``type: train``), registered in geoseg's step registry."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from geoseg.pipeline import PipelineContext, StepBase, StepOutcome, register_step
from geoseg.train.config import TrainConfig
from geoseg.train.profiles import Profiled


class TrainStep(StepBase, Profiled, TrainConfig):
    """Train a model on labelled scenes; outputs ``model`` (the best bundle), ``last``, ``report``."""

    config_class: ClassVar[Any] = TrainConfig
    type: Literal["train"] = "train"

    def run(self, ctx: PipelineContext) -> StepOutcome:
        from geoseg.train.loop import train

        cfg: TrainConfig = self.config()
        out = ctx.path(cfg.out) if cfg.out else ctx.workdir / str(self.name)
        res = train(cfg, out, resolve=ctx.path, default_catalog=ctx.catalog_path,
                    source=str(ctx.source), progress=ctx.progress,
                    stop_after=self._session.get("stop_after"))
        m = res.best_metrics or {}
        miou = m.get("miou")
        summary = (f"{res.status}; best validation mIoU "
                   f"{'–' if miou is None else f'{100 * miou:.2f} %'}; bundle {res.best}")
        outputs: dict[str, Any] = {"model": str(res.best), "last": str(res.last),
                                   "report": str(res.report), "history": str(res.history),
                                   "out": str(res.out), "status": res.status}  # fmt: skip
        return StepOutcome(ok=res.status != "failed", summary=summary, outputs=outputs)


register_step("train", TrainStep)
