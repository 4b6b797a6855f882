"""A done job's outputs on the map: ``/api/v1/jobs/{id}/tiles`` (the class raster as XYZ tiles)
and ``/features`` (the polygons at a point).

The endpoints have no docstrings: FastAPI would publish them as the operations' descriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from geoseg.service.deps import AppStore, Render, Settings, User
from geoseg.service.routes_jobs import files_of, own_job
from geoseg.service.settings import ServiceSettings
from geoseg.service.tiles import class_tile, features_at
from geoseg.service.web import NotFound


def scene_output(settings: ServiceSettings, job: dict[str, Any], scene: str | None,
                 key: str) -> Path:  # fmt: skip
    """The ``key`` output (classes, vectors...) of one scene of a done job (default: its first)."""
    results = (job["result"] or {}).get("scenes", [])
    if job["state"] != "done" or not results:
        raise NotFound(f"job {job['id']}: no outputs yet (state {job['state']}); wait for done")
    match = [r for r in results if scene in (None, r["name"])]
    if not match:
        raise NotFound(f"scene {scene!r}: not a scene of job {job['id']}; choose one of "
                       f"{[r['name'] for r in results]}")  # fmt: skip
    rel = match[0].get("outputs", {}).get(key)
    path = files_of(settings, job).get(rel or "")
    if path is None:
        raise NotFound(f"job {job['id']}: no {key} output for scene {match[0]['name']!r}")
    return path


async def job_tiles(job_id: str, z: int, x: int, y: int, user: User, store: AppStore,  # noqa: D103
                    settings: Settings, render: Render, scene: str | None = None) -> Response:  # fmt: skip
    job = own_job(store, job_id, user)
    path = scene_output(settings, job, scene, "classes")
    png = await render(class_tile, str(path), job["spec"]["classes"], z, x, y)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


async def features(job_id: str, user: User, lon: Annotated[float, Query(ge=-180, le=180)],  # noqa: D103
                   lat: Annotated[float, Query(ge=-90, le=90)], store: AppStore,
                   settings: Settings, scene: str | None = None) -> dict[str, Any]:  # fmt: skip
    job = own_job(store, job_id, user)
    path = scene_output(settings, job, scene, "vectors")
    return await run_in_threadpool(features_at, path, lon, lat)


def map_routes() -> APIRouter:
    """The routes, paths relative to ``/api/v1``."""
    router = APIRouter()
    router.add_api_route("/jobs/{job_id}/tiles/{z}/{x}/{y}.png", job_tiles, methods=["GET"],
                         summary="XYZ tile of the class raster", response_class=Response,
                         responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    router.add_api_route("/jobs/{job_id}/features", features, methods=["GET"],
                         summary="Polygons at a point (GeoJSON, WGS 84)")  # fmt: skip
    return router
