"""``/api/v1/jobs``: submit, list, follow (Server-Sent Events) and cancel jobs; their files and
logs.

The endpoints have no docstrings: FastAPI would publish them as the operations' descriptions.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from geoseg.service import jobs as J
from geoseg.service.deps import AppStore, Manager, Settings, User
from geoseg.service.manager import job_log
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import FINAL, Store
from geoseg.service.web import NotFound, json_body

MEDIA = {".tif": "image/tiff", ".gpkg": "application/geopackage+sqlite3",
         ".parquet": "application/vnd.apache.parquet", ".qml": "application/xml",
         ".json": "application/json", ".png": "image/png", ".log": "text/plain"}  # fmt: skip
SUBMIT = ("Body: {model, scene | scenes | catalog, options}; options are geoseg predict's (same "
          "names, same validation). An Idempotency-Key header returns the job submitted with "
          "that key before (200) instead of a new one.")  # fmt: skip
CANCEL = ("A queued job is cancelled at once; a running one stops taking chunks within seconds "
          "(finished chunks stay: resubmitting resumes).")  # fmt: skip


def own_job(store: Store, job_id: str, user: dict) -> dict[str, Any]:
    """The user's job ``job_id``; another user's is 404, as if it did not exist."""
    job = store.job(job_id, user["id"])
    if job is None:
        raise NotFound(f"job {job_id!r}: no such job (GET /api/v1/jobs lists yours)")
    return job


def files_of(settings: ServiceSettings, job: dict[str, Any]) -> dict[str, Path]:
    """The job's downloadable files by name."""
    return J.job_files(settings.job_dir(job["id"]) / "out")


def with_links(view: dict[str, Any]) -> dict[str, Any]:
    """``view`` with the URLs of the job's events, files, log and map tiles."""
    base = f"/api/v1/jobs/{view['id']}"
    view["links"] = {"self": base, "events": f"{base}/events", "files": f"{base}/files",
                     "log": f"{base}/log", "tiles": f"{base}/tiles/{{z}}/{{x}}/{{y}}.png"}  # fmt: skip
    return view


async def submit(request: Request, response: Response, user: User, store: AppStore,  # noqa: D103
                 settings: Settings, manager: Manager,
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


async def list_jobs(user: User, store: AppStore) -> list[dict[str, Any]]:  # noqa: D103
    return [with_links(J.job_view(j)) for j in store.jobs(user["id"])]


async def get_job(job_id: str, user: User, store: AppStore) -> dict[str, Any]:  # noqa: D103
    return with_links(J.job_view(own_job(store, job_id, user)))


async def cancel(job_id: str, user: User, store: AppStore, manager: Manager) -> dict[str, Any]:  # noqa: D103
    job = own_job(store, job_id, user)
    if job["state"] in FINAL:
        raise HTTPException(409, f"job {job_id}: already {job['state']}; nothing to cancel")
    now = time.time()
    if not store.set_job(job_id, only_if=("queued",), state="cancelled", finished=now,
                         cancel_requested=True):  # fmt: skip
        store.set_job(job_id, only_if=("running",), cancel_requested=True)
        manager.wake()  # its runner is told now
    return with_links(J.job_view(own_job(store, job_id, user)))


async def events(job_id: str, request: Request, user: User, store: AppStore) -> StreamingResponse:  # noqa: D103
    own_job(store, job_id, user)
    return StreamingResponse(_progress_events(store, job_id, user["id"], request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


async def _progress_events(store: Store, job_id: str, user_id: int,
                           request: Request) -> AsyncIterator[str]:  # fmt: skip
    """``progress`` at each change (keep-alives in between), ``end`` once the job is final."""
    last, quiet = None, time.monotonic()
    while True:
        job = await run_in_threadpool(store.job, job_id, user_id)
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


async def list_files(job_id: str, user: User, store: AppStore,  # noqa: D103
                     settings: Settings) -> list[dict[str, Any]]:  # fmt: skip
    files = files_of(settings, own_job(store, job_id, user))
    return [{"name": n, "size": p.stat().st_size, "url": f"/api/v1/jobs/{job_id}/files/{n}"}
            for n, p in files.items()]  # fmt: skip


async def get_file(job_id: str, name: str, user: User, store: AppStore,  # noqa: D103
                   settings: Settings) -> FileResponse:  # fmt: skip
    files = files_of(settings, own_job(store, job_id, user))
    if name not in files:  # only names the job's own listing holds: no path from the request
        raise NotFound(f"file {name!r}: not a file of job {job_id} (see its files)")
    path = files[name]
    kind = MEDIA.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or \
        "application/octet-stream"
    return FileResponse(path, media_type=kind, filename=path.name)


async def get_log(job_id: str, user: User, store: AppStore, settings: Settings) -> PlainTextResponse:  # noqa: D103
    own_job(store, job_id, user)
    path = job_log(settings, job_id)
    if not path.is_file():
        return PlainTextResponse("")
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - (1 << 20)))
        return PlainTextResponse(fh.read().decode("utf-8", "replace"))


def job_routes() -> APIRouter:
    """The routes, paths relative to ``/api/v1``."""
    router = APIRouter()
    add = router.add_api_route
    add("/jobs", submit, methods=["POST"], status_code=202, summary="Submit a job",
        description=SUBMIT)  # fmt: skip
    add("/jobs", list_jobs, methods=["GET"], summary="Your jobs, in submission order")
    add("/jobs/{job_id}", get_job, methods=["GET"], summary="A job: state, progress, timings, error")
    add("/jobs/{job_id}", cancel, methods=["DELETE"], status_code=202, summary="Cancel a job",
        description=CANCEL)  # fmt: skip
    add("/jobs/{job_id}/events", events, methods=["GET"], response_class=StreamingResponse,
        summary="Server-Sent Events: the job's progress")  # fmt: skip
    add("/jobs/{job_id}/files", list_files, methods=["GET"], summary="The job's files")
    add("/jobs/{job_id}/files/{name:path}", get_file, methods=["GET", "HEAD"],
        summary="Download a file (Range requests work)", response_class=FileResponse)  # fmt: skip
    add("/jobs/{job_id}/log", get_log, methods=["GET"], summary="The job's log",
        response_class=PlainTextResponse)  # fmt: skip
    return router
