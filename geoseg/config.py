"""Strict, typed configuration objects, the constants every layer shares, and the one way a
configuration error is told: YAML read with its line numbers, and a pydantic ``ValidationError``
made into one line ``file:line: where: what is wrong; how to fix it``
(:func:`format_validation_error`). Imports only pydantic, yaml and geoseg's errors.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from geoseg.errors import ConfigError
from geoseg.limits import check_file_size, limits, raise_hint


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


#: class-id (and quantised probability) value of nodata pixels in every uint8 output
NODATA = 255
#: label value of unlabelled pixels, ignored by losses and metrics
IGNORE = 255

M = typing.TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------- YAML


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file (safe loader); also return its node tree (line numbers for errors).

    Hostile files end in a ConfigError, not in memory: a file over ``max_config_bytes``,
    aliases expanding to more than ``max_yaml_nodes`` nodes (a "billion laughs"), recursive
    aliases, nesting deeper than Python's stack (``geoseg.limits``).
    """
    check_file_size(path, "YAML file")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except ValueError:  # UnicodeDecodeError
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8 YAML") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_expansion(path, node)
        return yaml.safe_load(text), node
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply; flatten the file") from None


def _check_expansion(path: Path, root: yaml.Node | None) -> None:
    """Refuse aliases that expand the document beyond ``max_yaml_nodes`` or into itself.

    Counts the nodes of the document as a reader sees it (an alias counts its whole target
    again) in one pass over the distinct nodes (iterative: no recursion limit).
    """
    if root is None:
        return
    cap = limits().max_yaml_nodes
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = _children(node)
        if finished:
            open_.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            if size[key] > cap:
                line = node.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: YAML aliases (*name) expand the document to "
                                  f"more than {cap} nodes; write the values out, or "
                                  f"{raise_hint('max_yaml_nodes', size[key])}")  # fmt: skip
            continue
        if key in size:
            continue
        open_.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_:
                line = kid.start_mark.line + 1
                raise ConfigError(f"{path}:{line}: a YAML alias refers to a node that contains "
                                  "it (recursive); remove the alias")  # fmt: skip
            if id(kid) not in size:
                stack.append((kid, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse(model: type[M], data: Any, path: Path | str, node: yaml.Node | None = None,
          prefix: tuple = ()) -> M:  # fmt: skip
    """Validate ``data`` against ``model``; errors become one-line ConfigErrors naming ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc, path, node, prefix, model=model, data=data)
        raise ConfigError(msg) from None


def line_of(node: yaml.Node | None, loc: Sequence) -> int | None:
    """1-based line of the deepest node of ``loc`` found in the YAML node tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# --------------------------------------------------------------------------- errors


def format_validation_error(exc: ValidationError, source: str | os.PathLike[str] | None = None,
                            node: yaml.Node | None = None, prefix: tuple = (), *,
                            model: type[BaseModel] | None = None,
                            data: Any = None) -> str:  # fmt: skip
    """One line for the first problem of ``exc`` and the count of the others.

    ``source:line: where: what is wrong; how to fix it``. Unknown keys come first (a misspelt
    key also shows up as a missing one) and name the close match and the allowed keys.

    Args:
        source: the file (or what was validated), written first; ``:line`` with ``node``.
        node: the YAML node tree of the file (see ``load_yaml``), for the line number.
        prefix: where ``data`` sits in the file, e.g. ``("steps", 0)``.
        model: the model validated: unknown keys list its allowed keys.
        data: the data validated: the location keeps only parts found in it (no union tags).
    """
    err = first_error(exc)
    loc = _data_loc(data, err["loc"])
    head = ""
    if source is not None:
        line = line_of(node, prefix + loc)
        head = f"{source}:{line}: " if line else f"{source}: "
    others = exc.error_count() - 1
    more = f" (and {others} more problem(s))" if others else ""
    return head + _problem(err, loc, prefix, model) + more


def first_error(exc: ValidationError) -> ErrorDetails:
    """The error told first: an unknown key before the others (a misspelt key also shows up
    as a missing one), else the first."""
    return min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")


def _problem(err: ErrorDetails, loc: tuple, prefix: tuple,
             model: type[BaseModel] | None) -> str:  # fmt: skip
    """``where: what is wrong; how to fix it`` for one pydantic error at ``loc``."""
    if err["type"] == "extra_forbidden" and loc:
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1]) if model is not None else []
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        keys = f"allowed keys: {', '.join(allowed)}" if allowed else "remove it"
        at = _fmt_loc(prefix + loc[:-1])
        return f"unknown key {key!r}{f' in {at}' if at else ''}; {hint}{keys}"
    if err["type"] == "missing" and loc:
        return _at(prefix + loc[:-1]) + f"missing required key {str(loc[-1])!r}; add it"
    msg = err["msg"].removeprefix("Value error, ")
    fix = "" if ";" in msg else "; fix this value"
    return _at(prefix + loc) + msg + fix


def _at(loc: Sequence) -> str:
    where = _fmt_loc(loc)
    return f"{where}: " if where else ""


def _data_loc(data: Any, loc: Sequence) -> tuple:
    """Keep the parts of a pydantic location that exist in the data (drop union-member tags)."""
    if data is None:  # nothing to walk: drop only the validator tags
        return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    out: list = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        if in_dict or (isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict | list):
            if isinstance(part, str) and not part.startswith(("function-", "union", "int", "str")):
                out.append(part)  # a missing key: name it, stop walking
                break
        else:
            break
    return tuple(out)


def _fmt_loc(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence) -> list[str]:
    """Field names of the model found at ``loc`` (following lists, dicts and optionals)."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann, part)
        if ann is None:
            return []
    ann = _unwrap(ann, None)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return list(ann.model_fields)
    return []


def _unwrap(ann: Any, part: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(ann)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        ann = models[0] if models else None
        origin = None
    if part is None:
        return ann
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        field = ann.model_fields.get(str(part))
        return _unwrap(field.annotation, None) if field else None
    if origin in (list, Sequence, tuple) and isinstance(part, int):
        return _unwrap(typing.get_args(ann)[0], None)
    if origin in (dict, Mapping):
        return _unwrap(typing.get_args(ann)[1], None)
    return None
