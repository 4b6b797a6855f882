"""The field pipeline steps (field_polygons, field_stats) on generated rasters: a 3-class map
drawn by the test, a 4-band image of random values on the same grid, a catalog naming its
roles; a stand-in ``predict`` step hands the class raster on as ``@predict`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pytest
import yaml

from geoseg.fields.fiboa import validate_fiboa
from geoseg.pipeline.base import PipelineContext, StepBase, StepOutcome
from geoseg.pipeline.pipeline import load_pipeline, register_step
from tests.fields.test_polygons import _draw
from tests.support import write_geotiff


class FakePredict(StepBase):
    """Outputs {"classes": {scene id: class raster}} like the predict step."""

    type: Literal["fake_predict"] = "fake_predict"
    classes: dict[str, str]

    def run(self, ctx: PipelineContext) -> StepOutcome:
        return StepOutcome(outputs={"classes": {k: str(ctx.path(v)) for k, v in self.classes.items()}})


def test_field_steps_delineate_and_measure_every_scene(tmp_path) -> None:
    register_step("fake_predict", FakePredict)
    write_geotiff(tmp_path / "plot_classes.tif", _draw()[None])
    rng = np.random.default_rng(0)
    write_geotiff(tmp_path / "plot.tif", rng.integers(100, 4000, (4, 70, 90)).astype(np.uint16))
    catalog = {"version": 1, "scenes": [{"id": "plot", "modalities": {"image": {
        "path": "plot.tif", "roles": ["blue", "green", "red", "nir"]}}}]}
    (tmp_path / "cat.yaml").write_text(yaml.safe_dump(catalog))
    pipeline = {"version": 1, "name": "fields", "catalog": "cat.yaml", "workdir": "work",
                "steps": [
                    {"type": "fake_predict", "name": "predict",
                     "classes": {"plot": "plot_classes.tif"}},
                    {"type": "field_polygons", "prediction": "@predict", "chunk": 32},
                    {"type": "field_stats", "fields": "@field_polygons", "prediction": "@predict",
                     "indices": ["ndvi"], "scale": 0.0001, "percentiles": [50]}]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline))
    result = load_pipeline(tmp_path / "p.yaml").run(progress=False)
    assert result.ok
    fields = tmp_path / "work" / "field_polygons" / "plot_fields.parquet"
    stats = tmp_path / "work" / "field_stats" / "plot_field_stats.parquet"
    assert validate_fiboa(fields) == []
    g = gpd.read_parquet(stats).sort_values("id")
    assert list(g.id) == ["1", "2", "3"] and (g.status == "ok").all()
    # grown into their boundaries, the fields hold interior and boundary pixels, no background
    assert (g.frac_class_0 == 0).all() and (g.frac_class_1 > 0.8).all()
    np.testing.assert_allclose(g[["frac_class_0", "frac_class_1", "frac_class_2"]].sum(axis=1), 1)
    assert g.ndvi_mean.notna().all() and "ndvi_p50" in g


@pytest.mark.parametrize("name", ["ftw-fields.yaml", "vineyard.yaml"])
def test_shipped_agriculture_pipelines_validate(name: str) -> None:
    pipe = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / name)
    train = next(s for s in pipe.steps if s.type == "train")
    assert {"smoke", "full"} <= set(train.profiles)
    for profile in train.profiles:
        train.config(profile)  # every profile is a valid configuration
    smoke = train.config("smoke")
    assert smoke.device == "cpu" and smoke.steps <= 50
    if name == "ftw-fields.yaml":
        assert smoke.modalities == ["window_a", "window_b"]
        full = train.config("full")
        assert full.model.arguments["encoder"] == "efficientnet-b3"
        assert full.loss.class_weights == [0.04, 0.08, 0.88]
        assert [s.type for s in pipe.steps] == ["train", "predict", "field_polygons", "field_stats"]
    else:
        assert train.config("full").indices["vi"].indices == ["ndvi", "ndre", "gndvi"]
