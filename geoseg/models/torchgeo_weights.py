"""Pretrained sensor weights from torchgeo by name: ``torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO``.

A name is resolved through torchgeo's own API (``torchgeo.models.get_weight``: the enum's ``url``,
``meta["bands"]`` and ``transforms``); torchgeo is imported here only, and only when such a name
is used, so prediction never pays its import. The file is read from a local cache
(``GEOSEG_WEIGHTS_DIR``, default torch hub's ``checkpoints`` folder, named as torch hub names it:
the last part of the URL), with ``torch.load(weights_only=True)``: a file that needs code to
unpickle is refused. ``geoseg weights fetch NAME`` downloads it for users who are online.

Bands are matched by role: the weight's bands (sensor band names such as ``SR_B3`` or ``B8A``)
become roles (``red``, ``nir08``, ``swir16``...), and the first convolution is rebuilt for the
scene's band order. A role the weight needs and the scene lacks is refused; a scene band the
weight does not know gets a new first-layer channel initialised to **zero**, so the network
starts out computing exactly the pretrained features and that band's filters learn from the
first step. The weight's normalisation (its ``transforms``, folded into one per-band
``(x - mean) / std``) goes into the bundle card for the matched bands, so prediction scales
inputs exactly as the pretraining did.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from geoseg.errors import BundleError, InputError, ModelError

PREFIX = "torchgeo:"
#: environment variable naming the weights cache (default: torch hub's checkpoints folder)
CACHE_ENV = "GEOSEG_WEIGHTS_DIR"
#: torchgeo weight enums whose encoders geoseg's ResNet encoders take (timm/torchvision layout)
RESNET_ENUMS = ("ResNet18_Weights", "ResNet50_Weights", "ResNet152_Weights")

# ---------------------------------------------------------------- band names -> roles
# Roles are STAC ``eo:common_name`` values (what catalogs and STAC items carry).
_S2 = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge071",
       "B6": "rededge075", "B7": "rededge078", "B8": "nir", "B8A": "nir08", "B9": "nir09",
       "B10": "cirrus", "B11": "swir16", "B12": "swir22", "NDVI": "ndvi"}  # fmt: skip
_TM = {"B1": "blue", "B2": "green", "B3": "red", "B4": "nir", "B5": "swir16", "B6": "lwir",
       "B7": "swir22"}  # fmt: skip
_ETM = {**_TM, "B6_VCID_1": "lwir_low_gain", "B6_VCID_2": "lwir_high_gain", "B8": "pan"}
_OLI = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir16",
        "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12"}  # fmt: skip
_S1 = {"VV": "vv", "VH": "vh"}
#: enum member prefix -> band table (Landsat band numbers differ between sensors)
SENSORS = (("LANDSAT_TM", _TM), ("LANDSAT_ETM", _ETM), ("LANDSAT_OLI", _OLI),
           ("SENTINEL2", _S2), ("SENTINEL1", _S1))  # fmt: skip
#: other spellings of roles accepted in scenes (catalog ``roles:``, band descriptions, --roles)
ROLE_ALIASES = {
    "r": "red", "g": "green", "b": "blue", "ir": "nir", "nir1": "nir",
    "swir1": "swir16", "swir2": "swir22", "rededge1": "rededge071", "rededge2": "rededge075",
    "rededge3": "rededge078", "rededge4": "nir08", "nir_narrow": "nir08", "narrow_nir": "nir08",
    "water_vapour": "nir09", "water_vapor": "nir09", "aerosol": "coastal",
    "coastal_aerosol": "coastal", "panchromatic": "pan", "thermal": "lwir", "tir": "lwir",
}  # fmt: skip

#: licences from torchgeo's weight tables (docs/api/weights/*.csv) by source repository, for
#: weights whose ``meta`` carries none
LICENCES = {
    "github.com/torchgeo/torchgeo": "CC0-1.0",  # SSL4EO-L
    "github.com/zhu-xlab/SSL4EO-S12": "CC-BY-4.0",
    "github.com/zhu-xlab/softcon": "CC-BY-4.0",
    "github.com/zhu-xlab/DeCUR": "Apache-2.0",
    "github.com/ServiceNow/seasonal-contrast": "Apache-2.0",
    "github.com/PlekhanovaElena/ssl4eco": "MIT",
    "github.com/allenai/satlaspretrain_models": "ODC-BY",
    "github.com/allenai/satlas": "ODC-BY",
    "github.com/DarthReca/closp": "OpenRAIL",
}


def canonical_role(role: str) -> str:
    """A band role in its canonical spelling (lower case, aliases resolved)."""
    key = str(role).strip().lower().replace("-", "_").replace(" ", "_")
    return ROLE_ALIASES.get(key, key)


def is_torchgeo(name: object) -> bool:
    """True for ``torchgeo:...`` weight names."""
    return isinstance(name, str) and name.startswith(PREFIX)


def cache_dir() -> Path:
    """The weights cache: ``$GEOSEG_WEIGHTS_DIR``, else torch hub's ``checkpoints`` folder."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class TorchgeoWeight:
    """A torchgeo weight, resolved: where its file comes from and what it expects."""

    name: str  #: ``torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO``
    url: str
    model: str  #: timm model name, e.g. ``resnet50``
    bands: tuple[str, ...]  #: the weight's input bands, as torchgeo names them
    roles: tuple[str, ...]  #: the same bands as roles
    mean: tuple[float, ...]  #: per weight band, the transforms folded into (x - mean) / std
    std: tuple[float, ...]
    licence: str
    publication: str | None = None
    repo: str | None = None
    dataset: str | None = None

    @property
    def filename(self) -> str:
        """The file name torch hub gives the download (last part of the URL)."""
        return os.path.basename(urlparse(self.url).path)

    @property
    def path(self) -> Path:
        """Where the file is looked for."""
        return cache_dir() / self.filename

    def record(self) -> dict[str, Any]:
        """Provenance for a bundle card."""
        from torchgeo import __version__ as tg_version

        return {"name": self.name, "url": self.url, "licence": self.licence,
                "source": f"torchgeo {tg_version}", "publication": self.publication,
                "bands": list(self.bands), "roles": list(self.roles)}  # fmt: skip


