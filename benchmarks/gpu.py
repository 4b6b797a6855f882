"""GPU benchmark (issue 17): end-to-end `geoseg predict --device cuda` against the model alone.

Usage (a CUDA GPU): python benchmarks/gpu.py [--size 8192] [--batch N] [--compile off,on]
Dry run on the CPU: python benchmarks/gpu.py --device cpu --size 1024 [--models unet-r18]

For U-Net/ResNet-18, DeepLabV3+/ResNet-50 and FarSeg/ResNet-50 (untrained bundles on the
Landsat mosaic's statistics), each with torch.compile off and on and autocast on (bf16 where
the GPU supports it, else fp16; `--amp on,off` adds fp32):

* end to end: wall of a fresh `geoseg predict` subprocess (start-up, model load, compilation,
  reading, inference, COG writing), as scene Mpx/s;
* model-only: forward + softmax of the same number of tiles of the same shape, in the same
  batches, same dtype and compile setting, inputs already on the device, after a warm-up;
  also as scene Mpx/s, so efficiency = model-only s / end-to-end s;
* GPU busy fraction: mean NVML utilisation sampled every 0.1 s during the end-to-end run
  (``torch.cuda.utilization``, which needs pynvml, else ``nvidia-smi -lms 100``; the source
  is recorded);
* targets: efficiency >= 0.8, and >= 100 Mpx/s end to end for DeepLabV3+/ResNet-50 in bf16.

The batch is the one `geoseg predict` would choose (measured from free GPU memory) unless
`--batch` is given, and is passed to the subprocess so both sides use the same. Results go to
benchmarks/results/gpu.json on a GPU only; a CPU dry run writes <work>/gpu_dryrun.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from landsat import ROOT, SOURCE, landsat_scene

#: (label, architecture, arguments, classes), as in benchmarks/models.py
MODELS = {
    "unet-r18": ("unet", {"encoder": "resnet18"}, 6),
    "deeplabv3plus-r50": ("deeplabv3plus", {"encoder": "resnet50"}, 6),
    "farseg-r50": ("farseg", {"encoder": "resnet50"}, 16),
}
TARGET_EFFICIENCY = 0.8
TARGET_DLV3_MPX_S = 100.0


class BusySampler:
    """GPU utilisation (%) sampled every ``period`` s in a thread, between start and stop."""

    def __init__(self, device: str, period: float = 0.1):
        self.device, self.period, self.samples = device, period, []
        self.source, self._stop = self._pick_source(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._smi: subprocess.Popen | None = None

    def _pick_source(self) -> str | None:
        import torch

        if not self.device.startswith("cuda"):
            return None
        try:
            torch.cuda.utilization(torch.device(self.device))
            return "torch.cuda.utilization (NVML)"
        except Exception:  # pynvml/amdsmi missing
            return "nvidia-smi -lms 100" if shutil.which("nvidia-smi") else None

    def _loop(self) -> None:
        import torch

        if self.source and self.source.startswith("torch"):
            while not self._stop.wait(self.period):
                self.samples.append(float(torch.cuda.utilization(torch.device(self.device))))
            return
        index = torch.device(self.device).index or 0
        self._smi = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "-i", str(index),
                                      "--format=csv,noheader,nounits", "-lms", "100"],
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        for line in self._smi.stdout or ():
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __enter__(self) -> BusySampler:
        if self.source:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._smi is not None:
            self._smi.terminate()
        if self.source:
            self._thread.join(timeout=5)

    @property
    def fraction(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def model_only(engine: Any, n_tiles: int, tile_h: int, tile_w: int, batch: int) -> float:
    """Seconds of forward + softmax over ``n_tiles`` tiles in batches of ``batch``: inputs on
    the device (channels_last on CUDA), the engine's autocast dtype and compile setting."""
    import torch

    dev, cuda = engine.device, engine.device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    x = {name: torch.randn(batch, len(m.bands), tile_h, tile_w, device=dev).to(memory_format=fmt)
         for name, m in engine.card.modalities.items()}  # fmt: skip
    sizes = [min(batch, n_tiles - i) for i in range(0, n_tiles, batch)]
    dtype = engine.amp_dtype or torch.float16

    def step(k: int) -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=cuda and engine.amp_dtype is not None):
            torch.softmax(engine.forward({n: t[:k] for n, t in x.items()}).float(), 1)

    with torch.inference_mode():
        for k in sorted(set(sizes)):  # warm-up: cuDNN autotuning, compilation of each shape
            step(k)
        if cuda:
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for k in sizes:
            step(k)
        if cuda:
            torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def end_to_end(a: argparse.Namespace, scene: Path, bundle: Path, batch: int, compile_on: bool,
               amp: bool, out: Path) -> dict[str, Any]:  # fmt: skip
    """A fresh `geoseg predict` subprocess: wall, GPU busy fraction, its report's timings."""
    cmd = [sys.executable, "-m", "geoseg", "predict", str(scene), "--model", str(bundle),
           "--out", str(out), "--bands", "3,2,1", "--device", a.device, "--tile", str(a.tile),
           "--batch", str(batch), "--chunk", str(a.chunk), "--vector", "none", "--no-progress",
           "--overwrite", "--tiles-dir", str(a.work / "tiles"),
           "--compile" if compile_on else "--no-compile", "--amp" if amp else "--no-amp"]  # fmt: skip
    if a.workers:
        cmd += ["--workers", str(a.workers)]
    with BusySampler(a.device) as busy:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"geoseg predict failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(next(out.glob("*_report.json")).read_text())
    return {"end_to_end_s": wall, "busy_fraction": busy.fraction, "busy_source": busy.source,
            "busy_samples": len(busy.samples), "timings_s": report["timings_s"],
            "workers": report["settings"]["workers"],
            "compile_log": compile_log(proc.stderr)}  # fmt: skip


