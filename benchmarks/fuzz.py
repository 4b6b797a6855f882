"""Fuzzing the CLI with hostile and broken files (issue 18): exits 0 or 2, no traceback, nothing
left behind, every case within seconds and bounded memory.

Usage: python benchmarks/fuzz.py [--cases 2400] [--seed 0] [--workers 2] [--budget 900]
                                 [--timeout 30] [--memory-mb 3000] [--out benchmarks/results/fuzz.json]

A seeded mutator (no dependency; reproducible: case ``i`` of seed ``s`` is always the same
file) derives each case from a real seed file:

- ``tiff``: a real GeoTIFF (crops of tests/data/RGB.byte.tif: striped, tiled+deflate; a label
  raster) with TIFF-aware mutations (IFD entries set to interesting values: dimensions, band
  counts, offsets, byte counts, compression, types) and byte-level ones (flips, truncation,
  splices); run through ``geoseg predict`` or ``geoseg catalog validate``.
- ``catalog`` / ``pipeline``: YAML with line and token mutations (keys, values, paths escaping
  the folder through ``..`` and symbolic links, other URL schemes, alias bombs, deep nesting,
  huge numbers); run through ``geoseg catalog validate|show`` and ``geoseg run``.
- ``card``: a bundle's card.json with structural mutations (any value replaced, keys dropped
  or added) and byte-level ones; ``geoseg predict`` with that bundle.
- ``safetensors``: the weights' 8-byte header length and JSON header (dtypes, shapes, offsets)
  mutated, or bytes flipped/truncated; ``geoseg predict``.

Each case runs in-process in a worker (the CLI's own error handling: a GeosegError is exit 2,
anything else escaping is a traceback). The parent kills a case past ``--timeout`` seconds or
``--memory-mb`` of resident memory and counts it. After each case the harness looks for what
was left behind: any file in the output folder of a failed run, temporaries (hidden files),
lock files, tile stores without a finished chunk, files beside the inputs. Counts go to the
JSON file and to stdout as a markdown table (docs/benchmarks.md, "Fuzzing").

``geoseg run`` exits 1 when a batch finished with failed scenes (documented): counted apart,
and such a case must have its failures in the batch report.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RGB = ROOT / "tests" / "data" / "RGB.byte.tif"
KINDS = {"tiff": 0.34, "catalog": 0.2, "pipeline": 0.12, "card": 0.17, "safetensors": 0.17}
INTERESTING = [0, 1, 2, 3, 7, 8, 16, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1,
               10**6, 10**9, 123456789, 4096, 1024]  # fmt: skip
TOKENS = ["..", "../a.tif", "../../../../etc/passwd", "/etc/passwd", "sub/../../a.tif",
          "link.tif", "linkdir/a.tif", "ftp://example.invalid/a.tif", "file:///etc/passwd",
          "/vsimem/x.tif", "/vsistdin/", "/vsizip/x.zip/a.tif", "-1", "0", "1e309", "nan",
          "99999999999999999999", "4294967296", "true", "null", "~", "[]", "{}", "'", '"',
          "&a", "*a", "!!python/object/apply:os.system ['echo hi']", "\t", "é", "\x00",
          "a" * 5000, "[[[[[[[[[[", "{a: {b: {c: {d: 1}}}}", "- - - -", "<<: *a",
          "image", "labels", "bands", "roles", "path", "split", "classes", "steps", "type",
          "predict", "train", "evaluate", "tile", "overlap", "chunk", "model", "catalog",
          "1.5", "-0", "0x10", "2147483648", "1000000", "[1, 2, 3]", "[0]", "[100]",
          "red", "nir", "vector", "fgb", "none", "shp", "parquet"]  # fmt: skip
BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,"
        "*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n")


# ----------------------------------------------------------------------------------- seeds


def make_seeds(folder: Path) -> dict[str, Any]:
    """Real seed files: GeoTIFFs, a catalog, a pipeline, a tinycnn bundle."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from geoseg.bundle.untrained import init_bundle

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(RGB) as ds:
        win = Window(300, 300, 64, 64)
        data = ds.read(window=win)
        base = ds.profile | {"width": 64, "height": 64, "transform": ds.window_transform(win)}
    seeds: dict[str, Any] = {"tiff": {}}
    variants = {"striped": {"tiled": False, "compress": None},
                "tiled": {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate"},
                "lzw": {"tiled": False, "compress": "lzw", "blockysize": 8}}  # fmt: skip
    for name, extra in variants.items():
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", **{**base, **extra}) as out:
            out.write(data)
        seeds["tiff"][name] = path.read_bytes()
    labels = (data[0] // 100).astype("uint8")[None]
    with rasterio.open(folder / "lab.tif", "w", **(base | {"count": 1, "nodata": None})) as out:
        out.write(labels)
    seeds["tiff"]["labels"] = (folder / "lab.tif").read_bytes()
    bundle = init_bundle("tinycnn", {"image": 3}, 3, tile=64, output=folder / "model")
    seeds["card"] = (bundle / "card.json").read_bytes()
    seeds["weights"] = (bundle / "weights.safetensors").read_bytes()
    seeds["catalog"] = (
        "version: 1\nname: fuzz\nclasses:\n  - {id: 0, name: low, color: '#000000'}\n"
        "  - {id: 1, name: mid, color: '#ff0000'}\n  - {id: 2, name: high, color: '#00ff00'}\n"
        "scenes:\n  - id: s1\n    split: train\n    modalities:\n"
        "      image: {path: a.tif, bands: [1, 2, 3], roles: [red, green, blue]}\n"
        "    labels: {path: lab.tif}\n  - id: s2\n    modalities:\n      image: b.tif\n")
    seeds["pipeline"] = (
        "version: 1\nname: fuzz\ncatalog: cat.yaml\nworkdir: work\nsteps:\n"
        "  - type: predict\n    model: model\n    tile: 64\n    workers: 1\n"
        "    merge_vectors: true\n    vector: gpkg\n")
    np.random.seed(0)
    return seeds


# ----------------------------------------------------------------------------------- mutators


def mutate_bytes(data: bytes, rnd: random.Random, head: int | None = None) -> bytes:
    """Byte-level mutations: flips, interesting bytes, truncation, splices, repeats."""
    buf = bytearray(data)
    for _ in range(rnd.choice([1, 1, 2, 3, 5])):
        if not buf:
            break
        span = min(len(buf), head or len(buf))
        op = rnd.random()
        i = rnd.randrange(span)
        if op < 0.3:
            buf[i] ^= 1 << rnd.randrange(8)
        elif op < 0.5:
            buf[i] = rnd.choice([0, 0xFF, 0x7F, 0x80, 0x01])
        elif op < 0.65:
            del buf[rnd.randrange(len(buf)):]
        elif op < 0.8:
            j = rnd.randrange(len(buf))
            buf[i:i] = buf[j:j + rnd.randrange(1, 64)]
        elif op < 0.9:
            buf[i:i + 4] = struct.pack("<I", rnd.choice(INTERESTING) & 0xFFFFFFFF)
        else:
            del buf[i:i + rnd.randrange(1, 256)]
    return bytes(buf)


def tiff_entries(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, tag, type, count) of the IFD entries of a classic little-endian TIFF."""
    if len(data) < 8 or data[:4] != b"II*\x00":
        return []
    out = []
    ifd = struct.unpack_from("<I", data, 4)[0]
    seen = 0
    while 0 < ifd < len(data) - 2 and seen < 4:
        n = struct.unpack_from("<H", data, ifd)[0]
        for k in range(n):
            off = ifd + 2 + 12 * k
            if off + 12 > len(data):
                break
            tag, typ, count = struct.unpack_from("<HHI", data, off)
            out.append((off, tag, typ, count))
        nxt = ifd + 2 + 12 * n
        ifd = struct.unpack_from("<I", data, nxt)[0] if nxt + 4 <= len(data) else 0
        seen += 1
    return out


def mutate_tiff(data: bytes, rnd: random.Random) -> bytes:
    """TIFF-aware mutations of IFD entries (most cases), else byte-level ones."""
    entries = tiff_entries(data)
    if not entries or rnd.random() < 0.3:
        return mutate_bytes(data, rnd, head=rnd.choice([None, 512, 4096]))
    buf = bytearray(data)
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        off, _tag, typ, count = rnd.choice(entries)
        what = rnd.random()
        value = rnd.choice(INTERESTING)
        if what < 0.6:  # the value (inline) of the entry
            if typ == 3 and count <= 2:
                buf[off + 8:off + 10] = struct.pack("<H", value & 0xFFFF)
            else:
                buf[off + 8:off + 12] = struct.pack("<I", value & 0xFFFFFFFF)
        elif what < 0.8:  # its count
            buf[off + 4:off + 8] = struct.pack("<I", value & 0xFFFFFFFF)
        elif what < 0.9:  # its type
            buf[off + 2:off + 4] = struct.pack("<H", rnd.choice([0, 1, 2, 3, 4, 5, 11, 12, 16, 99]))
        else:  # its tag
            buf[off:off + 2] = struct.pack("<H", rnd.choice([256, 257, 258, 259, 262, 273, 277,
                                                             278, 279, 284, 322, 323, 324, 325,
                                                             338, 339, 33550, 33922, 34735]))
    return bytes(buf)


def mutate_text(text: str, rnd: random.Random) -> str:
    """YAML mutations: lines dropped/duplicated/swapped, tokens replaced, bombs, indentation."""
    lines = text.splitlines()
    for _ in range(rnd.choice([1, 1, 2, 3])):
        op = rnd.random()
        i = rnd.randrange(len(lines)) if lines else 0
        if op < 0.12 and lines:
            del lines[i]
        elif op < 0.2 and lines:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op < 0.28 and len(lines) > 1:
            j = rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op < 0.7 and lines:  # replace a token of a line (a value after ":" most often)
            line = lines[i]
            parts = [p for p in line.replace("[", " ").replace("]", " ").replace(",", " ")
                     .replace("{", " ").replace("}", " ").split(" ") if p.strip(":- ")]
            if parts:
                old = rnd.choice(parts).strip(":")
                if old:
                    lines[i] = line.replace(old, rnd.choice(TOKENS), 1)
        elif op < 0.76:
            lines = BOMB.splitlines() + lines
        elif op < 0.8:
            depth = rnd.choice([50, 2000, 20000])
            lines.append("deep: " + "[" * depth + "]" * depth)
        elif op < 0.88 and lines:
            lines[i] = " " * rnd.choice([1, 2, 3, 8]) + lines[i]
        elif op < 0.94 and lines:
            lines[i] = lines[i] + rnd.choice([" #", ": x", " &a", " *a", " !!binary AAAA", "'"])
        elif lines:
            k = rnd.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:k] + rnd.choice(["\x00", "\t", "\ufeff", ":", "-", "?"]) + \
                lines[i][k:]  # fmt: skip
    return "\n".join(lines) + "\n"


def _interesting_json(rnd: random.Random) -> Any:
    return rnd.choice([None, True, False, 0, -1, 1, 2**31, 2**63, 10**9, 1e308, -1e308, 0.5,
                       float("nan"), "", "x", "a" * 10000, [], {}, [1, 2], {"x": 1},
                       [[[[[[[[]]]]]]]], "unet", "tinycnn", "nope", 64, 16, 8, 4096, 2**20,
                       {"image": {"bands": ["r"], "mean": [0], "std": [0]}}])  # fmt: skip


def mutate_json(data: bytes, rnd: random.Random) -> bytes:
    """Structural mutations of a JSON document (value replaced, key dropped or added), or
    byte-level ones."""
    if rnd.random() < 0.2:
        return mutate_bytes(data, rnd)
    doc = json.loads(data)
    for _ in range(rnd.choice([1, 1, 2, 3])):
        node, key = _random_slot(doc, rnd)
        if node is None:
            continue
        op = rnd.random()
        if op < 0.6:
            node[key] = _interesting_json(rnd)
        elif op < 0.8 and isinstance(node, dict):
            node.pop(key, None)
        elif isinstance(node, dict):
            node[rnd.choice(["extra", "tile_size", "halo", "arguments", "x" * 50])] = \
                _interesting_json(rnd)  # fmt: skip
        elif isinstance(node, list):
            node.append(_interesting_json(rnd))
    return json.dumps(doc, allow_nan=True).encode()


def _random_slot(doc: Any, rnd: random.Random) -> tuple[Any, Any]:
    """A random (container, key) inside ``doc``, deeper levels as likely as shallow ones."""
    slots = []

    def walk(node: Any, depth: int) -> None:
        if depth > 6:
            return
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else []  # fmt: skip
        for k, v in items:
            slots.append((node, k))
            walk(v, depth + 1)

    walk(doc, 0)
    return rnd.choice(slots) if slots else (None, None)


def mutate_safetensors(data: bytes, rnd: random.Random) -> bytes:
    """The 8-byte header length, the JSON header (dtype, shape, data_offsets) or bytes."""
    n = struct.unpack_from("<Q", data, 0)[0]
    head, body = data[8:8 + n], data[8 + n:]
    op = rnd.random()
    if op < 0.2:
        value = rnd.choice([0, 1, 7, n - 1, n + 1, 2**31, 2**63, 2**64 - 1, len(data), 10**8])
        return struct.pack("<Q", value & (2**64 - 1)) + data[8:]
    if op < 0.75:
        doc = json.loads(head)
        names = [k for k in doc if k != "__metadata__"]
        name = rnd.choice(names)
        field = rnd.choice(["dtype", "shape", "data_offsets", "data_offsets", "shape"])
        doc[name][field] = rnd.choice([
            "F64", "I8", "BOOL", "XX", [], [0], [10**9, 10**9], [-1], [1, 2, 3, 4, 5, 6, 7, 8, 9],
            [0, 10**12], [5, 2], [0, 0], None, "F32", 2**40])  # fmt: skip
        new = json.dumps(doc).encode()
        return struct.pack("<Q", len(new)) + new + body
    return mutate_bytes(data, rnd, head=rnd.choice([None, 64, 8 + n]))


# ----------------------------------------------------------------------------------- cases


def build_case(kind: str, index: int, seed: int, seeds: dict[str, Any], folder: Path,
               seed_dir: Path) -> list[list[str]]:  # fmt: skip
    """Write case ``index`` into ``folder``; return the CLI argument lists to run."""
    rnd = random.Random(f"{seed}-{kind}-{index}")
    folder.mkdir(parents=True)
    tiffs = seeds["tiff"]
    (folder / "a.tif").write_bytes(tiffs["striped"])
    (folder / "b.tif").write_bytes(tiffs["tiled"])
    (folder / "lab.tif").write_bytes(tiffs["labels"])
    os.symlink(RGB, folder / "link.tif")  # a symbolic link out of the folder
    os.symlink(RGB.parent, folder / "linkdir")
    model = folder / "model"
    model.mkdir()
    (model / "card.json").write_bytes(seeds["card"])
    (model / "weights.safetensors").write_bytes(seeds["weights"])
    common = ["--out", "out", "--tiles-dir", "tiles", "--no-progress", "--workers", "1"]
    if kind == "tiff":
        name = rnd.choice(["striped", "tiled", "lzw", "labels"])
        (folder / "m.tif").write_bytes(mutate_tiff(tiffs[name], rnd))
        if rnd.random() < 0.7:
            return [["predict", "m.tif", "--model", "model", *common]]
        (folder / "cat.yaml").write_text("scenes:\n  - id: m\n    modalities: {image: m.tif}\n"
                                         "    labels: lab.tif\n")  # fmt: skip
        return [["catalog", "validate", "cat.yaml"]]
    if kind == "catalog":
        (folder / "cat.yaml").write_text(mutate_text(seeds["catalog"], rnd))
        second = rnd.choice([["show"], ["validate", "--quick"], ["show", "--json"]])
        return [["catalog", "validate", "cat.yaml"], ["catalog", second[0], "cat.yaml", *second[1:]]]
    if kind == "pipeline":
        if rnd.random() < 0.5:
            (folder / "cat.yaml").write_text(mutate_text(seeds["catalog"], rnd))
            (folder / "pipe.yaml").write_text(seeds["pipeline"])
        else:
            (folder / "cat.yaml").write_text(seeds["catalog"])
            (folder / "pipe.yaml").write_text(mutate_text(seeds["pipeline"], rnd))
        return [["run", "pipe.yaml", "--no-progress"]]
    if kind == "card":
        (model / "card.json").write_bytes(mutate_json(seeds["card"], rnd))
        return [["predict", "a.tif", "--model", "model", *common]]
    (model / "weights.safetensors").write_bytes(mutate_safetensors(seeds["weights"], rnd))
    return [["predict", "a.tif", "--model", "model", *common]]


def leftovers(folder: Path, code: int, before: set[str]) -> list[str]:
    """What a finished case left that it should not have (see the module docstring)."""
    found = []
    for p in folder.rglob("*"):
        rel = str(p.relative_to(folder))
        if p.is_symlink() or rel in before or rel.startswith("model"):
            continue
        name = p.name
        if name.endswith(".lock") or ".break-" in name:
            found.append(f"lock {rel}")
        elif name.startswith(".") and p.is_file() and not name.endswith(".sources.json"):
            found.append(f"temporary {rel}")
        elif p.is_file() and rel.startswith("out/") and code != 0:
            found.append(f"output of a failed run {rel}")
        elif p.is_dir() and p.parent.name == "tiles" and not any((p / "done").glob("*.json")):
            found.append(f"tile store without a finished chunk {rel}")
        elif p.is_file() and "/" not in rel:
            found.append(f"file beside the inputs {rel}")
    return found


def run_cli(args: list[str]) -> tuple[int, str | None, str]:
    """Run the CLI in this process as ``geoseg.cli.main.main`` would: (exit code, traceback,
    last line on stderr)."""
    import click
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.errors import GeosegError

    res = CliRunner().invoke(cli, args)
    exc = res.exception
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    last = lines[-1][:400] if lines else ""
    if exc is None or isinstance(exc, SystemExit):
        return res.exit_code, None, last
    if isinstance(exc, GeosegError):
        return 2, None, str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
    if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt):
        return 130, None, last
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return 1, f"{type(exc).__name__}: {str(exc)[:300]}\n{tb[-1500:]}", last


def worker(tasks: Any, results: Any, seeds_dir: str, seed: int) -> None:
    """Run cases from ``tasks`` until None; one result dict per case."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.disable(logging.CRITICAL)  # the CLI's lines are not what is measured
    seed_dir = Path(seeds_dir)
    seeds = json.loads((seed_dir / "seeds.json").read_text(), object_hook=_unhex)
    warm = Path(tempfile.mkdtemp(prefix="warm-", dir=seed_dir))  # imports and first run untimed
    build_case("card", -1, seed, seeds, warm / "case", seed_dir)
    (warm / "case" / "model" / "card.json").write_bytes(seeds["card"])  # the seed, unmutated
    cwd = os.getcwd()
    os.chdir(warm / "case")
    try:
        run_cli(["predict", "a.tif", "--model", "model", "--out", "out", "--tiles-dir", "tiles",
                 "--no-progress", "--workers", "1"])  # fmt: skip
    finally:
        os.chdir(cwd)
        shutil.rmtree(warm, ignore_errors=True)
    results.put({"ready": True})
    while True:
        task = tasks.get()
        if task is None:
            return
        kind, index, root = task
        folder = Path(root) / f"{kind}-{index}"
        t0 = time.perf_counter()
        result: dict[str, Any] = {"kind": kind, "index": index}
        try:
            commands = build_case(kind, index, seed, seeds, folder, seed_dir)
            before = {str(p.relative_to(folder)) for p in folder.rglob("*")}
            codes, tbs, left, messages = [], [], [], []
            cwd = os.getcwd()
            os.chdir(folder)
            try:
                for args in commands:
                    code, tb, message = run_cli(args)
                    codes.append(code)
                    messages.append(message)
                    if tb:
                        tbs.append(tb)
                    left += leftovers(folder, code, before)
                    if code == 1 and args[0] == "run" and not tb:
                        left += _batch_report_problem(folder)
            finally:
                os.chdir(cwd)
            result.update(codes=codes, tracebacks=tbs, leftovers=sorted(set(left)),
                          commands=[" ".join(a) for a in commands], messages=messages)  # fmt: skip
        except Exception:  # a harness failure is reported, not hidden
            result["harness_error"] = traceback.format_exc()[-1500:]
        result["seconds"] = round(time.perf_counter() - t0, 3)
        shutil.rmtree(folder, ignore_errors=True)
        results.put(result)


def _batch_report_problem(folder: Path) -> list[str]:
    """A batch that exited 1 must say in its report which scenes failed."""
    reports = list(folder.glob("**/batch_report.json"))
    if not reports:
        return ["exit 1 without a batch report"]
    rep = json.loads(reports[0].read_text())
    failed = [s for s in rep["scenes"] if s["status"] == "failed"]
    if not failed and not rep.get("problems"):
        return ["exit 1 with a batch report naming no failure"]
    if any(not s.get("error") for s in failed):
        return ["failed scene without an error message"]
    return []


def _hex(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"__hex__": obj.hex()}
    raise TypeError(type(obj))


def _unhex(obj: dict[str, Any]) -> Any:
    return bytes.fromhex(obj["__hex__"]) if set(obj) == {"__hex__"} else obj


# ----------------------------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--budget", type=float, default=900, help="stop after this many seconds")
    ap.add_argument("--timeout", type=float, default=30, help="seconds per case")
    ap.add_argument("--memory-mb", type=float, default=3000, help="resident memory per case")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    ap.add_argument("--kinds", nargs="*", default=list(KINDS))
    ap.add_argument("--replay", nargs=2, metavar=("KIND", "INDEX"),
                    help="run one case here and keep its folder (full traceback)")
    args = ap.parse_args()
    if args.replay:
        replay(args.replay[0], int(args.replay[1]), args.seed)
        return

    work = Path(tempfile.mkdtemp(prefix="geoseg-fuzz-"))
    seed_dir = work / "seeds"
    seeds = make_seeds(seed_dir)
    (seed_dir / "seeds.json").write_text(json.dumps(seeds, default=_hex))
    rnd = random.Random(args.seed)
    weights = [KINDS[k] for k in args.kinds]
    plan = [(rnd.choices(args.kinds, weights)[0], i, str(work / "cases")) for i in range(args.cases)]
    counts = run_cases(plan, args, seed_dir)
    shutil.rmtree(work, ignore_errors=True)
    counts["settings"] = {"cases": args.cases, "seed": args.seed, "workers": args.workers,
                          "timeout_s": args.timeout, "memory_mb": args.memory_mb}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(counts, indent=2))
    print(table(counts))
    print(f"details: {args.out}")


def replay(kind: str, index: int, seed: int) -> None:
    """Build case ``index`` of ``kind`` in a kept folder and run it with full tracebacks."""
    import traceback as tb_module

    from click.testing import CliRunner

    from geoseg.cli.main import cli

    work = Path(tempfile.mkdtemp(prefix="geoseg-fuzz-replay-"))
    seeds = json.loads(json.dumps(make_seeds(work / "seeds"), default=_hex), object_hook=_unhex)
    folder = work / f"{kind}-{index}"
    commands = build_case(kind, index, seed, seeds, folder, work / "seeds")
    os.chdir(folder)
    for args in commands:
        res = CliRunner().invoke(cli, args)
        print("$ geoseg", " ".join(args), "->", res.exit_code)
        print(res.output[-3000:])
        if res.exception and not isinstance(res.exception, SystemExit):
            tb_module.print_exception(res.exception)
    print("case folder:", folder)


def run_cases(plan: list[tuple[str, int, str]], args: argparse.Namespace,
              seed_dir: Path) -> dict[str, Any]:  # fmt: skip
    """Run the planned cases on ``args.workers`` processes, restarting a killed one."""
    import psutil

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs: dict[int, Any] = {}
    running: dict[int, tuple[Any, float]] = {}  # slot -> (task, started)
    todo = list(reversed(plan))
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    ready: set[int] = set()

    def start(slot: int) -> None:
        ready.discard(slot)
        q = ctx.Queue()
        p = ctx.Process(target=_slot_worker, args=(q, results, str(seed_dir), args.seed, slot),
                        daemon=True)  # fmt: skip
        p.start()
        procs[slot] = (p, q)

    for slot in range(args.workers):
        start(slot)
    try:
        while (todo and time.perf_counter() - t0 < args.budget) or running:
            for slot in range(args.workers):
                if slot in ready and slot not in running and todo and \
                        time.perf_counter() - t0 < args.budget:  # fmt: skip
                    task = todo.pop()
                    procs[slot][1].put(task)
                    running[slot] = (task, time.perf_counter())
            try:
                res = results.get(timeout=0.5)
                slot = res.pop("slot")
                if res.pop("ready", False):
                    ready.add(slot)
                    continue
                running.pop(slot, None)
                out.append(res)
                if len(out) % 100 == 0:
                    print(f"{len(out)} cases, {time.perf_counter() - t0:.0f} s", flush=True)
            except queue.Empty:
                pass
            for slot, (task, started) in list(running.items()):
                proc = procs[slot][0]
                reason = None
                if time.perf_counter() - started > args.timeout:
                    reason = "timeout"
                else:
                    try:
                        rss = sum(p.memory_info().rss for p in
                                  [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)])
                        if rss > args.memory_mb * 2**20:
                            reason = "memory"
                    except psutil.Error:
                        reason = None if proc.is_alive() else "crash"
                if reason is None and not proc.is_alive():
                    reason = "crash"
                if reason:
                    proc.kill()
                    proc.join()
                    out.append({"kind": task[0], "index": task[1], "killed": reason,
                                "seconds": round(time.perf_counter() - started, 3)})
                    shutil.rmtree(Path(task[2]) / f"{task[0]}-{task[1]}", ignore_errors=True)
                    running.pop(slot)
                    start(slot)
    finally:
        for _, q in procs.values():
            q.put(None)
        for p, _ in procs.values():
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return summarise(out, time.perf_counter() - t0)


