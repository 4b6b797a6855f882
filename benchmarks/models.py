"""Model benchmark: parameters, forward throughput, peak memory, effective receptive field.

Usage: python benchmarks/models.py [--size 512] [--batch 4] [--threads 2] [--repeats 3]
                                   [--device cpu|cuda] [--only NAME ...]
Prints a Markdown table and writes benchmarks/results/models.json (models_cuda.json on GPU).
Every configuration runs in a fresh subprocess so its peak memory is its own.

* params: parameters used at inference; "train extra" are the training-only ones (HPCL-Net's
  projector and momentum copy), which inference bundles leave out.
* Mpx/s: batch·size² / median forward time (eval, inference_mode; autocast fp16 on CUDA).
* peak MiB: CPU: peak RSS minus RSS before the model was built; CUDA: max allocated memory.
* ERF r50 / r90: half-width (px) of the square around the centre that holds 50 % / 90 % of
  |∂ logits(centre) / ∂ input| for a random-initialised model on a size² input (effective
  receptive field, Luo et al. 2016), BN statistics calibrated on random inputs. Trained
  networks usually have larger ERFs; image pooling (ASPP), FarSeg's scene vector and TIMF's
  global attention spread a share of the mass uniformly over the whole tile, which inflates r90.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (label, architecture, arguments, classes): classes as in each paper's main benchmark
CONFIGS: list[tuple[str, str, dict[str, Any], int]] = [
    ("tinycnn", "tinycnn", {}, 6),
    ("unet / resnet18", "unet", {"encoder": "resnet18"}, 6),
    ("unet / resnet50", "unet", {"encoder": "resnet50"}, 6),
    ("deeplabv3plus / resnet18", "deeplabv3plus", {"encoder": "resnet18"}, 6),
    ("deeplabv3plus / resnet50", "deeplabv3plus", {"encoder": "resnet50"}, 6),
    ("deeptrinet / resnet18", "deeptrinet", {"encoder": "resnet18"}, 5),
    ("deeptrinet / resnet34", "deeptrinet", {"encoder": "resnet34"}, 5),
    ("deeptrinet / resnet50", "deeptrinet", {"encoder": "resnet50"}, 5),
    ("farseg / resnet18", "farseg", {"encoder": "resnet18"}, 16),
    ("farseg / resnet50", "farseg", {"encoder": "resnet50"}, 16),
    ("hpclnet / resnet18", "hpclnet", {"encoder": "resnet18"}, 2),
    ("hpclnet / resnet50", "hpclnet", {"encoder": "resnet50"}, 2),
    ("timf / mit-b0 dims", "timf", {}, 7),
    ("timf / mit-b1 dims", "timf", {"embed_dims": (64, 128, 320, 512)}, 7),
]
EXTRA_MODALITY = {"hpclnet": {"dem": 1}, "timf": {"height": 1}}


def child(arch: str, kwargs: dict, classes: int, a: argparse.Namespace) -> dict:
    """Measure one configuration in this process."""
    import psutil
    import torch

    from geoseg.models import create

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    mods = {"image": 3, **EXTRA_MODALITY.get(arch, {})}
    try:
        with torch.device("meta"):  # count parameters without allocating them
            counted = create(arch, mods, classes, **kwargs)
    except RuntimeError:  # some layers cannot be built on meta (MiT calls .item())
        counted = create(arch, mods, classes, **kwargs)
    if hasattr(counted, "enable_training_parts"):
        counted.enable_training_parts()
    named = list(counted.named_parameters())
    n_params = sum(p.numel() for n, p in named if not n.startswith(counted.training_only))
    n_train = sum(p.numel() for _, p in named) - n_params
    del counted, named
    rss0 = psutil.Process().memory_info().rss
    model = create(arch, mods, classes, **kwargs).eval().to(device)  # as a loaded bundle runs
    x = {m: torch.randn(a.batch, n, a.size, a.size, device=device) for m, n in mods.items()}
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else _null()

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), amp:
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()  # warm-up (allocator, cudnn autotune, lazy init)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(a.repeats)]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0) / 2**20
    t = statistics.median(times)
    return {
        "params": n_params,
        "train_extra_params": n_train,
        "forward_s": t,
        "mpx_s": a.batch * a.size**2 / t / 1e6,
        "peak_mib": peak,
        "erf_r50_r90": erf_radii(model, mods, a.size, device) if a.erf else None,
        "halo": model.halo,
    }


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def erf_radii(
    model: Any, mods: dict[str, int], size: int, device: Any, masses: tuple[float, ...] = (0.5, 0.9)
) -> list[int]:
    """Half-widths of the centred squares holding ``masses`` of the input-gradient magnitude.

    BN running statistics are first calibrated on random inputs (a random init's (0, 1) would
    not normalise and deep ResNets saturate); the gradient is then taken in eval mode, so no
    batch statistic couples distant pixels.
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            half = size // 2
            model({m: torch.randn(2, n, half, half, device=device) for m, n in mods.items()})
    model.eval()
    x = {m: torch.randn(1, n, size, size, device=device) for m, n in mods.items()}
    for v in x.values():
        v.requires_grad_(True)
    out = model(x)
    c = size // 2
    out[0, :, c, c].sum().backward()
    g = sum(v.grad[0].abs().sum(dim=0) for v in x.values()).double()
    # mass inside the centred square of half-width r, for every r
    inside = torch.stack([g[c - r : c + r + 1, c - r : c + r + 1].sum() for r in range(c + 1)])
    return [int((inside < m * g.sum()).sum()) for m in masses]


