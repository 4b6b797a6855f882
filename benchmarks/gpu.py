"""GPU benchmark: end-to-end `geoseg predict --device cuda` vs model-only, autocast on/off.

Usage (on a machine with a CUDA GPU): python benchmarks/gpu.py [--size 8192] [--batch 16]
Reports tiles/s and Mpx/s end to end and model-only, pipeline efficiency (target >= 0.8) and
peak GPU memory; writes benchmarks/results/gpu.json. `--device cpu --size 1024` dry-runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "olinda" / "L7_ETMs.tif"


def model_only(bundle: Path, plan, batch: int, device: str, amp: bool) -> float:
    """Seconds of forward passes on the plan's tiles (inputs already on the device)."""
    import torch

    from geoseg.bundle.bundle import load_bundle

    model = load_bundle(bundle, device).model
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    n = plan.n_tiles
    x = {"image": torch.randn(batch, 3, plan.tile_h, plan.tile_w, device=device)}
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
        else torch.float16  # fmt: skip

    def step(k: int) -> None:
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=amp and device != "cpu"):
            torch.softmax(model({"image": x["image"][:k]}).float(), 1)

    with torch.inference_mode():
        step(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            step(min(batch, n - i))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-gpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    a = ap.parse_args()
    import torch

    from geoseg.bundle.untrained import init_bundle
    from geoseg.runs.options import PredictOptions
    from geoseg.runs.predict import predict
    from geoseg.testing import mosaic_scene
    from geoseg.tiling.plan import TilePlan

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; run with --device cpu for a dry run")
    a.work.mkdir(parents=True, exist_ok=True)
    scene = a.work / f"scene_{a.size}.tif"
    if not scene.exists():
        mosaic_scene(SOURCE, scene, a.size)
    bundle = init_bundle("unet", {"image": 3}, 6, seed=0, tile=a.tile, stats_from=SOURCE,
                         stats_bands=[3, 2, 1], output=a.work / "unet")  # fmt: skip
    from geoseg.bundle.folder import read_card

    card = read_card(bundle)
    plan = TilePlan(a.size, a.size, a.tile, min(card.halo, a.tile // 4), a.chunk)
    result: dict = {"device": a.device, "gpu": torch.cuda.get_device_name() if
                    a.device.startswith("cuda") else "cpu", "size": a.size, "tile": a.tile,
                    "batch": a.batch, "tiles": plan.n_tiles, "runs": {}}  # fmt: skip
    for amp in (True, False):
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        m = model_only(bundle, plan, a.batch, a.device, amp)
        t0 = time.perf_counter()
        predict(scene, bundle, a.work / f"out_amp{int(amp)}", options=PredictOptions(
            bands=[3, 2, 1], device=a.device, amp=amp, batch=a.batch, chunk=a.chunk,
            workers=a.workers, overwrite=True, progress=False, vector="none",
            tiles_dir=a.work / "tiles"))  # fmt: skip
        e2e = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated() / 2**20 if a.device.startswith("cuda") else None
        row = {"end_to_end_s": e2e, "model_only_s": m, "efficiency": m / e2e,
               "tiles_per_s": plan.n_tiles / e2e, "mpx_per_s": a.size**2 / 1e6 / e2e,
               "model_only_tiles_per_s": plan.n_tiles / m, "peak_gpu_mib": mem}  # fmt: skip
        result["runs"][f"amp_{'on' if amp else 'off'}"] = row
        print(f"amp {'on ' if amp else 'off'}: end-to-end {e2e:.1f}s ({row['mpx_per_s']:.1f} Mpx/s, "
              f"{row['tiles_per_s']:.1f} tiles/s), model-only {m:.1f}s, efficiency "
              f"{row['efficiency']:.2f}, peak GPU {mem} MiB", flush=True)  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
