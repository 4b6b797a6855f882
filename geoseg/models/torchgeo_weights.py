"""Pretrained sensor weights from torchgeo by name: ``torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO``.

A name is resolved through torchgeo's own API (``torchgeo.models.get_weight``: the enum's ``url``,
``meta["bands"]`` and ``transforms``); torchgeo is imported here only, and only when such a name
is used, so prediction never pays its import. The file is read from a local cache
(``GEOSEG_WEIGHTS_DIR``, default torch hub's ``checkpoints`` folder, named as torch hub names it:
the last part of the URL), with ``torch.load(weights_only=True)``: a file that needs code to
unpickle is refused. ``geoseg weights fetch NAME`` downloads it for users who are online.

The weight's bands (sensor band names such as ``SR_B3`` or ``B8A``) become roles (``red``,
``nir08``, ``swir16``...: :mod:`geoseg.models.torchgeo_bands`) and its ``transforms`` are folded
into one per-band ``(x - mean) / std`` (:func:`fold_normalisation`);
:mod:`geoseg.models.torchgeo_encoders` loads a weight into an encoder, its first convolution
rebuilt for the scene's bands, and puts the normalisation into the bundle card.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from geoseg.errors import BundleError, ModelError
from geoseg.models.torchgeo_bands import band_roles

PREFIX = "torchgeo:"
#: environment variable naming the weights cache (default: torch hub's checkpoints folder)
CACHE_ENV = "GEOSEG_WEIGHTS_DIR"
#: torchgeo weight enums whose encoders geoseg's ResNet encoders take (timm/torchvision layout)
RESNET_ENUMS = ("ResNet18_Weights", "ResNet50_Weights", "ResNet152_Weights")

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
