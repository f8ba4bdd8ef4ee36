"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import OperationalError

from api.auth import COOKIE, identify
from api.routes import alarms, audit, cycles, health, keys, live, metrics, rigs, runs, signatures
from api.routes import export as run_export
from daq import __version__
from daq.config import Settings
from daq.service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: what /static/<name> serves (scripts, styles, images; the pages themselves only through "/")
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


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
    # an acquisition agent (daq agent) serves only its health and metrics; daq run and daq api serve all
    agent = service.role == "agent"
    routers = (health, metrics) if agent else (health, rigs, live, runs, cycles, keys, metrics, alarms,
                                               signatures, audit, run_export)
    for r in routers:
        app.include_router(r.router)
    app.state.metrics = metrics.registry_for(service)
    app.state.metrics.register(alarms.AlarmCollector(service))

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

    @app.exception_handler(OperationalError)
    async def _catalogue_away(request: Request, exc: OperationalError) -> JSONResponse:
        first = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:200]
        log.warning("catalogue unavailable serving %s: %s", request.url.path, first)
        return JSONResponse({"detail": f"the catalogue is unavailable ({first}); try again shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    if agent:
        return _schema_built(app)

    @app.get("/", include_in_schema=False)
    async def operator_page(request: Request) -> FileResponse:
        """The operator page; without an operator key (cookie or header) a sign-in page, 401."""
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        who = await identify(request.app, key)
        if who is None:
            return FileResponse(STATIC / "login.html", status_code=401)
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_asset(name: str) -> FileResponse:
        """The page's scripts and styles (api/static, no subfolders): served without a key, they hold no data."""
        path = STATIC / name
        if Path(name).name != name or path.suffix not in STATIC_TYPES or not path.is_file():
            raise HTTPException(404, f"no static asset {name!r}")
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    return _schema_built(app)


def _schema_built(app: FastAPI) -> FastAPI:
    """The app with its OpenAPI schema built now, before acquisition starts.

    The first ``/openapi.json`` would build it on the event loop (0.17 s on a loaded machine).
    """
    app.openapi()
    return app
