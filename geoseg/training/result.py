"""The result of a training run (deep or per-pixel): where it left its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """Where a run left its outputs, and how it ended."""

    out: Path
    best: Path
    last: Path
    report: Path
    history: Path
    status: str
    best_metrics: dict[str, Any]
