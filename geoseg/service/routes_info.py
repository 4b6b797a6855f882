"""``/api/v1/me``, ``/models``, ``/roots``: who the token is and what the server offers.

The endpoints have no docstrings: FastAPI would publish them as the operations' descriptions.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from geoseg.service.access import root_names
from geoseg.service.bundles import list_models
from geoseg.service.deps import Settings, User


async def me(user: User) -> dict[str, Any]:  # noqa: D103
    return {"name": user["name"]}


async def models(settings: Settings) -> list[dict[str, Any]]:  # noqa: D103
    return await run_in_threadpool(list_models, settings.models)


async def roots(settings: Settings) -> list[dict[str, str]]:  # noqa: D103
    return [{"name": n} for n in root_names(settings.allow_roots)]


def info_routes() -> APIRouter:
    """The routes, paths relative to ``/api/v1``."""
    router = APIRouter()
    router.add_api_route("/me", me, methods=["GET"], summary="Who the token belongs to")
    router.add_api_route("/models", models, methods=["GET"],
                         summary="Models offered, with their cards")  # fmt: skip
    router.add_api_route("/roots", roots, methods=["GET"],
                         summary="Allowed roots (scene paths are relative to one of these)")  # fmt: skip
    return router
