"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from api.routes import health, metrics, rigs
from daq import __version__
from daq.config import Settings
from daq.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """An app for ``settings``.

    With ``service`` given, the caller starts and stops it (``daq run`` does); without,
    the app builds one and runs it for its own lifetime.
    """
    owned = service is None
    service = service or Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if owned:
            await service.start()
        try:
            yield
        finally:
            if owned:
                await service.stop()

    app = FastAPI(title="rigdaq", version=__version__, lifespan=lifespan,
                  description="Test-data acquisition for screw presses and SR-motor test rigs.")
    app.state.service = service
    app.include_router(health.router)
    app.include_router(rigs.router)
    app.include_router(metrics.router)
    app.state.metrics = metrics.registry_for(service)

    @app.exception_handler(RequestValidationError)
    async def _bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems), "errors": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def operator_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