def compile_log(stderr: str) -> str:
    """What the engine logged about torch.compile: "compiled", "failed" (it fell back to the
    model uncompiled) or "none" (the option did not reach the engine, or was off)."""
    if "torch.compile failed" in stderr:
        return "failed"
    return "compiled" if "torch.compile:" in stderr else "none"


def bundle_for(label: str, work: Path, tile: int) -> Path:
    """An untrained bundle of ``label`` (MODELS) for bands 3,2,1 of the Landsat mosaic."""
    from geoseg.bundle.untrained import init_bundle

    arch, args, classes = MODELS[label]
    out = work / label
    if not (out / "card.json").exists():
        init_bundle(arch, {"image": 3}, classes, args, seed=0, tile=tile, stats_from=SOURCE,
                    stats_bands=[3, 2, 1], output=out)  # fmt: skip
    return out


def resolve_batch(a: argparse.Namespace, bundle: Path, tile: int, amp: bool) -> int:
    """``--batch``, else what `geoseg predict` chooses (free GPU memory; 1 on the CPU)."""
    if a.batch:
        return a.batch
    if not a.device.startswith("cuda"):
        return 1
    from geoseg.inference.engine import open_engine

    return open_engine(bundle, a.device, amp=amp).fitting_batch(tile, tile)


