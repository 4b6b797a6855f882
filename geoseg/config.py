"""Strict, typed configuration objects and the constants every layer shares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


#: class-id (and quantised probability) value of nodata pixels in every uint8 output
NODATA = 255
#: label value of unlabelled pixels, ignored by losses and metrics
IGNORE = 255