def _enum_name(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


@functools.lru_cache(maxsize=64)
def resolve(name: str) -> TorchgeoWeight:
    """Resolve a ``torchgeo:Enum.MEMBER`` name through torchgeo's ``get_weight``.

    Raises:
        ModelError: torchgeo has no such weight, or it is not a ResNet encoder weight.
    """
    from torchgeo.models import get_weight

    key = _enum_name(name)
    try:
        weight = get_weight(key)
    except ValueError:
        weight = _member(key)  # aliases (SENTINEL1_GRD_MOCO = SENTINEL1_ALL_MOCO) are not listed
    if weight is None:
        raise ModelError(f"encoder_weights {name!r}: torchgeo has no weight {key!r}; "
                         "`geoseg weights list` shows the names geoseg loads, e.g. "
                         "torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO")  # fmt: skip
    enum = type(weight).__name__
    if enum not in RESNET_ENUMS:
        raise ModelError(f"encoder_weights {name!r}: geoseg loads torchgeo's ResNet encoder "
                         f"weights ({', '.join(RESNET_ENUMS)}), not {enum}; pick one of "
                         "`geoseg weights list`")  # fmt: skip
    meta = dict(weight.meta)
    member = weight.name
    bands = tuple(str(b) for b in meta.get("bands") or ())
    roles = band_roles(member, bands, int(meta.get("in_chans", len(bands) or 3)), name)
    if not bands:
        bands = tuple(r.upper() for r in roles)
    mean, std = fold_normalisation(weight.transforms, len(bands), name)
    repo = meta.get("repo")
    licence = meta.get("license") or _licence(repo)
    return TorchgeoWeight(name=PREFIX + f"{enum}.{member}", url=weight.url,
                          model=str(meta.get("model", "")), bands=bands, roles=roles,
                          mean=mean, std=std, licence=licence,
                          publication=meta.get("publication"), repo=repo,
                          dataset=meta.get("dataset"))  # fmt: skip


def _member(key: str) -> Any:
    import torchgeo.models as tgm

    enum, _, member = key.partition(".")
    cls = getattr(tgm, enum, None) if enum.endswith("_Weights") else None
    try:
        return cls[member] if cls is not None else None
    except KeyError:
        return None


def _licence(repo: str | None) -> str:
    if not repo:
        return "unspecified"
    key = re.sub(r"^https?://", "", repo).rstrip("/")
    return LICENCES.get(key, f"unspecified (see {repo})")


def _sensor_key(band: str) -> str:
    b = band.upper().removeprefix("SR_")
    return re.sub(r"^B0(\d)", r"B\1", b)


def band_roles(member: str, bands: Sequence[str], in_chans: int, name: str = "") -> tuple[str, ...]:
    """Roles of a weight's bands, from the sensor its enum member names (Landsat band numbers
    differ between TM, ETM+ and OLI); weights without band names (fMoW RGB) are red, green, blue."""
    if not bands:
        if in_chans == 3:
            return ("red", "green", "blue")
        raise ModelError(f"encoder_weights {name or member!r}: torchgeo gives no band names for "
                         f"this {in_chans}-band weight; geoseg cannot map it to band roles")
    table = next((t for prefix, t in SENSORS if member.startswith(prefix)), None)
    if table is None:  # RGB products named by colour (Satlas R/G/B, NAIP)
        table = {"R": "red", "G": "green", "B": "blue", "NIR": "nir", "IR": "nir"}
    roles = []
    for band in bands:
        role = table.get(_sensor_key(band))
        if role is None:
            raise ModelError(f"encoder_weights {name or member!r}: band {band!r} has no known "
                             "role; geoseg cannot map this weight's bands")  # fmt: skip
        roles.append(role)
    return tuple(roles)


def _per_band(values: Any, n: int, what: str) -> list[float]:
    vals = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise ModelError(f"{what}: a normalisation of {len(vals)} values for {n} bands")
    return vals


def fold_normalisation(transforms: Any, n: int, name: str = ""
                       ) -> tuple[tuple[float, ...], tuple[float, ...]]:  # fmt: skip
    """The weight's transforms as one per-band ``(x - mean) / std``.

    Chained ``Normalize`` steps fold: ``((x - a)/s - b)/t = (x - (a + b·s))/(s·t)``. Resizes and
    crops are ignored (geoseg predicts on tiles of the bundle's size); any other transform cannot
    be written into a card and is refused.
    """
    mean, std = [0.0] * n, [1.0] * n
    steps = list(transforms) if isinstance(transforms, nn.Sequential) else [transforms]
    for step in steps:
        kind = type(step).__name__
        if kind == "Normalize":
            b = _per_band(step.mean, n, name)
            t = _per_band(step.std, n, name)
            mean = [a + bb * s for a, bb, s in zip(mean, b, std, strict=True)]
            std = [s * tt for s, tt in zip(std, t, strict=True)]
        elif kind not in ("Resize", "CenterCrop", "Identity") and step is not None:
            raise ModelError(f"encoder_weights {name!r}: its transform {kind} is not a per-band "
                             "normalisation; geoseg cannot reproduce it in a bundle card")
    return tuple(mean), tuple(std)


def load_state(weight: TorchgeoWeight) -> dict[str, torch.Tensor]:
    """The weight's state dict from the cache, loaded with ``weights_only=True``.

    Raises:
        BundleError: the file is absent (naming where to place it), needs code to unpickle,
            or is not a state dict.
    """
    path = weight.path
    if not path.is_file():
        raise BundleError(f"{path}: weights for {weight.name} are not in the cache; download "
                          f"{weight.url} to that file, or run `geoseg weights fetch "
                          f"{weight.name}` where there is network ({CACHE_ENV} sets the "
                          "folder)")  # fmt: skip
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise BundleError(f"{path}: refused, the file needs code to unpickle{what}; geoseg loads "
                          "plain tensor state dicts only (replace the file with the one from "
                          f"{weight.url})") from None  # fmt: skip
    except (RuntimeError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: unreadable weights ({exc}); delete it and fetch it again "
                          f"(`geoseg weights fetch {weight.name}`)") from None  # fmt: skip
    if isinstance(state, Mapping) and "state_dict" in state and len(state) <= 4:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{path}: not a state dict of tensors; replace it with the file from "
                          f"{weight.url}")  # fmt: skip
    return dict(state)