def _slot_worker(tasks: Any, results: Any, seeds_dir: str, seed: int, slot: int) -> None:
    class Tagged:
        def put(self, item: dict[str, Any]) -> None:
            results.put({**item, "slot": slot})

    worker(tasks, Tagged(), seeds_dir, seed)


def summarise(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    by_kind: dict[str, Counter] = {}
    examples: dict[str, list[Any]] = {"tracebacks": [], "leftovers": [], "killed": [],
                                      "other_exits": [], "harness_errors": []}  # fmt: skip
    for r in results:
        c = by_kind.setdefault(r["kind"], Counter())
        c["cases"] += 1
        if "killed" in r:
            c[f"killed_{r['killed']}"] += 1
            examples["killed"].append(r)
            continue
        if "harness_error" in r:
            c["harness_errors"] += 1
            examples["harness_errors"].append(r)
            continue
        c["runs"] += len(r["codes"])
        for code in r["codes"]:
            c[f"exit_{code}"] += 1
        if r["tracebacks"]:
            c["tracebacks"] += len(r["tracebacks"])
            examples["tracebacks"].append(r)
        if r["leftovers"]:
            c["cases_with_leftovers"] += 1
            examples["leftovers"].append(r)
        documented = all(code == 1 for code in r["codes"]) and r["commands"][0].startswith("run")
        if any(code not in (0, 2) for code in r["codes"]) and not r["tracebacks"] and not documented:
            examples["other_exits"].append(r)
        c["max_seconds"] = max(c["max_seconds"], r["seconds"])
    messages: Counter = Counter()
    for r in results:
        for code, msg in zip(r.get("codes", []), r.get("messages", []), strict=True):
            if code == 2:
                messages[f"{r['kind']}: {_shape(msg)}"] += 1
    total = Counter()
    for c in by_kind.values():
        for k, v in c.items():
            total[k] = max(total[k], v) if k == "max_seconds" else total[k] + v
    return {"seconds": round(seconds, 1), "total": dict(total),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "examples": {k: v[:20] for k, v in examples.items()},
            "slowest": sorted(({k: r.get(k) for k in ("kind", "index", "seconds", "codes",
                                                       "messages", "commands")}
                               for r in results), key=lambda r: -r["seconds"])[:10],
            "messages": dict(messages.most_common())}


def _shape(message: str) -> str:
    """An error message with its paths and numbers generalised, to count kinds of errors."""
    import re

    text = re.sub(r"/tmp/geoseg-fuzz-\w+/cases/\w+-\d+/", "", message)
    text = re.sub(r"\(GDAL: [^)]*\)", "(GDAL: ...)", text)
    return re.sub(r"\d+", "N", text)[:220]


def table(counts: dict[str, Any]) -> str:
    cols = ["cases", "runs", "exit_0", "exit_2", "exit_1", "tracebacks", "cases_with_leftovers",
            "killed_timeout", "killed_memory", "killed_crash", "max_seconds"]  # fmt: skip
    rows = [*counts["by_kind"].items(), ("all", counts["total"])]
    lines = ["| kind | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, c in rows:
        lines.append(f"| {name} | " + " | ".join(str(round(c.get(k, 0), 1)) for k in cols) + " |")
    return "\n".join(lines) + f"\n\n{counts['total'].get('cases', 0)} cases in {counts['seconds']} s"


if __name__ == "__main__":
    sys.exit(main())
