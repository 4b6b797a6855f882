"""Notebooks run top to bottom (committed without outputs)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


#: training steps of the training notebooks under test: they must run, not reach their figures
STEPS = "40"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("GEOSEG_NOTEBOOK_STEPS", STEPS)  # the kernel inherits the environment

    nb = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs"  # fmt: skip
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # fmt: skip
    # figures must render inline: nothing geoseg runs may switch matplotlib's backend
    plots = [c for c in nb.cells if c.cell_type == "code" and "plt." in c.source]
    for cell in plots:
        shown = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert shown, f"{path.name}: a plotting cell shows no figure:\n{cell.source[:200]}"