def fetch(name: str, progress: bool = True) -> Path:
    """Download a weight into the cache (an atomic rename; the SHA-256 prefix in torch hub's
    ``name-<hash>.pth`` file names is checked). Needs network."""
    from geoseg._files import atomic_path

    weight = resolve(name)
    path = weight.path
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    found = re.search(r"-([a-f0-9]{8,})\.", weight.filename)
    try:
        with atomic_path(path) as tmp:
            torch.hub.download_url_to_file(weight.url, str(tmp), found.group(1) if found else None,
                                           progress=progress)  # fmt: skip
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        raise BundleError(f"{path}: download of {weight.url} failed ({exc}); check the network, "
                          "or download the file yourself and place it there") from None
    return path


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
        roles: list[str] = []
        for m in modalities:
            given = (band_roles or {}).get(m)
            if given is None or len(given) != model.modalities[m]:
                raise InputError(f"{arg}={name!r}: the band roles of modality {m!r} are needed to "
                                 "match the weight's bands; give them (catalog roles:, "
                                 "geoseg model init --roles)")  # fmt: skip
            roles += [str(r) for r in given]
        what = f"modality {' + '.join(modalities)}"
        mapping = load_into(encoder, weight, load_state(weight), roles, what)
        norm: dict[str, list[list[float] | None]] = {}
        i = 0
        for m in modalities:
            per = []
            for _ in range(model.modalities[m]):
                j = mapping[i]
                per.append(None if j is None else [weight.mean[j], weight.std[j]])
                i += 1
            norm[m] = per
        records.append({**weight.record(), "argument": arg, "modalities": list(modalities),
                        "new_bands": [r for r, j in zip(roles, mapping, strict=True) if j is None],
                        "normalisation": norm})  # fmt: skip
    return records


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


def list_weights() -> list[TorchgeoWeight]:
    """Every torchgeo weight geoseg can load (the ResNet encoder enums), resolved."""
    import torchgeo.models as tgm

    out = []
    for enum in RESNET_ENUMS:
        for member in getattr(tgm, enum):
            try:
                out.append(resolve(f"{PREFIX}{enum}.{member.name}"))
            except ModelError:
                continue  # bands geoseg cannot map
    return out
