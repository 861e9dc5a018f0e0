"""The dashboards' pages, served beside ``/api/v1``: a study index at ``/``, six pages per
study at ``/studies/{id}/dashboard/<page>``, each figure exportable as HTML, PNG or SVG, a
login form, and plotly.js from the installed plotly package (pages load nothing from
elsewhere).

Routes stay thin: ``studies.results`` reads the rows, ``dashboards.views`` runs the
analyses and names the figures, the templates lay them out. A browser without the API key
is sent to ``/login``, whose form sets the key's cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal
from urllib.parse import parse_qs, quote, urlencode

import plotly
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from dashboards import export
from dashboards.views import PAGES, TEMPLATE_DIR, OptionError, Page, PageView, template_globals
from service.api import deps
from service.api.deps import StudyId
from studies import results
from studies.analysis import claims, claims_report
from studies.results import StudyData
from studies.storage.models import MAX_ID
from worker.contract import FINISHED_STUDY_STATUSES

templates = Jinja2Templates(directory=str(TEMPLATE_DIR))
templates.env.globals.update(template_globals(), plotly_version=plotly.__version__, pages=PAGES)

#: a year: the URL carries plotly's version, so a new plotly is a new URL
STATIC_CACHE = "public, max-age=31536000, immutable"
#: the login cookie's lifetime
COOKIE_SECONDS = 7 * 24 * 3600
STUDIES_PER_PAGE = 50


class ProtectedRoute(APIRoute):
    """A route class for pages that want the key: browsers asking for a page go to the
    login form, other clients get the API's 401."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            if deps.authorized(request):
                return await handler(request)
            if "text/html" in request.headers.get("accept", ""):
                query = request.url.query
                target = request.url.path + (f"?{query}" if query else "")
                return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
            raise deps.unauthorized()

        return guarded


def _safe_next(target: str | None) -> str:
    """Only a path on this server: never ``//host`` or a URL elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(c.isspace() or not c.isprintable() for c in target):
        return "/"
    return target


def _not_found(request: Request, message: str) -> Response:
    return templates.TemplateResponse(
        request, "not_found.html", {"message": message}, status_code=404
    )


router = APIRouter(include_in_schema=False)
#: the pages that want the API key (when the server sets one)
protected = APIRouter(include_in_schema=False, route_class=ProtectedRoute)

# --- public: plotly.js and the login form -------------------------------------------


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(
        export.PLOTLY_JS,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": STATIC_CACHE},
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "next": _safe_next(next),
            "auth": deps.auth_enabled(request),
            "login": True,
            "error": None,
        },
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    body = await request.body()
    if len(body) > 8192:
        raise deps.error(413, "the login form is a few hundred bytes at most")
    form = parse_qs(body.decode("utf-8", "replace"))
    key = form.get("api_key", [""])[0]
    target = _safe_next(form.get("next", ["/"])[0])
    if not deps.auth_enabled(request):
        return RedirectResponse(target, status_code=303)
    if not deps.key_matches(request, key):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": target, "auth": True, "login": True, "error": "wrong API key"},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        deps.API_KEY_COOKIE,
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
    response.delete_cookie(deps.API_KEY_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- the study index ----------------------------------------------------------------


@protected.get("/", response_class=HTMLResponse)
def index(request: Request, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> Response:
    with deps.read_transaction(request) as session:
        studies, total = results.study_list(session, STUDIES_PER_PAGE, offset)
    return templates.TemplateResponse(
        request,
        "index.html",
        {
            "studies": studies,
            "total": total,
            "offset": offset,
            "limit": STUDIES_PER_PAGE,
            "auth": deps.auth_enabled(request),
        },
    )


# --- the paper's claims ---------------------------------------------------------------


@protected.get("/claims", response_class=HTMLResponse)
def claims_page(request: Request) -> Response:
    with deps.read_transaction(request) as session:
        studies = results.claim_studies(session, claims.roles())
    return templates.TemplateResponse(
        request,
        "claims.html",
        {
            "results": claims.evaluate(studies),
            "scale": claims_report.scale,
            "registry_version": claims.registry_version(),
            "shared_rule": claims.SHARED_RULE,
            "auth": deps.auth_enabled(request),
        },
    )


# --- study pages and their figures --------------------------------------------------


def view(
    page: Page, request: Request, study_id: int
) -> tuple[StudyData, PageView] | tuple[None, None]:
    """The study and the page's view of it; None when there is no such study. The rows
    are read in one read transaction, closed before the figures are drawn."""
    try:
        options = page.options.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise deps.error(422, "invalid page options", exc) from None
    with deps.read_transaction(request) as session:
        data = results.load_study(session, study_id, metrics=page.metrics)
    if data is None:
        return None, None
    try:
        return data, page.build(data, options)
    except OptionError as exc:
        raise deps.error(422, str(exc), exc) from None


@protected.get("/studies/{study_id}/dashboard")
def dashboard(study_id: StudyId) -> RedirectResponse:
    return RedirectResponse(f"/studies/{study_id}/dashboard/overview", status_code=307)


@protected.get("/studies/{study_id}/dashboard/{page}", response_class=HTMLResponse)
def study_page(request: Request, study_id: StudyId, page: str) -> Response:
    spec = PAGES.get(page)
    if spec is None:
        return _not_found(request, f"no dashboard page {page!r}; pages: {', '.join(PAGES)}")
    data, page_view = view(spec, request, study_id)
    if data is None:
        return _not_found(request, f"study {study_id} not found")
    query = request.url.query
    figures = {
        name: export.embed_html(build(), f"fig-{name}") for name, build in page_view.figures.items()
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
            "finished_statuses": FINISHED_STUDY_STATUSES,
            "auth": deps.auth_enabled(request),
            **page_view.context,
        },
    )


@protected.get("/studies/{study_id}/dashboard/{page}/figures/{filename}")
def figure_file(
    request: Request,
    study_id: StudyId,
    page: str,
    filename: str,
    format: Annotated[Literal["html", "png", "svg"] | None, Query()] = None,
) -> Response:
    """``<name>.<ext>``, or ``<name>?format=<ext>``; HTML when neither says."""
    name, dot, ext = filename.rpartition(".")
    if not dot:
        name, ext = filename, "html"
    ext = format or ext
    if ext not in export.MEDIA_TYPES:
        raise deps.error(
            422, f"format: must be one of {list(export.MEDIA_TYPES)}, got {ext!r}", None
        )
    spec = PAGES.get(page)
    if spec is None:
        raise deps.error(404, f"no dashboard page {page!r}")
    data, page_view = view(spec, request, study_id)
    if data is None:
        raise deps.error(404, f"study {study_id} not found")
    build = page_view.figures.get(name)
    if build is None:
        raise deps.error(404, f"page {page!r} of study {study_id} has no figure {name!r}")
    fig = build()
    disposition = {"Content-Disposition": f'inline; filename="study-{study_id}-{name}.{ext}"'}
    if ext == "html":
        return HTMLResponse(export.standalone_html(fig), headers=disposition)
    try:
        content = export.image(fig, ext)
    except export.ExportUnavailable as exc:
        raise deps.error(503, str(exc)) from None
    return Response(content, media_type=export.MEDIA_TYPES[ext], headers=disposition)


router.include_router(protected)
