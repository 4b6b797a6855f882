"""The service's settings (``geoseg serve`` flags) and the layout of its data folder."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator

from geoseg.config import StrictModel


class ServiceSettings(StrictModel):
    """What ``geoseg serve`` was started with; every path is made absolute."""

    host: str = Field("127.0.0.1", description="address to bind (loopback unless told otherwise)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    data: Path = Field(Path("geoseg-data"), description="job store, uploads, outputs, tile stores")
    models: Path = Field(Path("models"), description="folder of model bundles (and .onnx files)")
    allow_roots: tuple[Path, ...] = Field((), description="folders whose rasters may be registered")
    scheduler: str = Field("local", description='"local" (a LocalCluster of worker processes) or '
                           "tcp://HOST:PORT of an existing Dask cluster")
    max_jobs: int = Field(1, ge=1, description="jobs running at once; the others queue in order")
    workers: int | None = Field(None, ge=1, description="local cluster worker processes "
                                "(default 1, a thread per core; N share the cores)")
    tile_threads: int = Field(2, ge=1, le=64, description="map tiles rendered at once")
    tile_nice: int = Field(10, ge=0, le=19, description="OS priority of tile rendering below "
                           "the server's (Linux; 0: the same): a running job keeps its cores, "
                           "the map waits while it runs")
    max_upload_mb: float = Field(2048, gt=0, description="largest accepted upload (MiB)")
    max_pixels: int = Field(2_000_000_000, ge=1, description="largest scene accepted (pixels)")
    cors_origins: tuple[str, ...] = Field((), description="origins allowed by CORS (default: none)")

    @field_validator("data", "models")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return Path(os.path.abspath(os.path.expanduser(v)))

    @field_validator("allow_roots")
    @classmethod
    def _roots(cls, v: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(Path(os.path.realpath(os.path.expanduser(p))) for p in v)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v != "local" and not v.startswith(("tcp://", "tls://")):
            raise ValueError(f"scheduler {v!r}: use local or tcp://HOST:PORT")
        return v

    @property
    def db_path(self) -> Path:
        return self.data / "geoseg.db"

    @property
    def uploads(self) -> Path:
        return self.data / "uploads"

    @property
    def tiles_dir(self) -> Path:
        return self.data / "tiles"

    def job_dir(self, job_id: str) -> Path:
        """``DATA/jobs/<id>``: the job's outputs (``out/``) and its log (``job.log``)."""
        return self.data / "jobs" / job_id
