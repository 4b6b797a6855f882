"""Validation during training: the model on the held-out tiles, summed over DDP ranks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from geoseg.config import IGNORE
from geoseg.evaluation.metrics import ConfusionMatrix
from geoseg.training import ddp
from geoseg.training.prepare import Prepared
from geoseg.training.windows import read_val_tile


def validate(model: torch.nn.Module, prep: Prepared, device: torch.device, dist: ddp.Dist,
             autocast: Callable[[], contextlib.AbstractContextManager],
             ignore: list[int]) -> tuple[dict[str, Any], float]:  # fmt: skip
    """Confusion matrix over this rank's share of validation tiles, summed over ranks: the
    metrics (``ignore``: class indices left out of the means) and the mean cross-entropy."""
    model.eval()
    k = len(prep.classes)
    cm = ConfusionMatrix(k)
    loss_sum = np.zeros(2)
    for tile in prep.val_tiles[dist.rank :: dist.world]:
        # features split: labels of the held-out features only
        inputs, target, sl = read_val_tile(prep.val_scenes or prep.scenes, tile, prep.norm)
        inputs = {n: v.to(device) for n, v in inputs.items()}
        with autocast():
            logits = model(inputs)[0][:, sl[0], sl[1]].float()
        t = torch.from_numpy(target.astype(np.int64)).to(device)
        lab = t != IGNORE
        if lab.any():
            ce = torch.nn.functional.cross_entropy(logits[None], t[None], ignore_index=IGNORE,
                                                   reduction="sum")  # fmt: skip
            loss_sum += [float(ce), float(lab.sum())]
        cm.update(logits.argmax(0).cpu().numpy(), target)
    cm.matrix = ddp.sum_array(cm.matrix, dist, device)
    loss_sum = ddp.sum_array(loss_sum, dist, device)
    model.train()
    metrics = cm.metrics([c.name for c in prep.classes], ignore)
    return metrics, (loss_sum[0] / loss_sum[1]) if loss_sum[1] else math.nan
