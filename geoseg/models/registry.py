"""Model registry: ``@register("name")`` on a SegModel subclass, ``create(name, ...)`` to build."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from geoseg.config import first_error, format_validation_error
from geoseg.errors import ModelError
from geoseg.models.base import SegModel

_REGISTRY: dict[str, type[SegModel]] = {}


def register(name: str) -> Callable[[type[SegModel]], type[SegModel]]:
    """Class decorator adding an architecture to the registry under ``name``."""

    def deco(cls: type[SegModel]) -> type[SegModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ModelError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = cls
        cls.arch_name = name
        return cls

    return deco


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[SegModel]:
    """The registered class of ``name`` (case, ``-`` and ``_`` ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {n.replace("-", "").replace("_", ""): n for n in _REGISTRY}
    if key not in aliases:
        raise ModelError(f"unknown architecture {name!r}; choose one of {list_models()}")
    return _REGISTRY[aliases[key]]


def create(
    name: str, modalities: Mapping[str, int] | int, num_classes: int, **kwargs: Any
) -> SegModel:
    """Build a registered model.

    Args:
        name: architecture name (see ``list_models()``).
        modalities: bands per modality, e.g. ``{"image": 4, "dem": 1}``; an int means
            ``{"image": n}``.
        num_classes: number of output classes.
        **kwargs: architecture arguments, validated strictly (unknown keys are errors).
    """
    cls = get_model_class(name)
    if isinstance(modalities, int):
        modalities = {"image": modalities}
    try:
        args = cls.Args(**kwargs)
    except ValidationError as exc:
        loc = first_error(exc)["loc"]
        what = f"argument {str(loc[0])!r}" if loc else "arguments"
        msg = format_validation_error(exc, model=cls.Args, data=kwargs)
        raise ModelError(f"invalid {what} for {name!r}: {msg}") from None
    return cls(modalities, num_classes, args)
