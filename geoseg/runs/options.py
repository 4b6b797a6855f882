"""The options of a prediction run: one strict model shared by the CLI, pipelines and evaluate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from geoseg.config import StrictModel

VECTOR_EXT = {"gpkg": ".gpkg", "shp": ".shp", "parquet": ".parquet", "fgb": ".fgb"}


class PredictOptions(StrictModel):
    """Settings of one prediction run (CLI flags, pipeline keys and service fields share these
    names; ``geoseg.cli.options`` generates the flags from the fields)."""

    tile: int | None = Field(None, description="model tile size (default: the bundle's)")
    overlap: int | None = Field(None, description="tile overlap px (default: the bundle's halo, "
                                "at most tile/4)")
    chunk: int | None = Field(None, ge=16, description="output chunk size in pixels (default: "
                              "1024, smaller for small scenes so every worker has work)")
    batch: int | None = Field(None, ge=1, description="tiles per model call (default: 1 on "
                              "CPU; on CUDA as many as 75 % of the free GPU memory holds, "
                              "at most 32, measured once the model is loaded; 8 on a Dask cluster)")
    device: str = Field("cpu", description="cpu or cuda (cuda:N)")
    amp: bool = Field(True, description="autocast (bf16/fp16) on CUDA")
    compile: bool = Field(False, description="run the model through torch.compile: the first "
                          "batch of each tile shape compiles it (minutes); if compiling fails, "
                          "a warning and the model runs uncompiled")
    workers: int | None = Field(None, ge=1, description="parallel chunk tasks (default: cores)")
    bands: Sequence[int | str] | None = Field(None, description="bands of IMAGE feeding the model, "
                                              "e.g. 1,2,3 or red,green,blue")
    modality_bands: Mapping[str, Sequence[int | str]] = Field(
        default_factory=dict, description="bands of a modality: NAME=1,2 or NAME=elev (repeatable)")
    probabilities: bool = Field(False, description="also write the per-class probability COG")
    confidence: bool = Field(True, description="write the confidence COG")
    vector: Literal["gpkg", "shp", "parquet", "fgb", "none"] = Field(
        "gpkg", description="polygon layer format")
    polygons_when: Literal["auto", "during", "after"] = Field(
        "auto", description="vectorise chunk rows during inference, as they are stored, or after "
        "it; auto: during with a GPU or a remote cluster (a core is free), after on the CPU "
        "(the model keeps every core busy: measured +4 % wall when overlapped)")
    min_area: float = Field(0.0, ge=0, description="drop polygons smaller than this (m²)")
    simplify: float = Field(0.0, ge=0, description="simplification tolerance (CRS units)")
    resume: bool = Field(True, description="continue from the finished chunks of the same run")
    overwrite: bool = Field(False, description="recompute even if the run is finished")
    wait: bool = Field(False, description="when the same run (same tile store) is running "
                       "elsewhere, wait for it instead of exiting")
    tiles_dir: Path = Field(Path("tiles"), description="tile store workspace")
    progress: bool = Field(True, description="progress bars")
    scheduler: str | None = Field(
        None, description='Dask scheduler address (tcp://host:port), or "local" for a '
        "LocalCluster of worker processes; default: threads in this process")
