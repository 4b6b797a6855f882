"""Click options generated from :class:`~geoseg.runs.options.PredictOptions`.

``geoseg predict`` and ``geoseg evaluate`` take their prediction flags from here, pipelines take
the same field names as keys: the three cannot drift (one name, one default, one help text).
A library error that names a parameter (``tile=8 is too small``) is shown with its flag
(``--tile 8 is too small``).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo

from geoseg.errors import GeosegError, InputError
from geoseg.runs.options import PredictOptions

#: parameters of library calls that the CLI exposes under another flag
EXTRA_FLAGS = {"model": "--model", "modalities": "--modality", "out_dir": "--out", "image": "IMAGE",
               # geoseg indices / geoseg fields
               "index": "--index", "roles": "--roles", "grow": "--grow", "nodata": "--nodata",
               "percentiles": "--percentiles", "interior": "--interior",
               "boundary": "--boundary", "datetime": "--datetime", "block": "--block"}


def parse_pairs(values: Iterable[str], what: str, example: str = "dem=dem.tif") -> dict[str, str]:
    """NAME=VALUE options -> dict; a value without '=' is a one-line error showing ``example``."""
    out = {}
    for v in values:
        if "=" not in v:
            raise InputError(f"{what} {v!r}: expected NAME=VALUE, e.g. {example}")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


def flag(name: str) -> str:
    """The CLI flag of a PredictOptions field or a library parameter."""
    return EXTRA_FLAGS.get(name, "--" + name.replace("_", "-"))


def cli_message(exc: GeosegError) -> str:
    """The error's message with parameter names (``tile=``) shown as their flags (``--tile``)."""
    text = str(exc)
    names = [*PredictOptions.model_fields, *EXTRA_FLAGS]
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, names)) + r")=(?=\S)")
    return pattern.sub(lambda m: flag(m.group(1)) + ("" if m.group(1) == "image" else " "), text)


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``Literal[...]`` -> click.Choice; containers -> str (parsed)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _base_type(args[0]) if len(args) == 1 else str
    if annotation in (int, float, bool):
        return annotation
    return str


def _option(name: str, field: FieldInfo) -> Callable[[Callable], Callable]:
    """One click option for one field (booleans: ``--x/--no-x``; mappings: repeatable pairs)."""
    help_text = field.description or name.replace("_", " ")
    dashed = flag(name)
    if field.annotation is bool:
        return click.option(f"{dashed}/--no-{dashed[2:]}", name, default=field.default,
                            show_default=True, help=help_text)  # fmt: skip
    if name == "modality_bands":
        return click.option(dashed, name, multiple=True, help=help_text)
    default = field.get_default(call_default_factory=True)
    default = str(default) if isinstance(default, Path) else default
    return click.option(dashed, name, type=_base_type(field.annotation), default=default,
                        show_default=default is not None, help=help_text)  # fmt: skip


def predict_options(exclude: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Decorator adding one click option per PredictOptions field (but ``exclude``)."""
    skip = set(exclude)

    def decorate(command: Callable) -> Callable:
        for name, field in reversed(list(PredictOptions.model_fields.items())):
            if name not in skip:
                command = _option(name, field)(command)
        return command

    return decorate


def options_from(kw: dict[str, Any], **fixed: Any) -> PredictOptions:
    """Pop the PredictOptions flags out of a command's keyword arguments and validate them."""
    from geoseg.scene.scene import parse_band_spec

    data = {name: kw.pop(name) for name in PredictOptions.model_fields if name in kw}
    if "bands" in data:
        data["bands"] = parse_band_spec(data["bands"])
    if "modality_bands" in data:
        pairs = parse_pairs(data["modality_bands"], "--modality-bands", example="dem=1")
        data["modality_bands"] = {k: parse_band_spec(v) for k, v in pairs.items()}
    return PredictOptions(**data, **fixed)
