"""Running the service: uvicorn serving :func:`geoseg.service.api.create_app` in this process."""

from __future__ import annotations

import logging
import sys

from geoseg.service.settings import ServiceSettings

log = logging.getLogger(__name__)


def serve(settings: ServiceSettings) -> None:
    """Serve until interrupted (Ctrl-C: running jobs go back to the queue and resume at the
    next start; so does a killed server's)."""
    import uvicorn

    from geoseg.service.api import create_app

    settings.data.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the service is reachable from other machines; put it behind "
                    "TLS (a reverse proxy) — tokens travel in every request", settings.host)  # fmt: skip
    print(f"geoseg serve: http://{settings.host}:{settings.port}/ (data {settings.data}, models "
          f"{settings.models}, scheduler {settings.scheduler})", file=sys.stderr, flush=True)  # fmt: skip
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=15,
                timeout_keep_alive=30)  # map clients reuse connections: fewer close races  # fmt: skip