def run_child(cfg: tuple[str, str, dict, int], a: argparse.Namespace) -> dict:
    label, arch, kwargs, classes = cfg
    cmd = [sys.executable, __file__, "--child", json.dumps([arch, kwargs, classes]),
           "--size", str(a.size), "--batch", str(a.batch), "--threads", str(a.threads),
           "--repeats", str(a.repeats), "--device", a.device]  # fmt: skip
    cmd += [] if a.erf else ["--no-erf"]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    return {"label": label, "arch": arch, "arguments": kwargs, "classes": classes,
            **json.loads(proc.stdout.strip().splitlines()[-1])}  # fmt: skip


def table(rows: list[dict], device: str) -> str:
    unit = "peak GPU MiB" if device == "cuda" else "peak RSS MiB"
    lines = [
        f"| model / backbone | classes | params (M) | train extra (M) | Mpx/s | {unit} | "
        "ERF r50 / r90 (px) | halo |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        erf = "" if r["erf_r50_r90"] is None else " / ".join(map(str, r["erf_r50_r90"]))
        lines.append(
            f"| {r['label']} | {r['classes']} | {r['params'] / 1e6:.2f} | "
            f"{r['train_extra_params'] / 1e6:.2f} | {r['mpx_s']:.3f} | {r['peak_mib']:.0f} | "
            f"{erf} | {r['halo']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-erf", dest="erf", action="store_false", help="skip the ERF measure")
    ap.add_argument("--only", nargs="*", help="labels or architectures to run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        arch, kwargs, classes = json.loads(a.child)
        print(json.dumps(child(arch, kwargs, classes, a)))
        return
    configs = [c for c in CONFIGS if not a.only or c[0] in a.only or c[1] in a.only]
    rows = []
    for cfg in configs:
        rows.append(run_child(cfg, a))
        print(f"{cfg[0]}: {rows[-1]['mpx_s']:.3f} Mpx/s", file=sys.stderr, flush=True)
    import torch

    out = a.out or ROOT / "benchmarks" / "results" / (
        "models.json" if a.device == "cpu" else f"models_{a.device}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": a.size, "batch": a.batch, "threads": a.threads, "repeats": a.repeats,
            "device": a.device, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_avg_1m": os.getloadavg()[0]}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(table(rows, a.device))
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
