"""FarSeg's foreground-aware loss and the HPCL-Net contrastive pieces."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from geoseg.models.losses import (
    AnnealedFocalLoss,
    annealing_factor,
    boundary_cells,
    hyper_pixel_labels,
    supervised_infonce,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def batch(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 9, generator=g) * 2
    target = torch.randint(0, 4, (2, 8, 9), generator=g)
    target[0, :2] = 255  # some ignored pixels
    return logits, target


def grad_of(loss_fn: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
    x = logits.clone().requires_grad_(True)
    loss_fn(x).backward()
    return x.grad


def reference_focal(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Σ l_i·s_i / (N + B) written out directly from the paper's definitions (s detached)."""
    valid = target != 255
    logp = logits.log_softmax(1)
    safe = target.clamp_max(logits.shape[1] - 1) * valid
    lp = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    ce = -lp * valid
    w = ((1 - lp.exp()) ** gamma).detach()
    z = (ce.sum() / (ce * w).sum()).detach()
    return (ce * z * w).sum() / (valid.sum() + logits.shape[0])


def ce_sum(logits: Tensor, target: Tensor) -> Tensor:
    """Plain CE with the official normaliser N_valid + B."""
    n = (target != 255).sum() + logits.shape[0]
    return F.cross_entropy(logits, target, ignore_index=255, reduction="sum") / n


# ---------------------------------------------------------------------------- FarSeg FA loss


def test_annealing_schedules() -> None:
    assert annealing_factor(0, 100) == 1.0
    assert annealing_factor(50, 100) == pytest.approx(0.5)
    assert annealing_factor(100, 100) == 0.0 and annealing_factor(500, 100) == 0.0
    assert annealing_factor(50, 100, "linear") == pytest.approx(0.5)
    assert annealing_factor(50, 100, "poly") == pytest.approx(0.5**0.9)
    assert annealing_factor(1, 10_000) == pytest.approx(0.5 * (1 + math.cos(math.pi / 10_000)))
    with pytest.raises(ValueError, match="cosine, poly or linear"):
        AnnealedFocalLoss(schedule="exp")  # type: ignore[arg-type]


def test_fa_loss_is_plain_ce_at_the_start() -> None:
    logits, target = batch()
    loss = AnnealedFocalLoss(max_step=10_000)
    # t = 0: ζ = 1 exactly, the loss and its gradient are plain CE
    torch.testing.assert_close(loss(logits, target, step=0), ce_sum(logits, target))
    torch.testing.assert_close(
        grad_of(lambda x: loss(x, target, step=0), logits),
        grad_of(lambda x: ce_sum(x, target), logits),
    )
    # the first training step (t = 1, the official counter) is CE up to ζ(1) = 1 − 2.5e-8
    loss.train()
    g1 = grad_of(lambda x: loss(x, target), logits)
    assert int(loss.step) == 1
    torch.testing.assert_close(g1, grad_of(lambda x: ce_sum(x, target), logits), rtol=1e-6,
                               atol=1e-9)  # fmt: skip


def test_fa_loss_becomes_normalised_focal_after_t() -> None:
    logits, target = batch(1)
    loss = AnnealedFocalLoss(max_step=100)
    g_focal = grad_of(lambda x: reference_focal(x, target), logits)
    for t in (100, 101, 5000):
        torch.testing.assert_close(grad_of(lambda x, t=t: loss(x, target, step=t), logits), g_focal)
    # the normaliser keeps the loss value equal to CE; only the pixels' weights move
    torch.testing.assert_close(loss(logits, target, step=500), ce_sum(logits, target))
    # halfway the weights are the mean of CE's (1) and the focal ones
    g_ce = grad_of(lambda x: ce_sum(x, target), logits)
    g_half = grad_of(lambda x: loss(x, target, step=50), logits)
    torch.testing.assert_close(g_half, 0.5 * (g_ce + g_focal))


def test_fa_loss_focuses_on_hard_pixels() -> None:
    logits = torch.tensor([[[[4.0, -1.0]], [[-4.0, 1.0]]]])  # 1×2×1×2: easy pixel, hard pixel
    target = torch.tensor([[[0, 1]]])
    loss = AnnealedFocalLoss(max_step=10)
    g0 = grad_of(lambda x: loss(x, target, step=0), logits).abs().sum(1)
    g_end = grad_of(lambda x: loss(x, target, step=10), logits).abs().sum(1)
    assert g_end[0, 0, 1] / g_end[0, 0, 0] > 10 * g0[0, 0, 1] / g0[0, 0, 0]