def measure(a: argparse.Namespace, scene: Path, label: str, compile_on: bool, amp: bool) -> dict:
    """One row: model-only in this process, then end to end in a subprocess."""
    import torch

    from geoseg.bundle.folder import read_card
    from geoseg.inference.engine import open_engine
    from geoseg.tiling.plan import TilePlan

    bundle = bundle_for(label, a.work, a.tile)
    card = read_card(bundle)
    plan = TilePlan(a.size, a.size, a.tile, card.default_overlap(a.tile), a.chunk)
    batch = resolve_batch(a, bundle, plan.tile_h, amp)
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    engine = open_engine(bundle, a.device, threads=torch.get_num_threads(), amp=amp,
                         compile=compile_on)  # fmt: skip
    m = model_only(engine, plan.n_tiles, plan.tile_h, plan.tile_w, batch)
    peak = torch.cuda.max_memory_allocated() / 2**20 if engine.device.type == "cuda" else None
    dtype = str(engine.amp_dtype).removeprefix("torch.") if amp and a.device != "cpu" else "float32"
    del engine
    gc.collect()
    if a.device.startswith("cuda"):
        torch.cuda.empty_cache()
    row = end_to_end(a, scene, bundle, batch, compile_on, amp, a.work / f"out-{label}")
    mpx = a.size**2 / 1e6
    row |= {"model": label, "compile": compile_on, "dtype": dtype, "batch": batch,
            "tiles": plan.n_tiles, "overlap": plan.overlap, "model_only_s": m,
            "model_only_mpx_s": mpx / m, "end_to_end_mpx_s": mpx / row["end_to_end_s"],
            "efficiency": m / row["end_to_end_s"], "model_peak_gpu_mib": peak}  # fmt: skip
    return row


def verdicts(row: dict) -> list[str]:
    """The targets this row is measured against, each with PASS or FAIL."""
    out = [f"efficiency {row['efficiency']:.2f} >= {TARGET_EFFICIENCY}: "
           f"{'PASS' if row['efficiency'] >= TARGET_EFFICIENCY else 'FAIL'}"]  # fmt: skip
    if row["model"] == "deeplabv3plus-r50" and row["dtype"] == "bfloat16":
        ok = row["end_to_end_mpx_s"] >= TARGET_DLV3_MPX_S
        out.append(f"end to end {row['end_to_end_mpx_s']:.1f} >= {TARGET_DLV3_MPX_S:.0f} Mpx/s: "
                   f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    return out


def show(row: dict) -> None:
    busy = "n/a" if row["busy_fraction"] is None else f"{row['busy_fraction']:.2f}"
    print(f"{row['model']:18s} compile {'on ' if row['compile'] else 'off'} {row['dtype']:8s} "
          f"batch {row['batch']:2d}: end to end {row['end_to_end_s']:6.1f} s "
          f"({row['end_to_end_mpx_s']:7.2f} Mpx/s), model-only {row['model_only_s']:6.1f} s "
          f"({row['model_only_mpx_s']:7.2f} Mpx/s), GPU busy {busy}"
          + (f"  [geoseg predict: compile {row['compile_log']}]" if row["compile"] and
             row["compile_log"] != "compiled" else ""), flush=True)  # fmt: skip
    for line in verdicts(row):
        print(f"    target {line}", flush=True)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="default: as geoseg predict chooses")
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=None, help="default: as geoseg predict chooses")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    ap.add_argument("--compile", default="off,on", help="off, on or off,on")
    ap.add_argument("--amp", default="on", help="on (bf16/fp16), off (fp32) or on,off")
    ap.add_argument("--work", type=Path, default=ROOT / "tiles" / "bench-gpu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    return ap.parse_args()


def main() -> None:
    a = parse()
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; run with --device cpu for a dry run")
    on = {"on": True, "off": False}
    scene = landsat_scene(a.work, a.size)
    result: dict[str, Any] = {
        "device": a.device, "gpu": torch.cuda.get_device_name(torch.device(a.device))
        if a.device.startswith("cuda") else None, "torch": torch.__version__,
        "size": a.size, "tile": a.tile, "chunk": a.chunk, "load_avg_1m": os.getloadavg()[0],
        "rows": []}  # fmt: skip
    for label in a.models.split(","):
        for amp in (on[v] for v in a.amp.split(",")):
            for compile_on in (on[v] for v in a.compile.split(",")):
                result["rows"].append(measure(a, scene, label, compile_on, amp))
                show(result["rows"][-1])
    out = a.out if a.device.startswith("cuda") else a.work / "gpu_dryrun.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
