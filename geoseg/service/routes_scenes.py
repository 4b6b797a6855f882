"""``/api/v1/scenes``: register or upload a scene, list yours, one of them, its map tiles.

The endpoints have no docstrings: FastAPI would publish them as the operations' descriptions.
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from geoseg.service import scenes as S
from geoseg.service.deps import AppStore, Render, Settings, User
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import Store
from geoseg.service.tiles import scene_tile
from geoseg.service.web import NotFound, json_body

ADD_SCENE = ("JSON: {path, root?, modalities?} with paths relative to an allowed root, {url} "
             "(https:// or s3://) or {stac_item}. Upload: the GeoTIFF as the body (Content-Type "
             "image/tiff or application/octet-stream, ?name=) or as the multipart/form-data "
             "field 'file'.")  # fmt: skip


def scene_view(scene: dict[str, Any]) -> dict[str, Any]:
    """A scene as the API returns it."""
    info = scene["info"]
    return {"id": scene["id"], "name": scene["name"], "kind": scene["kind"],
            "modalities": list(scene["modalities"]), "created": scene["created"],
            "width": info["width"], "height": info["height"], "count": info["count"],
            "dtype": info["dtype"], "crs": info["crs"], "bounds": info["bounds"],
            "tiles": f"/api/v1/scenes/{scene['id']}/tiles/{{z}}/{{x}}/{{y}}.png"}  # fmt: skip


def own_scene(store: Store, scene_id: str, user: dict) -> dict[str, Any]:
    """The user's scene ``scene_id``; another user's is 404, as if it did not exist."""
    scene = store.scene(user["id"], scene_id)
    if scene is None:
        raise NotFound(f"scene {scene_id!r}: no such scene (GET /api/v1/scenes lists yours)")
    return scene


async def add_scene(request: Request, user: User, store: AppStore, settings: Settings,  # noqa: D103
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
    return scene_view(await _upload_scene(request, ctype, name, user, store, settings))


async def _upload_scene(request: Request, ctype: str, name: str | None, user: dict, store: Store,
                        settings: ServiceSettings) -> dict[str, Any]:  # fmt: skip
    """The uploaded GeoTIFF of the request's body, stored as a new scene (or nothing left)."""
    limit = int(settings.max_upload_mb * 2**20)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise S.UploadTooLarge(f"upload: {int(declared) / 2**20:.0f} MiB is larger than this "
                               f"server's limit of {settings.max_upload_mb:.0f} MiB; register "
                               "the file by path or URL instead")  # fmt: skip
    sid, path = await S.receive_upload(request.stream(), ctype, settings.uploads, name, limit)
    try:
        info = await run_in_threadpool(S.accept_upload, path, settings.max_pixels)
        return store.add_scene(user["id"], name or path.stem, "upload",
                               {S.MAIN: {"path": str(path)}}, info, scene_id=sid)  # fmt: skip
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise


async def scenes(user: User, store: AppStore) -> list[dict[str, Any]]:  # noqa: D103
    return [scene_view(s) for s in store.scenes(user["id"])]


async def scene(scene_id: str, user: User, store: AppStore) -> dict[str, Any]:  # noqa: D103
    return scene_view(own_scene(store, scene_id, user))


async def scene_tiles(scene_id: str, z: int, x: int, y: int, user: User, store: AppStore,  # noqa: D103
                      render: Render) -> Response:  # fmt: skip
    sc = own_scene(store, scene_id, user)
    main = next(iter(sc["modalities"].values()))["path"]
    info = sc["info"]
    png = await render(scene_tile, main, info["display_bands"], info["stretch"], z, x, y)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})


def scene_routes() -> APIRouter:
    """The routes, paths relative to ``/api/v1``."""
    router = APIRouter()
    router.add_api_route("/scenes", add_scene, methods=["POST"], status_code=201,
                         summary="Register a scene (JSON) or upload a GeoTIFF",
                         description=ADD_SCENE)  # fmt: skip
    router.add_api_route("/scenes", scenes, methods=["GET"], summary="Your scenes")
    router.add_api_route("/scenes/{scene_id}", scene, methods=["GET"], summary="One of your scenes")
    router.add_api_route("/scenes/{scene_id}/tiles/{z}/{x}/{y}.png", scene_tiles, methods=["GET"],
                         summary="XYZ tile of a scene", response_class=Response,
                         responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    return router
