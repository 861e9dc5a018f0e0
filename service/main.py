"""The FastAPI application: the REST API under ``/api/v1`` (dashboards mount beside it).

The API never trains: it writes studies to the database and reads what the driver
records there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic.json_schema import models_json_schema

from service import DISTRIBUTION
from service.api import deps
from service.api.routes import claims, compare, events, health, pages, presets, studies, trials
from service.api.schemas import PresetSubmission
from service.core import errors
from service.core.db import Database
from studies.spec import StudySpec
from worker.settings import Settings, get_settings

API_PREFIX = "/api/v1"
log = logging.getLogger("magma_bench.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.database = Database(settings.database_url)
        if settings.auth_enabled:
            log.info("API key required (MAGMA_API_KEY is set)")
        else:
            log.warning("MAGMA_API_KEY is unset: no authentication; bind to localhost only")
        try:
            yield
        finally:
            app.state.database.dispose()

    app = FastAPI(
        title="magma-bench",
        version=version(DISTRIBUTION),
        summary="Hyperparameter studies of Magma and SkipUpdate (Joo et al., 2026).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(deps.require_api_key)])
    for module in (studies, events, trials, presets, claims, compare):
        protected.include_router(module.router)
    api.include_router(protected)
    app.include_router(api)
    app.include_router(pages.router)  # the dashboards, figure exports, plotly.js, /login
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the models FastAPI cannot see: the submission body's
    (parsed by hand) and the error shape (returned by exception handlers)."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    _, definitions = models_json_schema(
        [
            (StudySpec, "validation"),
            (PresetSubmission, "validation"),
            (errors.ErrorResponse, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(
        definitions.get("$defs", {})
    )
    app.openapi_schema = schema
    return schema
