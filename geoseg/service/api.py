"""The HTTP API (``/api/v1``), the web page (``/``) and ``/health``: FastAPI.

Every endpoint but ``/health``, the page and its static files needs a bearer token; a user
sees only their own scenes and jobs (another user's are 404, as if they did not exist).
Errors are JSON ``{"detail": "one line: what is wrong; how to fix it"}``.
"""


import asyncio
import json
import mimetypes
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from geoseg import __version__
from geoseg.service import jobs as J
from geoseg.service import scenes as S
from geoseg.service.access import root_names
from geoseg.service.bundles import list_models
from geoseg.service.manager import JobManager, job_log
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import FINAL, Store, open_store
from geoseg.service.tiles import Renderer, class_tile, features_at, scene_tile
from geoseg.service.web import NotFound, install_errors, install_headers, json_body

STATIC = Path(__file__).parent / "static"


MEDIA = {".tif": "image/tiff", ".gpkg": "application/geopackage+sqlite3",
         ".parquet": "application/vnd.apache.parquet", ".qml": "application/xml",
         ".json": "application/json", ".png": "image/png", ".log": "text/plain"}  # fmt: skip


def create_app(settings: ServiceSettings) -> FastAPI:
    """The application of one server: store, job manager, routes."""
    store = open_store(settings.data)
    manager = JobManager(settings, store)
    manager.lock_data()  # a second server on this data folder stops here, with one line
    bearer = HTTPBearer(auto_error=False, description="token from `geoseg serve token create`")
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
    install_errors(app)
    install_headers(app, settings)

    def current_user(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> dict:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HTTPException(401, "missing bearer token: send Authorization: Bearer TOKEN "
                                "(create one with geoseg serve token create NAME --data DIR)",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        user = store.user_for_token(creds.credentials.strip())
        if user is None:
            raise HTTPException(401, "invalid or revoked token; create a new one with geoseg "
                                "serve token create NAME --data DIR",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return user

    User = Annotated[dict, Depends(current_user)]
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user)])

    def own_job(job_id: str, user: dict) -> dict[str, Any]:
        job = store.job(job_id, user["id"])
        if job is None:
            raise NotFound(f"job {job_id!r}: no such job (GET /api/v1/jobs lists yours)")
        return job

    def with_links(view: dict[str, Any]) -> dict[str, Any]:
        base = f"/api/v1/jobs/{view['id']}"
        view["links"] = {"self": base, "events": f"{base}/events", "files": f"{base}/files",
                         "log": f"{base}/log", "tiles": f"{base}/tiles/{{z}}/{{x}}/{{y}}.png"}  # fmt: skip
        return view

    # ------------------------------------------------------------------ models, roots

    @api.get("/me", summary="Who the token belongs to")
    async def me(user: User) -> dict[str, Any]:
        return {"name": user["name"]}

    @api.get("/models", summary="Models offered, with their cards")
    async def models() -> list[dict[str, Any]]:
        return await run_in_threadpool(list_models, settings.models)

    @api.get("/roots", summary="Allowed roots (scene paths are relative to one of these)")
    async def roots() -> list[dict[str, str]]:
        return [{"name": n} for n in root_names(settings.allow_roots)]

    # ------------------------------------------------------------------ scenes

    def scene_view(scene: dict[str, Any]) -> dict[str, Any]:
        info = scene["info"]
        return {"id": scene["id"], "name": scene["name"], "kind": scene["kind"],
                "modalities": list(scene["modalities"]), "created": scene["created"],
                "width": info["width"], "height": info["height"], "count": info["count"],
                "dtype": info["dtype"], "crs": info["crs"], "bounds": info["bounds"],
                "tiles": f"/api/v1/scenes/{scene['id']}/tiles/{{z}}/{{x}}/{{y}}.png"}  # fmt: skip

    @api.post("/scenes", status_code=201, summary="Register a scene (JSON) or upload a GeoTIFF",
              description="JSON: {path, root?, modalities?} with paths relative to an allowed "
              "root, {url} (https:// or s3://) or {stac_item}. Upload: the GeoTIFF as the body "
              "(Content-Type image/tiff or application/octet-stream, ?name=) or as the "
              "multipart/form-data field 'file'.")  # fmt: skip
    async def add_scene(request: Request, user: User,
                        name: Annotated[str | None, Query(max_length=100)] = None,
                        ) -> dict[str, Any]:  # fmt: skip
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            req = S.parse_scene_request(await json_body(request))
            label, kind, mods = await run_in_threadpool(S.scene_from_request, req,
                                                        settings.allow_roots)  # fmt: skip
            info = await run_in_threadpool(S.describe_scene, mods, settings.max_pixels)
            scene = store.add_scene(user["id"], label, kind, mods, info)
            return scene_view(scene)
        limit = int(settings.max_upload_mb * 2**20)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise S.UploadTooLarge(f"upload: {int(declared) / 2**20:.0f} MiB is larger than this "
                                   f"server's limit of {settings.max_upload_mb:.0f} MiB; register "
                                   "the file by path or URL instead")  # fmt: skip
        sid, path = await S.receive_upload(request.stream(), ctype, settings.uploads, name, limit)
        try:
            info = await run_in_threadpool(S.accept_upload, path, settings.max_pixels)
            scene = store.add_scene(user["id"], name or path.stem, "upload",
                                    {S.MAIN: {"path": str(path)}}, info, scene_id=sid)  # fmt: skip
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        return scene_view(scene)

    @api.get("/scenes", summary="Your scenes")
    async def scenes(user: User) -> list[dict[str, Any]]:
        return [scene_view(s) for s in store.scenes(user["id"])]

    def own_scene(scene_id: str, user: dict) -> dict[str, Any]:
        scene = store.scene(user["id"], scene_id)
        if scene is None:
            raise NotFound(f"scene {scene_id!r}: no such scene (GET /api/v1/scenes lists yours)")
        return scene

    @api.get("/scenes/{scene_id}", summary="One of your scenes")
    async def scene(scene_id: str, user: User) -> dict[str, Any]:
        return scene_view(own_scene(scene_id, user))

    @api.get("/scenes/{scene_id}/tiles/{z}/{x}/{y}.png", summary="XYZ tile of a scene",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    async def scene_tiles(scene_id: str, z: int, x: int, y: int,
                          user: User) -> Response:  # fmt: skip
        sc = own_scene(scene_id, user)
        main = next(iter(sc["modalities"].values()))["path"]
        info = sc["info"]
        png = await render(scene_tile, main, info["display_bands"], info["stretch"], z, x, y)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    # ------------------------------------------------------------------ jobs

    @api.post("/jobs", status_code=202, summary="Submit a job",
              description="Body: {model, scene | scenes | catalog, options}; options are "
              "geoseg predict's (same names, same validation). An Idempotency-Key header "
              "returns the job submitted with that key before (200) instead of a new one.")  # fmt: skip
    async def submit(request: Request, response: Response, user: User,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                     ) -> dict[str, Any]:  # fmt: skip
        if idempotency_key is not None:
            old = store.job_by_key(user["id"], idempotency_key)
            if old is not None:
                response.status_code = 200
                return with_links(J.job_view(old))
        req = J.parse_job_request(await json_body(request))
        spec = await run_in_threadpool(J.resolve_job, req, user["id"], settings,
                                       lambda sid: store.scene(user["id"], sid))  # fmt: skip
        job, new = store.add_job(user["id"], spec, idempotency_key)
        if new:
            manager.wake()  # it starts now if a slot is free, not at the next poll
        else:
            response.status_code = 200
        response.headers["Location"] = f"/api/v1/jobs/{job['id']}"
        return with_links(J.job_view(job))

    @api.get("/jobs", summary="Your jobs, in submission order")
    async def list_jobs(user: User) -> list[dict[str, Any]]:
        return [with_links(J.job_view(j)) for j in store.jobs(user["id"])]

    @api.get("/jobs/{job_id}", summary="A job: state, progress, timings, error")
    async def get_job(job_id: str, user: User) -> dict[str, Any]:
        return with_links(J.job_view(own_job(job_id, user)))

    @api.delete("/jobs/{job_id}", status_code=202, summary="Cancel a job",
                description="A queued job is cancelled at once; a running one stops taking "
                "chunks within seconds (finished chunks stay: resubmitting resumes).")  # fmt: skip
    async def cancel(job_id: str, user: User) -> dict[str, Any]:
        job = own_job(job_id, user)
        if job["state"] in FINAL:
            raise HTTPException(409, f"job {job_id}: already {job['state']}; nothing to cancel")
        now = time.time()
        if not store.set_job(job_id, only_if=("queued",), state="cancelled", finished=now,
                             cancel_requested=True):  # fmt: skip
            store.set_job(job_id, only_if=("running",), cancel_requested=True)
            manager.wake()  # its runner is told now
        return with_links(J.job_view(own_job(job_id, user)))

    @api.get("/jobs/{job_id}/events", summary="Server-Sent Events: the job's progress",
             response_class=StreamingResponse)  # fmt: skip
    async def events(job_id: str, request: Request, user: User):
        own_job(job_id, user)

        async def stream() -> AsyncIterator[str]:
            last, quiet = None, time.monotonic()
            while True:
                job = await run_in_threadpool(store.job, job_id, user["id"])
                if job is None:
                    return
                view = J.job_view(job)
                state = {k: view[k] for k in ("id", "state", "cancelling", "progress", "error")}
                payload = json.dumps({**state, "elapsed_s": view["elapsed_s"]})
                key = json.dumps({**state, "progress": {k: v for k, v in state["progress"].items()
                                                        if k != "updated"}})  # fmt: skip
                if key != last:
                    last, quiet = key, time.monotonic()
                    yield f"event: progress\ndata: {payload}\n\n"
                elif time.monotonic() - quiet > 15:
                    quiet = time.monotonic()
                    yield ": keep-alive\n\n"
                if job["state"] in FINAL:
                    yield f"event: end\ndata: {payload}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def files_of(job: dict[str, Any]) -> dict[str, Path]:
        return J.job_files(settings.job_dir(job["id"]) / "out")

    @api.get("/jobs/{job_id}/files", summary="The job's files")
    async def list_files(job_id: str, user: User) -> list[dict[str, Any]]:
        files = files_of(own_job(job_id, user))
        return [{"name": n, "size": p.stat().st_size, "url": f"/api/v1/jobs/{job_id}/files/{n}"}
                for n, p in files.items()]  # fmt: skip

    @api.api_route("/jobs/{job_id}/files/{name:path}", methods=["GET", "HEAD"],
                   summary="Download a file (Range requests work)", response_class=FileResponse)
    async def get_file(job_id: str, name: str, user: User) -> FileResponse:
        files = files_of(own_job(job_id, user))
        if name not in files:  # only names the job's own listing holds: no path from the request
            raise NotFound(f"file {name!r}: not a file of job {job_id} (see its files)")
        path = files[name]
        kind = MEDIA.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or \
            "application/octet-stream"
        return FileResponse(path, media_type=kind, filename=path.name)

    @api.get("/jobs/{job_id}/log", summary="The job's log", response_class=PlainTextResponse)
    async def get_log(job_id: str, user: User) -> PlainTextResponse:
        own_job(job_id, user)
        path = job_log(settings, job_id)
        if not path.is_file():
            return PlainTextResponse("")
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - (1 << 20)))
            return PlainTextResponse(fh.read().decode("utf-8", "replace"))

    def scene_output(job: dict[str, Any], scene: str | None, key: str) -> Path:
        results = (job["result"] or {}).get("scenes", [])
        if job["state"] != "done" or not results:
            raise NotFound(f"job {job['id']}: no outputs yet (state {job['state']}); wait for done")
        match = [r for r in results if scene in (None, r["name"])]
        if not match:
            raise NotFound(f"scene {scene!r}: not a scene of job {job['id']}; choose one of "
                           f"{[r['name'] for r in results]}")  # fmt: skip
        rel = match[0].get("outputs", {}).get(key)
        path = files_of(job).get(rel or "")
        if path is None:
            raise NotFound(f"job {job['id']}: no {key} output for scene {match[0]['name']!r}")
        return path

    @api.get("/jobs/{job_id}/tiles/{z}/{x}/{y}.png", summary="XYZ tile of the class raster",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    async def job_tiles(job_id: str, z: int, x: int, y: int, user: User,
                        scene: str | None = None) -> Response:  # fmt: skip
        job = own_job(job_id, user)
        path = scene_output(job, scene, "classes")
        png = await render(class_tile, str(path), job["spec"]["classes"], z, x, y)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/jobs/{job_id}/features", summary="Polygons at a point (GeoJSON, WGS 84)")
    async def features(job_id: str, user: User, lon: Annotated[float, Query(ge=-180, le=180)],
                       lat: Annotated[float, Query(ge=-90, le=90)],
                       scene: str | None = None) -> dict[str, Any]:  # fmt: skip
        job = own_job(job_id, user)
        path = scene_output(job, scene, "vectors")
        return await run_in_threadpool(features_at, path, lon, lat)

    app.include_router(api)

    # ------------------------------------------------------------------ page, health

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
