"""Training checkpoints that never need unpickling: tensors in safetensors, the rest in JSON.

A checkpoint folder holds ``state.safetensors`` (the full model state including training-only
parts such as momentum encoders, queues and loss step counters; every optimiser tensor; the
torch RNG state) and ``state.json`` (step, history, best score, optimiser hyper-parameters and
scalar state, AMP scaler). It is written to a temporary folder and renamed, so a kill leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geoseg._files import replace_dir, temp_sibling
from geoseg.errors import InputError

TENSORS = "state.safetensors"
META = "state.json"


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict[str, Any], scaler: Any = None) -> Path:  # fmt: skip
    """Write a checkpoint folder atomically (temp folder, then rename)."""
    path = Path(path)
    tmp = temp_sibling(path, "")
    tmp.mkdir(parents=True)
    try:
        _write_state(tmp, model, optimizer, meta, scaler)
        return replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_state(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 meta: dict[str, Any], scaler: Any) -> None:  # fmt: skip
    """``state.safetensors`` (model, optimiser tensors, torch RNG) and ``state.json``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(folder / TENSORS))
    doc = {**meta, "optimizer": opt_meta,
           "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    (folder / META).write_text(json.dumps(doc, indent=1, default=float))


def has_checkpoint(path: str | Path) -> bool:
    """True when ``path`` holds both files of a checkpoint."""
    return (Path(path) / TENSORS).is_file() and (Path(path) / META).is_file()


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any = None) -> dict[str, Any]:  # fmt: skip
    """Restore model, optimiser, RNG and scaler in place; return the JSON metadata."""
    path = Path(path)
    try:
        tensors = load_file(str(path / TENSORS), device="cpu")
        meta = json.loads((path / META).read_text())
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path}: corrupt training checkpoint ({exc}); delete the folder to "
                         "start over, or set resume: false") from None  # fmt: skip
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: the checkpoint does not match the configured model ({first}); "
                         "use another out: folder or set resume: false") from None  # fmt: skip
    device = next(model.parameters()).device
    opt = meta["optimizer"]
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value.to(device)
    for pid, entries in opt["scalars"].items():
        opt_state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return meta
