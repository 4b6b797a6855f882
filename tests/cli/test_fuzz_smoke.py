"""A few cases of benchmarks/fuzz.py (the benchmark runs 2400): mutated GeoTIFFs, catalogs,
pipelines, cards and safetensors headers through the CLI end in exit 0 or 2, never a
traceback, and leave nothing behind."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory):
    spec = importlib.util.spec_from_file_location("geoseg_fuzz", ROOT / "benchmarks" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seeds_dir = tmp_path_factory.mktemp("fuzz") / "seeds"
    return module, module.make_seeds(seeds_dir), seeds_dir


@pytest.mark.parametrize("kind, indices", [("tiff", range(8)), ("catalog", range(4)),
                                           ("pipeline", range(2)), ("card", range(4)),
                                           ("safetensors", range(4))])  # fmt: skip
def test_mutated_inputs_exit_0_or_2_and_leave_nothing(fuzz, tmp_path: Path, kind: str,
                                                      indices: range) -> None:  # fmt: skip
    module, seeds, seeds_dir = fuzz
    old = os.getcwd()
    for index in indices:
        folder = tmp_path / f"{kind}-{index}"
        commands = module.build_case(kind, index, 11, seeds, folder, seeds_dir)
        before = {str(p.relative_to(folder)) for p in folder.rglob("*")}
        os.chdir(folder)
        try:
            for args in commands:
                code, tb, message = module.run_cli(args)
                assert tb is None, f"{kind} {index} {args}: {tb}"
                assert code in (0, 2) or (code == 1 and args[0] == "run"), (kind, index, message)
                assert not module.leftovers(folder, code, before), (kind, index)
        finally:
            os.chdir(old)