def test_fa_loss_step_counter_saves_and_restores() -> None:
    logits, target = batch()
    loss = AnnealedFocalLoss(max_step=10).train()
    for _ in range(4):
        loss(logits, target)
    loss(logits, target, step=99)  # an explicit step does not advance the counter
    loss.eval()
    loss(logits, target)  # evaluation does not advance it either
    assert int(loss.step) == 4
    state = loss.state_dict()
    assert "step" in state
    resumed = AnnealedFocalLoss(max_step=10)
    resumed.load_state_dict(state)
    assert int(resumed.step) == 4
    resumed.train()
    resumed(logits, target)
    assert int(resumed.step) == 5


def test_fa_loss_ignores_ignored_pixels() -> None:
    logits, target = batch()
    loss = AnnealedFocalLoss(max_step=10)
    other = logits.clone()
    other[0, :, :2] = torch.randn_like(other[0, :, :2]) * 5  # only ignored pixels change
    for t in (0, 5, 20):
        torch.testing.assert_close(loss(logits, target, step=t), loss(other, target, step=t))


# ---------------------------------------------------------------------------- HPCL pieces


def test_hyper_pixel_labels_by_block_purity() -> None:
    target = torch.zeros(1, 8, 12, dtype=torch.long)
    target[0, :, 4:8] = 1
    target[0, 0, 4] = 0  # block (0,1): 15/16 class 1 ≥ 0.9 → still class 1
    target[0, :4, 8:] = 1
    target[0, :2, 8:] = 0  # block (0,2): half/half → mixed
    target[0, 4:, 8:] = 255  # block (1,2): all ignored → mixed
    labels = hyper_pixel_labels(target, num_classes=2, stride=4)
    assert labels.tolist() == [[[0, 1, -1], [0, 1, -1]]]


def test_boundary_cells_band() -> None:
    labels = torch.zeros(1, 5, 6, dtype=torch.long)
    labels[0, :, 3:] = 1
    labels[0, 4, 0] = -1  # a mixed cell
    band = boundary_cells(labels)
    expected = torch.zeros(1, 5, 6, dtype=torch.bool)
    expected[0, :, 2:4] = True  # both sides of the class edge
    expected[0, 3:5, 0:2] = True  # around the mixed cell
    expected[0, 4, 0] = False  # the mixed cell itself is no anchor
    assert torch.equal(band, expected)


def test_supervised_infonce_matches_definition() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    ql = torch.tensor([0, 1, 0, 1, 1])
    kl = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    tau = 0.1
    total = []
    for a in range(5):
        s = q[a] @ k.t() / tau
        pos, neg = kl == ql[a], kl != ql[a]
        neg_sum = s[neg].exp().sum()
        terms = [-(sp.exp() / (sp.exp() + neg_sum)).log() for sp in s[pos]]
        total.append(torch.stack(terms).mean())
    torch.testing.assert_close(supervised_infonce(q, ql, k, kl, tau), torch.stack(total).mean())
    # no negatives at all: zero, but still attached to the graph
    q.requires_grad_(True)
    zero = supervised_infonce(q, torch.zeros(5, dtype=torch.long), k, torch.zeros(7).long())
    assert zero.item() == 0.0 and zero.requires_grad


def test_contrastive_toy_problem_decreases() -> None:
    """A MoCo-style toy: linear query net, EMA key net, per-class FIFO queues of keys."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(2, 16, generator=g)
    query = torch.nn.Linear(16, 8)
    key = torch.nn.Linear(16, 8)
    key.load_state_dict(query.state_dict())
    opt = torch.optim.SGD(query.parameters(), lr=0.5)
    queue = torch.zeros(0, 8)
    queue_labels = torch.zeros(0, dtype=torch.long)
    losses = []
    for _ in range(60):
        labels = torch.randint(0, 2, (64,), generator=g)
        x = centers[labels] + 1.0 * torch.randn(64, 16, generator=g)
        q = F.normalize(query(x), dim=1)
        with torch.no_grad():
            for pk, pq in zip(key.parameters(), query.parameters(), strict=True):
                pk.mul_(0.9).add_(pq, alpha=0.1)
            k = F.normalize(key(x), dim=1)
        loss = supervised_infonce(q, labels, torch.cat([k, queue]), torch.cat([labels,
                                  queue_labels]), temperature=0.1)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        queue, queue_labels = torch.cat([queue, k])[-256:], torch.cat([queue_labels, labels])[-256:]
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
