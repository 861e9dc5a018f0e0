"""The dashboards, served by the API app beside ``/api/v1``: a study index at ``/``, six
pages per study at ``/studies/{id}/dashboard/<page>``, each figure exportable at
``/studies/{id}/dashboard/<page>/figures/<name>.<html|png|svg>``, a login form, and
plotly.js from the installed plotly package (pages load nothing from elsewhere).

Routes stay thin: ``loader`` reads the rows, ``views`` runs the analyses and names the
figures, the templates lay them out. When ``MAGMA_API_KEY`` is set every page wants the
key, as a Bearer header or as the ``magma_api_key`` cookie the login form sets; a browser
without it is sent to ``/login``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlencode

import plotly
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from dashboards import export, loader
from dashboards.loader import StudyData
from dashboards.records import DEFAULTS
from dashboards.views import PAGES, OptionError, Page, PageView, template_globals
from service.api.deps import (
    API_KEY_COOKIE,
    MAX_ID,
    DatabaseDep,
    ReadSession,
    SettingsDep,
    StudyId,
    api_key_matches,
    presented_key,
)
from service.core.config import Settings
from service.core.db import Database
from service.core.errors import APIError, field_errors
from studies.storage.engine import transaction

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.globals.update(template_globals(), plotly_version=plotly.__version__, pages=PAGES)

#: a year: the URL carries plotly's version, so a new plotly is a new URL
STATIC_CACHE = "public, max-age=31536000, immutable"
#: the login cookie's lifetime
COOKIE_SECONDS = 7 * 24 * 3600
STUDIES_PER_PAGE = 50


def authorized(request: Request) -> bool:
    """The API's rule (``service.api.deps``): the Bearer token, else the login cookie."""
    settings: Settings = request.app.state.settings
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token)
        if scheme.lower() == "bearer" and token
        else None
    )
    return api_key_matches(settings, presented_key(request, credentials))


class ProtectedRoute(APIRoute):
    """A route that wants the API key: browsers asking for a page go to the login form,
    other clients get the API's 401."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if authorized(request):
                return await handler(request)
            if "text/html" in request.headers.get("accept", ""):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
            raise APIError(
                401,
                "missing or wrong API key",
                headers={"WWW-Authenticate": 'Bearer realm="magma"'},
            )

        return guarded


router = APIRouter(include_in_schema=False)
protected = APIRouter(include_in_schema=False, route_class=ProtectedRoute)


# --- public: plotly.js and the login form ---------------------------------------------------


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        export.PLOTLY_JS,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": STATIC_CACHE},
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never ``//host`` or a URL elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(c.isspace() or not c.isprintable() for c in target):
        return "/"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": _safe_next(next), "auth": settings.auth_enabled, "login": True, "error": None},
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, settings: SettingsDep) -> Response:
    body = await request.body()
    if len(body) > 8192:
        raise APIError(413, "the login form is a few hundred bytes at most")
    form = parse_qs(body.decode("utf-8", "replace"))
    key = form.get("api_key", [""])[0]
    target = _safe_next(form.get("next", ["/"])[0])
    if not settings.auth_enabled:
        return RedirectResponse(target, status_code=303)
    if not api_key_matches(settings, key):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": target, "auth": True, "login": True, "error": "wrong API key"},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        API_KEY_COOKIE,
        key,
        max_age=COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(API_KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- the study index --------------------------------------------------------------------


@protected.get("/", response_class=HTMLResponse)
def index(
    request: Request,
    session: ReadSession,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    studies, total = loader.study_list(session, STUDIES_PER_PAGE, offset)
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "studies": studies,
            "total": total,
            "offset": offset,
            "limit": STUDIES_PER_PAGE,
            "auth": settings.auth_enabled,
        },
    )


# --- study pages and their figures ------------------------------------------------------


def _not_found(request: Request, message: str) -> Response:
    return templates.TemplateResponse(
        request, "not_found.html", {"message": message}, status_code=404
    )


def _options(page: Page, request: Request) -> Any:
    try:
        return page.options.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise APIError(422, "invalid page options", details=field_errors(exc)) from None


def _view(
    page: Page, request: Request, database: Database, study_id: int
) -> tuple[StudyData, PageView] | tuple[None, None]:
    """The study and the page's view of it; None when there is no such study. The rows
    are read in one read transaction, closed before the figures are drawn."""
    options = _options(page, request)
    with transaction(database.reads) as session:
        data = loader.load_study(session, study_id, metrics=page.metrics)
    if data is None:
        return None, None
    try:
        return data, page.build(data, options)
    except OptionError as exc:
        raise APIError(422, str(exc), details=field_errors(exc)) from None


@protected.get("/studies/{study_id}/dashboard")
def dashboard(study_id: StudyId) -> RedirectResponse:
    return RedirectResponse(f"/studies/{study_id}/dashboard/overview", status_code=307)


@protected.get("/studies/{study_id}/dashboard/{page}", response_class=HTMLResponse)
def study_page(request: Request, study_id: StudyId, page: str, database: DatabaseDep) -> Response:
    spec = PAGES.get(page)
    if spec is None:
        return _not_found(request, f"no dashboard page {page!r}; pages: {', '.join(PAGES)}")
    data, view = _view(spec, request, database, study_id)
    if data is None:
        return _not_found(request, f"study {study_id} not found")
    query = request.url.query
    figures = {
        name: export.embed_html(build(), f"fig-{name}") for name, build in view.figures.items()
    }
    exports = {
        name: {
            ext: f"/studies/{study_id}/dashboard/{page}/figures/{quote(name)}.{ext}"
            + (f"?{query}" if query else "")
            for ext in export.MEDIA_TYPES
        }
        for name in figures
    }
    return templates.TemplateResponse(
        request,
        spec.template,
        {
            "study": data,
            "page": spec,
            "figures": figures,
            "exports": exports,
            "defaults": {"base": DEFAULTS["base"], "variant": DEFAULTS["variant"]},
            "auth": request.app.state.settings.auth_enabled,
            **view.context,
        },
    )


@protected.get("/studies/{study_id}/dashboard/{page}/figures/{filename}")
def figure_file(
    request: Request,
    study_id: StudyId,
    page: str,
    filename: str,
    database: DatabaseDep,
    format: Annotated[Literal["html", "png", "svg"] | None, Query()] = None,
) -> Response:
    """``<name>.<ext>``, or ``<name>?format=<ext>``; HTML when neither says."""
    name, dot, ext = filename.rpartition(".")
    if not dot:
        name, ext = filename, "html"
    ext = format or ext
    if ext not in export.MEDIA_TYPES:
        raise APIError(422, f"format: must be one of {list(export.MEDIA_TYPES)}, got {ext!r}")
    spec = PAGES.get(page)
    if spec is None:
        raise APIError(404, f"no dashboard page {page!r}")
    data, view = _view(spec, request, database, study_id)
    if data is None:
        raise APIError(404, f"study {study_id} not found")
    build = view.figures.get(name)
    if build is None:
        raise APIError(404, f"page {page!r} of study {study_id} has no figure {name!r}")
    fig = build()
    disposition = {"Content-Disposition": f'inline; filename="study-{study_id}-{name}.{ext}"'}
    if ext == "html":
        return HTMLResponse(export.standalone_html(fig), headers=disposition)
    try:
        content = export.image(fig, ext)
    except export.ExportUnavailable as exc:
        raise APIError(503, str(exc)) from None
    return Response(content, media_type=export.MEDIA_TYPES[ext], headers=disposition)


router.include_router(protected)
