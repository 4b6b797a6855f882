"""Metrics against hand-computed confusion matrices; streaming equals whole-array scoring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from geoseg.evaluation.metrics import ConfusionMatrix, compute_metrics, metrics_markdown, write_metrics


def test_hand_computed_three_classes_one_absent() -> None:
    # rows: reference, columns: prediction; class 2 is absent from both
    m = compute_metrics([[5, 1, 0], [2, 3, 0], [0, 0, 0]], ["a", "b", "c"])
    a, b, c = (m["per_class"][k] for k in "abc")
    assert a["iou"] == pytest.approx(5 / 8) and b["iou"] == pytest.approx(3 / 6)
    assert a["precision"] == pytest.approx(5 / 7) and a["recall"] == pytest.approx(5 / 6)
    assert a["f1"] == pytest.approx(10 / 13) and b["f1"] == pytest.approx(6 / 9)
    assert c["iou"] is None and c["f1"] is None and c["precision"] is None
    assert m["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)  # absent class not in the mean
    assert m["overall_accuracy"] == pytest.approx(8 / 11)
    assert m["kappa"] == pytest.approx(26 / 59)  # (po − pe) / (1 − pe), pe = 62/121
    assert m["classes_absent"] == ["c"]
    json.dumps(m)  # JSON-safe: NaN became None


def test_predicted_but_absent_class_counts_as_zero_iou() -> None:
    m = compute_metrics([[4, 1], [0, 0]], ["bg", "fg"])
    assert m["per_class"]["fg"]["iou"] == 0.0
    assert m["per_class"]["fg"]["recall"] is None
    assert m["miou"] == pytest.approx((4 / 5 + 0) / 2)


def test_ignored_classes_leave_the_mean_only() -> None:
    mat = [[10, 0, 0], [0, 3, 1], [0, 1, 3]]
    full = compute_metrics(mat, ["clutter", "x", "y"])
    ign = compute_metrics(mat, ["clutter", "x", "y"], ignore_classes=[0])
    assert ign["miou"] == pytest.approx(3 / 5)
    assert full["miou"] == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)
    assert ign["overall_accuracy"] == full["overall_accuracy"]
    assert ign["ignored_classes"] == ["clutter"]
    assert not ign["per_class"]["clutter"]["in_mean"]
    with pytest.raises(ValueError, match="outside"):
        compute_metrics(mat, ignore_classes=[3])


def test_update_skips_ignore_index_and_nodata_predictions() -> None:
    target = np.array([[0, 1, 255], [1, 1, 0]])
    pred = np.array([[0, 0, 1], [1, 255, 0]])
    cm = ConfusionMatrix(2).update(pred, target)
    assert cm.matrix.tolist() == [[2, 0], [1, 1]]  # (0,0)x2, (1→0), (1→1); 255s dropped
    assert cm.total == 4


def test_perfect_and_empty() -> None:
    m = compute_metrics([[7, 0], [0, 0]])
    assert m["miou"] == 1.0 and m["overall_accuracy"] == 1.0 and m["kappa"] == 1.0
    e = compute_metrics([[0, 0], [0, 0]])
    assert e["miou"] is None and e["overall_accuracy"] is None and e["pixels"] == 0


def test_streaming_over_chunks_equals_whole_array() -> None:
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k, (203, 157)).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, k, target.shape))
    pred = pred.astype(np.uint8)
    whole = ConfusionMatrix(k).update(pred, target)
    for chunk in (16, 50, 64):
        cm = ConfusionMatrix(k)
        for r in range(0, target.shape[0], chunk):
            for c in range(0, target.shape[1], chunk):
                part = ConfusionMatrix(k).update(pred[r:r + chunk, c:c + chunk],
                                                 target[r:r + chunk, c:c + chunk])  # fmt: skip
                cm += part
        assert np.array_equal(cm.matrix, whole.matrix)
        assert cm.metrics() == whole.metrics()


def test_reports_written(tmp_path: Path) -> None:
    m = compute_metrics([[5, 1], [2, 3]], ["background", "building"])
    paths = write_metrics(m, tmp_path, "evaluation", "Demo")
    assert json.loads(paths["json"].read_text())["miou"] == pytest.approx(m["miou"])
    md = paths["markdown"].read_text()
    assert "| building |" in md and "Confusion matrix" in md
    assert paths["confusion_png"].read_bytes()[:4] == b"\x89PNG"
    assert "mIoU" in metrics_markdown(m)
    assert not math.isnan(m["kappa"])
