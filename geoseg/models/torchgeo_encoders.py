"""torchgeo weights into geoseg's encoders, bands matched by role.

The first convolution is rebuilt for the scene's band order: a role the weight needs and the
scene lacks is refused; a scene band the weight does not know gets a new first-layer channel
initialised to **zero**, so the network starts out computing exactly the pretrained features and
that band's filters learn from the first step. The weight's normalisation (folded into one
per-band ``(x - mean) / std`` by :func:`geoseg.models.torchgeo_weights.fold_normalisation`) goes
into the bundle card for the matched bands (:func:`apply_normalisation`), so prediction scales
inputs exactly as the pretraining did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geoseg.errors import BundleError, InputError, ModelError
from geoseg.models.torchgeo_bands import canonical_role
from geoseg.models.torchgeo_weights import TorchgeoWeight, load_state, resolve


def channel_map(weight: TorchgeoWeight, roles: Sequence[str], what: str) -> list[int | None]:
    """For each input band (by role), the weight band it takes, or None for a new band.

    Raises:
        InputError: the input lacks a role the weight needs, or repeats one.
    """
    mine = [canonical_role(r) for r in roles]
    need = [canonical_role(r) for r in weight.roles]
    missing = [r for r in need if r not in mine]
    if missing:
        raise InputError(f"{what}: {weight.name} needs band roles {missing}, which the input "
                         f"lacks (its bands are {list(roles)}); name the bands' roles (catalog "
                         "roles:, --roles) or choose a weight of the bands you have")  # fmt: skip
    repeated = sorted({r for r in mine if r in need and mine.count(r) > 1})
    if repeated:
        raise InputError(f"{what}: band roles {repeated} appear more than once in {list(roles)}; "
                         "each role may name one band")  # fmt: skip
    return [need.index(r) if r in need else None for r in mine]


def _first_conv(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                n_weight: int, n_own: int) -> str:  # fmt: skip
    for key, value in state.items():
        if value.ndim == 4 and value.shape[1] == n_weight and key in own and own[key].ndim == 4 \
                and own[key].shape[1] == n_own and own[key].shape[0] == value.shape[0]:
            return key
    raise BundleError("the weights have no first convolution over their bands; not a ResNet "
                      "encoder state dict")


def load_into(encoder: nn.Module, weight: TorchgeoWeight, state: Mapping[str, torch.Tensor],
              roles: Sequence[str], what: str) -> list[int | None]:  # fmt: skip
    """Load ``state`` into ``encoder``, its first convolution rebuilt for ``roles``.

    Returns the channel map (see :func:`channel_map`). Every encoder tensor must be in the
    state with its shape (the classifier ``fc`` of the pretraining is dropped).
    """
    mapping = channel_map(weight, roles, what)
    own = encoder.state_dict()
    first = _first_conv(state, own, len(weight.bands), len(roles))
    loaded = {}
    for key, target in own.items():
        if key not in state:
            raise BundleError(f"{weight.path}: no tensor {key!r} for the {weight.model} encoder "
                              f"of {what}; the file is not {weight.name}")  # fmt: skip
        value = state[key]
        if key == first:
            new = torch.zeros_like(target)
            for i, j in enumerate(mapping):
                if j is not None:
                    new[:, i] = value[:, j]
            value = new
        elif value.shape != target.shape:
            raise BundleError(f"{weight.path}: tensor {key!r} has shape {tuple(value.shape)}, the "
                              f"encoder needs {tuple(target.shape)}; the file is not "
                              f"{weight.name}")  # fmt: skip
        loaded[key] = value.to(target.dtype)
    # smp encoders override load_state_dict and return None: call the base implementation
    nn.Module.load_state_dict(encoder, loaded, strict=True)
    return mapping


def load_pretrained(model: Any, names: Mapping[str, str],
                    band_roles: Mapping[str, Sequence[str]] | None) -> list[dict[str, Any]]:  # fmt: skip
    """Load torchgeo weights into the encoders of ``model`` (a SegModel).

    Args:
        names: argument name (``encoder_weights``, ``dem_encoder_weights``) -> weight name.
        band_roles: per modality, the role of each band, in the model's band order.

    Returns:
        One record per weight: provenance, the modalities it feeds, the bands given new
        channels, and per modality the normalisation of each band (None where the weight
        knows no such band).
    """
    targets = {t[0]: t[1:] for t in model.pretrained_targets()}
    records = []
    for arg, name in names.items():
        arch = getattr(model, "arch_name", type(model).__name__)
        if arg not in targets:
            raise ModelError(f"{arg}={name!r}: {arch} has no ResNet encoder for torchgeo weights; "
                             "use a local .safetensors file or leave it out")  # fmt: skip
        encoder, encoder_name, modalities = targets[arg]
        weight = resolve(name)
        if encoder_name != weight.model:
            raise ModelError(f"{arg}={name!r} is a {weight.model} weight but {arch}'s encoder is "
                             f"{encoder_name!r}; set encoder: {weight.model}")  # fmt: skip
        roles = _roles(model, modalities, band_roles, f"{arg}={name!r}")
        what = f"modality {' + '.join(modalities)}"
        mapping = load_into(encoder, weight, load_state(weight), roles, what)
        records.append({**weight.record(), "argument": arg, "modalities": list(modalities),
                        "new_bands": [r for r, j in zip(roles, mapping, strict=True) if j is None],
                        "normalisation": _normalisation(model, modalities, weight, mapping)})  # fmt: skip
    return records


def _roles(model: Any, modalities: Sequence[str], band_roles: Mapping[str, Sequence[str]] | None,
           what: str) -> list[str]:  # fmt: skip
    """The roles of the bands of ``modalities``, in the model's band order."""
    roles: list[str] = []
    for m in modalities:
        given = (band_roles or {}).get(m)
        if given is None or len(given) != model.modalities[m]:
            raise InputError(f"{what}: the band roles of modality {m!r} are needed to "
                             "match the weight's bands; give them (catalog roles:, "
                             "geoseg model init --roles)")  # fmt: skip
        roles += [str(r) for r in given]
    return roles


def _normalisation(model: Any, modalities: Sequence[str], weight: TorchgeoWeight,
                   mapping: Sequence[int | None]) -> dict[str, list[list[float] | None]]:  # fmt: skip
    """Per modality, each band's pretraining ``[mean, std]`` (None for a band the weight lacks)."""
    norm: dict[str, list[list[float] | None]] = {}
    i = 0
    for m in modalities:
        per = []
        for _ in range(model.modalities[m]):
            j = mapping[i]
            per.append(None if j is None else [weight.mean[j], weight.std[j]])
            i += 1
        norm[m] = per
    return norm


def apply_normalisation(records: Sequence[Mapping[str, Any]], modality: str,
                        mean: Sequence[float], std: Sequence[float]
                        ) -> tuple[list[float], list[float], str | None]:  # fmt: skip
    """``mean``/``std`` of a modality with the bands the pretrained weights know replaced by
    their pretraining normalisation; also the weight's name when one applied."""
    mean, std = list(mean), list(std)
    used = None
    for rec in records:
        for i, pair in enumerate(rec.get("normalisation", {}).get(modality, [])):
            if pair is not None:
                mean[i], std[i] = float(pair[0]), float(pair[1])
                used = rec["name"]
    return mean, std, used
