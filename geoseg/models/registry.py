"""Model registry: ``@register("name")`` on a SegModel subclass, ``create(name, ...)`` to build."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    name: str,
    modalities: Mapping[str, int] | int,
    num_classes: int,
    *,
    band_roles: Mapping[str, Sequence[str]] | None = None,
    load_weights: bool = True,
    **kwargs: Any,
) -> SegModel:
    """Build a registered model.

    Args:
        name: architecture name (see ``list_models()``).
        modalities: bands per modality, e.g. ``{"image": 4, "dem": 1}``; an int means
            ``{"image": n}``.
        num_classes: number of output classes.
        band_roles: per modality, the role of each band (``red``, ``nir``, ``swir16``...):
            torchgeo weights (``encoder_weights: torchgeo:...``) are matched to bands by role.
        load_weights: False builds the architecture without loading any pretrained weights
            (a bundle's own weights replace them anyway); the arguments keep the names.
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
    weights = {f: getattr(args, f) for f in type(args).model_fields
               if f.endswith("encoder_weights") and getattr(args, f)}  # fmt: skip
    torchgeo = {f: v for f, v in weights.items() if str(v).startswith("torchgeo:")}
    # torchgeo weights are loaded after construction (matched to bands by role); without
    # load_weights no pretrained weights are loaded at all
    skip = weights if not load_weights else torchgeo
    model = cls(modalities, num_classes, args.model_copy(update=dict.fromkeys(skip)) if skip else args)
    model.args = args
    if load_weights and torchgeo:
        from geoseg.models.torchgeo_encoders import load_pretrained

        model.pretrained = load_pretrained(model, torchgeo, band_roles)
    return model
