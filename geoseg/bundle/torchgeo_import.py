"""torchgeo checkpoints -> geoseg bundles (``geoseg model import CKPT --from torchgeo -o BUNDLE``).

Two kinds of file are taken:

- a Lightning checkpoint of torchgeo's ``SemanticSegmentationTask`` (``.ckpt``) with
  ``model: unet`` or ``deeplabv3+`` and ``task: multiclass``: the task's smp model becomes
  geoseg's ``unet`` / ``deeplabv3plus`` (the same smp class with the same arguments);
- a state dict of torchgeo's ``FarSeg`` (``torch.save(model.state_dict())``): geoseg's ``farseg``
  with ``classifier_kernel: 3`` (parameter names mapped, the computation is the same).

Files are read with ``torch.load(weights_only=True)`` and an allow-list of harmless classes
(``ALLOWED``: ``pathlib`` paths, which Lightning callbacks may store): a checkpoint that needs
any other code to unpickle is refused, naming what it needs (e.g. an object in the
hyper-parameters). Neither torchgeo nor Lightning is imported to read them.

torchgeo tasks do not store how their inputs were scaled (the data module does): the card
takes ``mean``/``std`` as given, by default 0 and 255, the scaling of torchgeo's
``BaseDataModule``.
"""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geoseg.bundle.bundle import save_bundle
from geoseg.bundle.card import ModalityCard, ModelCard
from geoseg.errors import BundleError
from geoseg.models import create
from geoseg.models.torchgeo_convert import (
    TASK_MODELS,
    farseg_arguments,
    farseg_state,
    is_farseg_state,
    task_state,
)
from geoseg.scene.classes import PALETTE, ClassInfo

#: the classes a checkpoint may name besides plain containers and tensors (torch's weights-only
#: unpickler cannot fill dict subclasses such as Lightning's AttributeDict: those are refused)
ALLOWED = {
    "pathlib.PosixPath": ("pathlib", "PosixPath"),
    "pathlib.WindowsPath": ("pathlib", "WindowsPath"),
}


def _refuse(path: Path, what: str) -> BundleError:
    return BundleError(f"{path}: refused, unpickling it needs {what}, which is not on geoseg's "
                       "allow-list (it could run arbitrary code); save the task's state_dict and "
                       "hyper_parameters as plain tensors and values")  # fmt: skip


def load_checkpoint(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with geoseg's allow-list (``ALLOWED``); code is refused.
    Allowed classes are imported only when the checkpoint names them.

    Raises:
        BundleError: the file is missing, unreadable, or needs code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: checkpoint not found; check the path")
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError):
        needed = []  # not the zip format: torch.load below decides
    bad = [n for n in needed if n not in ALLOWED]
    if bad:
        raise _refuse(path, bad[0])
    allowed = [getattr(importlib.import_module(ALLOWED[n][0]), ALLOWED[n][1]) for n in needed]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise _refuse(path, found.group(1) if found else "code") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None


def _task(ckpt: Mapping[str, Any], path: Path
          ) -> tuple[str, dict[str, Any], int, int, dict[str, torch.Tensor], dict[str, Any]]:  # fmt: skip
    hp = ckpt.get("hyper_parameters") or {}
    model = hp.get("model", "unet")
    if model not in TASK_MODELS:
        raise BundleError(f"{path}: the task's model is {model!r}; geoseg imports "
                          f"{sorted(TASK_MODELS)} (and torchgeo FarSeg state dicts)")  # fmt: skip
    if hp.get("task", "multiclass") != "multiclass":
        raise BundleError(f"{path}: a {hp['task']!r} task; geoseg imports multiclass "
                          "segmentation (softmax over classes) only")  # fmt: skip
    state = task_state(ckpt["state_dict"])
    if not state:
        raise BundleError(f"{path}: the checkpoint's state_dict has no model.* tensors; not a "
                          "torchgeo SemanticSegmentationTask checkpoint")  # fmt: skip
    bands = int(hp.get("in_channels", 3))
    classes = int(hp.get("num_classes") or 1)
    info = {"task": "SemanticSegmentationTask", "model": model, "backbone": hp.get("backbone"),
            "lightning": ckpt.get("pytorch-lightning_version"), "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step")}  # fmt: skip
    args = {"encoder": str(hp.get("backbone", "resnet50"))}
    return TASK_MODELS[model], args, bands, classes, state, info


def _per_band(values: Sequence[float] | None, n: int, default: float, what: str) -> list[float]:
    if values is None or len(values) == 0:
        return [default] * n
    if len(values) == 1:
        return [float(values[0])] * n
    if len(values) != n:
        raise BundleError(f"{what} has {len(values)} values for {n} bands; give one, or one per band")
    return [float(v) for v in values]


def import_torchgeo(checkpoint: str | Path, output: str | Path, *,
                    roles: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    tile: int = 512) -> Path:  # fmt: skip
    """Turn a torchgeo checkpoint into a geoseg bundle (see the module docstring).

    Args:
        roles: band roles of the image (default ``b1``, ``b2``...).
        class_names: names of the output classes in order (default ``class_0``...).
        mean, std: per-band normalisation the task was trained with (one value or one per
            band; default 0 and 255, torchgeo's ``BaseDataModule``).
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        arch, args, bands, k, state, info = _task(ckpt, path)
    elif isinstance(ckpt, Mapping) and is_farseg_state(ckpt):
        args, bands, k = farseg_arguments(ckpt)
        arch, state = "farseg", farseg_state(ckpt)
        info = {"model": "FarSeg", "backbone": args["encoder"]}
    else:
        raise BundleError(f"{path}: neither a torchgeo SemanticSegmentationTask checkpoint nor a "
                          "torchgeo FarSeg state dict")  # fmt: skip
    model = create(arch, {"image": bands}, k, load_weights=False, **args)
    own = model.inference_state_dict()
    missing = [key for key in own if key not in state]
    bad = [key for key in own if key in state and state[key].shape != own[key].shape]
    if missing or bad:
        raise BundleError(f"{path}: its tensors do not fit geoseg's {arch} "
                          f"({len(missing)} missing, {len(bad)} of another shape, e.g. "
                          f"{(missing or bad)[0]!r}); the checkpoint's smp or torchgeo version "
                          "may build the model differently")  # fmt: skip
    model.load_state_dict({key: state[key] for key in own}, strict=False)
    names = list(class_names) if class_names else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise BundleError(f"class names: {len(names)} given, the model has {k} classes")
    band_names = list(roles) if roles else [f"b{i + 1}" for i in range(bands)]
    if len(band_names) != bands:
        raise BundleError(f"roles: {len(band_names)} given, the model takes {bands} bands")
    card = ModelCard(
        architecture=arch, arguments=model.args.model_dump(mode="json"),
        modalities={"image": ModalityCard(
            bands=band_names, mean=_per_band(mean, bands, 0.0, "mean"),
            std=_per_band(std, bands, 255.0, "std"))},
        classes=[ClassInfo(id=i, name=n, color=PALETTE[i % len(PALETTE)])
                 for i, n in enumerate(names)],
        tile_size=tile, halo=model.halo, trained=True,
        training={"imported_from": {"file": path.name, "source": "torchgeo", **info}},
        description=f"{arch} imported from torchgeo checkpoint {path.name}",
    )  # fmt: skip
    return save_bundle(model, card, output)
