"""The dashboards, served by the API app beside ``/api/v1``: a study index at ``/``, six
pages per study at ``/studies/{id}/dashboard/<page>``, each figure exportable at
``/studies/{id}/dashboard/<page>/figures/<name>.<html|png|svg>``, a login form, and
plotly.js from the installed plotly package (pages load nothing from elsewhere).

Routes stay thin: ``loader`` reads the rows, ``views`` runs the analyses and names the
figures, the templates lay them out. The app that mounts the pages hands in its API-key
rule, its database reads and its error type (``make_router``): the dashboards sit below
the service and never import it. A browser without the key is sent to ``/login``, whose
form sets the key's cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol
from urllib.parse import parse_qs, quote, urlencode

import plotly
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session

from dashboards import export, loader
from dashboards.analysis import claims
from dashboards.loader import StudyData
from dashboards.views import PAGES, OptionError, Page, PageView, template_globals
from studies.storage.models import MAX_ID
from worker.contract import FINISHED_STUDY_STATUSES

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.globals.update(template_globals(), plotly_version=plotly.__version__, pages=PAGES)

#: a year: the URL carries plotly's version, so a new plotly is a new URL
STATIC_CACHE = "public, max-age=31536000, immutable"
#: the login cookie's lifetime
COOKIE_SECONDS = 7 * 24 * 3600
STUDIES_PER_PAGE = 50


StudyId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
#: a read transaction on the app's database, for one request
Reads = Callable[[Request], AbstractContextManager[Session]]


class ErrorFactory(Protocol):
    """The app's error type, so that a page's failure reads like any other of the app's."""

    def __call__(self, status: int, message: str, cause: ValueError | None = None) -> Exception:
        """An error with this status and message; ``cause``'s fields become its details."""


@dataclass(frozen=True)
class Auth:
    """The serving app's API-key rule, handed in: it is implemented once, by the app."""

    #: the cookie the login form sets, which the app's key check reads
    cookie: str
    #: whether the app wants a key at all
    enabled: Callable[[Request], bool]
    #: whether a request carries the key
    authorized: Callable[[Request], bool]
    #: whether a key typed into the login form is the app's
    matches: Callable[[Request, str], bool]
    #: the app's answer to an API client without the key
    unauthorized: Callable[[], Exception]


def _protected_route(auth: Auth) -> type[APIRoute]:
    """A route class for pages that want the key: browsers asking for a page go to the
    login form, other clients get the app's 401."""

    class ProtectedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                if auth.authorized(request):
                    return await handler(request)
                if "text/html" in request.headers.get("accept", ""):
                    query = request.url.query
                    target = request.url.path + (f"?{query}" if query else "")
                    return RedirectResponse(
                        f"/login?{urlencode({'next': target})}", status_code=303
                    )
                raise auth.unauthorized()

            return guarded

    return ProtectedRoute


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


def make_router(*, auth: Auth, reads: Reads, error: ErrorFactory) -> APIRouter:
    """The pages, the figure exports, plotly.js and the login form, wired to the app's
    key rule, database reads and error type."""
    router = APIRouter(include_in_schema=False)
    protected = APIRouter(include_in_schema=False, route_class=_protected_route(auth))

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
            {"next": _safe_next(next), "auth": auth.enabled(request), "login": True, "error": None},
        )

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > 8192:
            raise error(413, "the login form is a few hundred bytes at most")
        form = parse_qs(body.decode("utf-8", "replace"))
        key = form.get("api_key", [""])[0]
        target = _safe_next(form.get("next", ["/"])[0])
        if not auth.enabled(request):
            return RedirectResponse(target, status_code=303)
        if not auth.matches(request, key):
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": target, "auth": True, "login": True, "error": "wrong API key"},
                status_code=401,
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            auth.cookie,
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
        response.delete_cookie(auth.cookie, path="/", httponly=True, samesite="strict")
        return response

    # --- the study index ----------------------------------------------------------------

    @protected.get("/", response_class=HTMLResponse)
    def index(request: Request, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> Response:
        with reads(request) as session:
            studies, total = loader.study_list(session, STUDIES_PER_PAGE, offset)
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "studies": studies,
                "total": total,
                "offset": offset,
                "limit": STUDIES_PER_PAGE,
                "auth": auth.enabled(request),
            },
        )

    # --- the paper's claims ---------------------------------------------------------------

    @protected.get("/claims", response_class=HTMLResponse)
    def claims_page(request: Request) -> Response:
        with reads(request) as session:
            studies = loader.claim_studies(session, claims.roles())
        return templates.TemplateResponse(
            request,
            "claims.html",
            {
                "results": claims.evaluate(studies),
                "scale": claims.scale,
                "auth": auth.enabled(request),
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
            raise error(422, "invalid page options", exc) from None
        with reads(request) as session:
            data = loader.load_study(session, study_id, metrics=page.metrics)
        if data is None:
            return None, None
        try:
            return data, page.build(data, options)
        except OptionError as exc:
            raise error(422, str(exc), exc) from None

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
            name: export.embed_html(build(), f"fig-{name}")
            for name, build in page_view.figures.items()
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
                "auth": auth.enabled(request),
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
            raise error(
                422, f"format: must be one of {list(export.MEDIA_TYPES)}, got {ext!r}", None
            )
        spec = PAGES.get(page)
        if spec is None:
            raise error(404, f"no dashboard page {page!r}")
        data, page_view = view(spec, request, study_id)
        if data is None:
            raise error(404, f"study {study_id} not found")
        build = page_view.figures.get(name)
        if build is None:
            raise error(404, f"page {page!r} of study {study_id} has no figure {name!r}")
        fig = build()
        disposition = {"Content-Disposition": f'inline; filename="study-{study_id}-{name}.{ext}"'}
        if ext == "html":
            return HTMLResponse(export.standalone_html(fig), headers=disposition)
        try:
            content = export.image(fig, ext)
        except export.ExportUnavailable as exc:
            raise error(503, str(exc)) from None
        return Response(content, media_type=export.MEDIA_TYPES[ext], headers=disposition)

    router.include_router(protected)
    return router
