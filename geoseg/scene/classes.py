"""What pixel values mean: the class table of labels and predictions (ids, names, colours)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from geoseg.config import StrictModel

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class ClassInfo(StrictModel):
    """One output class."""

    id: int = Field(ge=0, le=254)  # 255 is the class raster's nodata
    name: str
    color: str = "#808080"

    @field_validator("color")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX.match(v):
            raise ValueError(f"colour {v!r} is not #rrggbb")
        return v.lower()

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


PALETTE = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
]  # fmt: skip


def default_classes(k: int) -> list[ClassInfo]:
    """``k`` classes named class_0... with colours from a distinct palette."""
    return [ClassInfo(id=i, name=f"class_{i}", color=PALETTE[i % len(PALETTE)]) for i in range(k)]
