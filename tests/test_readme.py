"""The README's two commands and what ``make demo`` really does (the Makefile)."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

from geoseg.runs.job import output_paths
from geoseg.runs.options import PredictOptions

REPO = Path(__file__).resolve().parents[1]


def demo_recipe() -> list[str]:
    """The shell lines of the Makefile's ``demo`` target (continuations joined)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "no demo target in the Makefile"
    return [ln.strip() for ln in recipe.group(1).splitlines()]


def demo_predict() -> dict[str, list[str]]:
    """Image, --modality, --model and --out of the demo's ``geoseg predict``."""
    (line,) = [ln for ln in demo_recipe() if "geoseg predict" in ln]
    args = shlex.split(line)
    args = args[args.index("predict") + 1 :]
    got: dict[str, list[str]] = {"image": [args[0]]}
    for flag, value in itertools.pairwise(args):
        if flag.startswith("--"):
            got.setdefault(flag, []).append(value.split("=", 1)[-1])
    return got


def test_readme_says_what_make_demo_predicts() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Two commands", 1)[1].split("```", 2)[1]
    demo = block[block.index("make demo") : block.index("make test")]
    run = demo_predict()
    for path in (*run["image"], *run["--modality"], *run["--model"], *run["--out"]):
        assert Path(path).name in demo, (path, demo)
    assert "models/demo" in demo and "RGB.byte" not in demo


def test_make_demo_says_what_to_open_next() -> None:
    run = demo_predict()
    out, image = Path(run["--out"][0]), Path(run["image"][0])
    said = "\n".join(ln for ln in demo_recipe() if ln.lstrip("@").startswith("echo"))
    written = output_paths(out, image.stem, PredictOptions())
    assert str(written["quicklook"]) in said
    assert f"qgis {out}/*.tif {written['vectors']}" in said
    notebook = re.search(r"notebooks/\S+\.ipynb", said)
    assert notebook and (REPO / notebook.group()).exists()
