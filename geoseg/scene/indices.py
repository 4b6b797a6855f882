"""Spectral indices as derived bands, computed window by window from the bands' roles.

The formulas are those of the Awesome Spectral Indices catalogue as shipped by ``spyndex``
(never typed here): an index name (``ndvi``, ``ndre``, ``savi``, ``evi``...) is looked up in
``spyndex.indices``, its symbols (``N``, ``R``, ``RE1``, constants such as ``L``) are bound to
the bands of a modality by their roles (:data:`ROLE_SYMBOLS`) and to the catalogue's default
constants, and the formula is evaluated on the window's float32 arrays as ``spyndex`` does.

:class:`IndexBands` says which indices a derived modality holds and from which modality; it is
validated strictly and recorded in a bundle card (``ModelCard.derived``), so prediction computes
exactly what training computed. :class:`IndexTransform` applies it to what a scene read: the
derived modality is added to the arrays, and a pixel where an index is not finite (a source
band's nodata, a division by zero, the root of a negative number) becomes invalid in the
validity mask, with the index set to 0 there: no inf or NaN reaches a model.
Imports numpy, pydantic and spyndex (on first use) only.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from geoseg.config import StrictModel
from geoseg.errors import InputError

#: band role (catalog ``roles:``, bundle card ``bands``) -> spyndex band symbol
ROLE_SYMBOLS: dict[str, str] = {
    "coastal": "A", "aerosol": "A", "blue": "B", "green": "G", "green1": "G1", "yellow": "Y",
    "red": "R", "rededge": "RE1", "rededge1": "RE1", "rededge2": "RE2", "rededge3": "RE3",
    "nir": "N", "nir2": "N2", "swir1": "S1", "swir2": "S2", "thermal": "T", "thermal1": "T1",
    "thermal2": "T2", "watervapour": "WV", "watervapor": "WV",
}  # fmt: skip
#: symbol -> the role named in error messages
SYMBOL_ROLES = {s: r for r, s in reversed(ROLE_SYMBOLS.items())}
#: geoseg names of catalogue indices whose catalogue name differs (case aside)
ALIASES = {"ndre": "NDREI"}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Add,
          ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)  # fmt: skip


@dataclass(frozen=True)
class SpectralIndex:
    """One catalogue index: its geoseg name, catalogue name, formula and band symbols."""

    name: str
    catalogue_name: str
    formula: str
    bands: tuple[str, ...]
    constants: tuple[str, ...]
    long_name: str

    def roles(self) -> list[str]:
        """The band roles the index reads."""
        return [SYMBOL_ROLES[s] for s in self.bands]


@functools.cache
def _catalogue() -> tuple[dict[str, Any], set[str], dict[str, float | None]]:
    import spyndex

    by_lower = {name.lower(): idx for name, idx in spyndex.indices.items()}
    constants = {k: v.default for k, v in spyndex.constants.items()}
    return by_lower, set(spyndex.bands), constants


def supported_indices() -> list[str]:
    """Names (lower case) of the catalogue's indices computable from band roles alone."""
    by_lower, bands, constants = _catalogue()
    out = []
    for name, idx in by_lower.items():
        syms = set(idx.bands)
        if all((s in bands and s in SYMBOL_ROLES) or constants.get(s) is not None for s in syms):
            out.append(name)
    return sorted(out + [a for a, target in ALIASES.items() if target.lower() in out])


def spectral_index(name: str) -> SpectralIndex:
    """The catalogue definition of index ``name`` (case-insensitive; ``ndre`` = NDREI).

    Raises:
        InputError: unknown index, or one that needs more than band roles and constants
            (kernels, wavelengths, radar bands).
    """
    key = name.strip().lower()
    by_lower, bands, constants = _catalogue()
    idx = by_lower.get(ALIASES.get(key, key).lower())
    if idx is None:
        near = [n for n in supported_indices() if n.startswith(key[:2])][:8]
        raise InputError(f"index={name}: not a spectral index of the Awesome Spectral Indices "
                         f"catalogue (spyndex); e.g. {', '.join(near or ['ndvi', 'ndre', 'savi'])}")
    syms = list(dict.fromkeys(idx.bands))
    band_syms = [s for s in syms if s in bands and s in SYMBOL_ROLES]
    const_syms = [s for s in syms if s not in band_syms]
    unusable = [s for s in const_syms if constants.get(s) is None]
    if unusable:
        raise InputError(f"index={name}: needs {', '.join(unusable)} (kernel, wavelength or radar "
                         "inputs), which geoseg cannot take from band roles; choose another index")
    _check_formula(idx.formula, name)
    return SpectralIndex(key, idx.short_name, idx.formula, tuple(band_syms), tuple(const_syms),
                         idx.long_name)  # fmt: skip


def _check_formula(formula: str, name: str) -> None:
    """Catalogue formulas are arithmetic on names and numbers: refuse anything else."""
    tree = ast.parse(formula, mode="eval")
    bad = [type(n).__name__ for n in ast.walk(tree) if not isinstance(n, _NODES)]
    if bad:
        raise InputError(f"index={name}: formula {formula!r} uses {bad[0]}, which geoseg does "
                         "not evaluate; choose another index")  # fmt: skip


@functools.cache
def _compiled(formula: str) -> Any:
    return compile(ast.parse(formula, mode="eval"), "<spectral index>", "eval")


