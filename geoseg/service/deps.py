"""What the API's routes take from a request: the token's user (the auth dependency) and the
app's store, job manager, tile renderer and settings (``request.app.state``, set by
:func:`geoseg.service.api.create_app`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from geoseg.service.manager import JobManager
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import Store
from geoseg.service.tiles import Renderer

#: the security scheme of ``/openapi.json`` (a description, not state: tokens live in the store)
BEARER = HTTPBearer(auto_error=False, description="token from `geoseg serve token create`")


def app_settings(request: Request) -> ServiceSettings:
    """The server's settings."""
    return request.app.state.settings


def app_store(request: Request) -> Store:
    """The server's job store."""
    return request.app.state.store


def app_manager(request: Request) -> JobManager:
    """The server's job manager."""
    return request.app.state.manager


def app_renderer(request: Request) -> Renderer:
    """The server's map tile renderer."""
    return request.app.state.renderer


def current_user(request: Request,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> dict:  # fmt: skip
    """The user of the request's bearer token; 401 without a valid one."""
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(401, "missing bearer token: send Authorization: Bearer TOKEN "
                            "(create one with geoseg serve token create NAME --data DIR)",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    user = app_store(request).user_for_token(creds.credentials.strip())
    if user is None:
        raise HTTPException(401, "invalid or revoked token; create a new one with geoseg "
                            "serve token create NAME --data DIR",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return user


User = Annotated[dict, Depends(current_user)]
Settings = Annotated[ServiceSettings, Depends(app_settings)]
AppStore = Annotated[Store, Depends(app_store)]
Manager = Annotated[JobManager, Depends(app_manager)]
Render = Annotated[Renderer, Depends(app_renderer)]

__all__ = ["BEARER", "AppStore", "Manager", "Render", "Settings", "User", "current_user"]
