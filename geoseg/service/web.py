"""HTTP plumbing of the API: JSON bodies, errors as JSON ``{"detail": one line}`` with a
fitting status, security headers and CORS."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from geoseg.errors import GeosegError
from geoseg.service import scenes as S
from geoseg.service.access import AccessError
from geoseg.service.settings import ServiceSettings
from geoseg.service.store import StoreError

JSON_LIMIT = 1 << 20
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; worker-src 'self' blob:; child-src blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


class NotFound(LookupError):
    """Something the user asked for does not exist (for them)."""


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"detail": detail}`` with ``status``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def json_body(request: Request) -> Any:
    """The request's JSON body (at most 1 MiB)."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise GeosegError("send a JSON body with Content-Type: application/json")
    size = 0
    parts = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > JSON_LIMIT:
            raise S.UploadTooLarge("JSON body larger than 1 MiB; send less")
        parts.append(chunk)
    try:
        return json.loads(b"".join(parts) or b"null")
    except ValueError as exc:
        raise GeosegError(f"body: not valid JSON ({exc}); fix the syntax") from None


def install_errors(app: FastAPI) -> None:
    """Every error as JSON ``{"detail": one line}`` with a fitting status."""

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",))
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        return error_response(422, f"{loc}: {first.get('msg')}; fix this value{more}")

    # errors -> HTTP status; the message (one line naming the problem) is the JSON detail
    statuses = {S.UploadTooLarge: 413, AccessError: 403, NotFound: 404, LookupError: 404,
                StoreError: 503, GeosegError: 422}  # fmt: skip

    async def as_json(_: Request, exc: Exception) -> JSONResponse:
        status = next(code for cls, code in statuses.items() if isinstance(exc, cls))
        return error_response(status, str(exc.args[0]) if exc.args else "not found")

    for cls in statuses:
        app.add_exception_handler(cls, as_json)

    @app.exception_handler(OSError)
    async def os_error(_: Request, exc: OSError) -> JSONResponse:
        return error_response(503, f"the server cannot read or write its files ({exc.strerror or exc}); "
                      "check the data folder's free space and permissions")  # fmt: skip


def install_headers(app: FastAPI, settings: ServiceSettings) -> None:
    """Security headers on every response; CORS only for the origins given."""

    @app.middleware("http")
    async def secure(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                          "Range"])  # fmt: skip