def evaluate(index: SpectralIndex, bands: Mapping[str, np.ndarray],
             constants: Mapping[str, float] | None = None) -> np.ndarray:  # fmt: skip
    """The index from arrays by spyndex symbol (``{"N": nir, "R": red}``), as spyndex evaluates
    it (``eval`` of the catalogue formula); catalogue constants unless ``constants`` overrides.
    Not-finite results are left as they come (see :class:`IndexTransform`)."""
    _, _, defaults = _catalogue()
    params: dict[str, Any] = {s: bands[s] for s in index.bands}
    for s in index.constants:
        params[s] = float((constants or {}).get(s, defaults[s]))  # type: ignore[arg-type]
    with np.errstate(all="ignore"):
        out = eval(_compiled(index.formula), {"__builtins__": {}}, params)
    return np.asarray(out, dtype=np.float32)


class IndexBands(StrictModel):
    """A derived modality: spectral indices of one modality's bands (by their roles).

    In a pipeline's ``indices:`` or a bundle card's ``derived:``, keyed by the derived
    modality's name, e.g. ``indices: {vi: {source: image, indices: [ndvi, ndre]}}``.
    """

    source: str = Field("image", description="modality whose band roles feed the formulas")
    indices: list[str] = Field(min_length=1, description="index names: ndvi, ndre, savi, evi...")
    scale: float = Field(1.0, description="reflectance = value * scale + offset (e.g. 0.0001 "
                         "for Sentinel-2 L2A digital numbers)")  # fmt: skip
    offset: float = 0.0
    constants: dict[str, float] = Field(
        default_factory=dict, description="catalogue constants overridden, e.g. {L: 0.5}")

    @field_validator("indices")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        names = [n.strip().lower() for n in v]
        for n in names:
            try:
                spectral_index(n)
            except InputError as exc:
                raise ValueError(str(exc).removeprefix(f"index={n}: ")) from None
        if len(set(names)) != len(names):
            raise ValueError(f"indices {names} repeat an index; name each once")
        return names

    @model_validator(mode="after")
    def _constants(self) -> IndexBands:
        used = {c for n in self.indices for c in spectral_index(n).constants}
        extra = sorted(set(self.constants) - used)
        if extra:
            raise ValueError(f"constants {extra} are used by none of {self.indices} (they use "
                             f"{sorted(used) or 'none'}); remove them")  # fmt: skip
        return self


def check_roles(derived: Mapping[str, IndexBands], roles: Mapping[str, Sequence[str]]) -> None:
    """Every index's band roles exist in its source modality, else one line naming the role,
    the index and the ``roles:`` fix."""
    for name, spec in derived.items():
        if name in roles:
            raise InputError(f"derived modality {name!r} has the name of a raster modality; "
                             "call it something else (e.g. indices)")  # fmt: skip
        if spec.source not in roles:
            raise InputError(f"indices of {name!r} are computed from modality {spec.source!r}, "
                             f"which the scene does not have (it has {list(roles)}); set source:")
        have = [r.lower() for r in roles[spec.source]]
        for index in spec.indices:
            for role in spectral_index(index).roles():
                if role not in have and not any(ROLE_SYMBOLS.get(h) == ROLE_SYMBOLS[role]
                                                for h in have):  # fmt: skip
                    raise InputError(
                        f"index={index} needs a band with role {role!r}, but modality "
                        f"{spec.source!r} has roles [{', '.join(have)}]; name the band's role in "
                        f"the modality's roles: (catalog, or --roles), e.g. roles: "
                        f"[{', '.join([*have, role])}]"
                    )


@dataclass(frozen=True)
class IndexTransform:
    """Derived index modalities added to what a scene reads (picklable: names and roles).

    ``roles``: per source modality, the role of each band as read (in order).
    """

    derived: tuple[tuple[str, IndexBands], ...]
    roles: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def build(cls, derived: Mapping[str, IndexBands | Mapping[str, Any]],
              roles: Mapping[str, Sequence[str]]) -> IndexTransform:  # fmt: skip
        """Checked transform: every role an index needs is present."""
        specs = {n: s if isinstance(s, IndexBands) else IndexBands.model_validate(s)
                 for n, s in derived.items()}  # fmt: skip
        check_roles(specs, roles)
        return cls(tuple(specs.items()),
                   tuple((n, tuple(r.lower() for r in rs)) for n, rs in roles.items()))  # fmt: skip

    @property
    def band_counts(self) -> dict[str, int]:
        """Bands of each derived modality (one per index)."""
        return {n: len(s.indices) for n, s in self.derived}

    @property
    def names(self) -> dict[str, list[str]]:
        """Index names of each derived modality, in band order."""
        return {n: list(s.indices) for n, s in self.derived}

    def apply(self, arrays: Mapping[str, np.ndarray],
              valid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
        """``arrays`` plus each derived modality (float32 (indices, h, w)); pixels where an
        index is not finite are invalid and hold 0."""
        out = dict(arrays)
        valid = valid.copy()
        roles = dict(self.roles)
        for name, spec in self.derived:
            src = arrays[spec.source]
            by_symbol = {ROLE_SYMBOLS[r]: i for i, r in enumerate(roles[spec.source])
                         if r in ROLE_SYMBOLS}  # fmt: skip
            layers = np.empty((len(spec.indices), *src.shape[1:]), np.float32)
            for k, index_name in enumerate(spec.indices):
                index = spectral_index(index_name)
                bands = {s: _reflectance(src[by_symbol[s]], spec) for s in index.bands}
                value = evaluate(index, bands, spec.constants)
                finite = np.isfinite(value)
                valid &= finite
                value[~finite] = 0.0
                layers[k] = value
            out[name] = layers
        return out, valid


def _reflectance(band: np.ndarray, spec: IndexBands) -> np.ndarray:
    if spec.scale == 1.0 and spec.offset == 0.0:
        return band
    return band * np.float32(spec.scale) + np.float32(spec.offset)


__all__ = ["ALIASES", "ROLE_SYMBOLS", "IndexBands", "IndexTransform", "SpectralIndex",
           "check_roles", "evaluate", "spectral_index", "supported_indices"]  # fmt: skip
