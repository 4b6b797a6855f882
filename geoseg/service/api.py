"""The HTTP API (``/api/v1``), the web page (``/``) and ``/health``: FastAPI.

Every endpoint but ``/health``, the page and its static files needs a bearer token; a user
sees only their own scenes and jobs (another user's are 404, as if they did not exist).
Errors are JSON ``{"detail": "one line: what is wrong; how to fix it"}``. The routes of
``/api/v1`` live in the ``routes_*`` modules and take the app's parts from ``deps``.
"""


import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from geoseg import __version__
from geoseg.service.deps import current_user
from geoseg.service.manager import JobManager
from geoseg.service.routes_info import info_routes
from geoseg.service.routes_jobs import job_routes
from geoseg.service.routes_maps import map_routes
from geoseg.service.routes_scenes import scene_routes
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import Store, open_store
from geoseg.service.tiles import Renderer
from geoseg.service.web import install_errors, install_headers

STATIC = Path(__file__).parent / "static"


def create_app(settings: ServiceSettings) -> FastAPI:
    """The application of one server: store, job manager, routes."""
    store = open_store(settings.data)
    manager = JobManager(settings, store)
    manager.lock_data()  # a second server on this data folder stops here, with one line
    render = Renderer(settings.tile_threads, settings.tile_nice)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        manager.start()
        yield
        await asyncio.to_thread(manager.stop)
        render.close()
        store.close()

    app = FastAPI(title="geoseg", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json",
                  description="Segmentation jobs over HTTP: register scenes, submit the predict "
                  "job, follow it, view and download its outputs.")  # fmt: skip
    app.state.settings, app.state.store, app.state.manager = settings, store, manager
    app.state.renderer = render
    install_errors(app)
    install_headers(app, settings)

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user)])
    # in this order: it is the order routes are matched in, and that of /openapi.json
    for routes in (info_routes, scene_routes, job_routes, map_routes):
        api.include_router(routes())
    app.include_router(api)

    @app.get("/health", summary="Liveness (no token needed)")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "cluster": manager.status()}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


__all__ = ["Store", "create_app"]
