"""Request dependencies: settings, database sessions, and the API key check.

Reads get a session from a dependency; writes open their own transaction inside the
route, so the commit has happened (or failed) before the response is built.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from service.core.db import Database
from service.core.errors import APIError, field_errors
from studies.storage.engine import transaction
from studies.storage.models import MAX_ID
from worker.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.database


def read_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with database.reads() as session, session.begin():
        yield session


def read_transaction(request: Request) -> AbstractContextManager[Session]:
    """A read transaction a route opens and closes itself (before it renders, say)."""
    return transaction(get_database(request).reads)


def error(status: int, message: str, cause: ValueError | None = None) -> APIError:
    """The API's error, with ``cause``'s field errors as its details."""
    return APIError(status, message, details=field_errors(cause) if cause is not None else None)


_bearer = HTTPBearer(auto_error=False, description="MAGMA_API_KEY, when the server sets one")

#: the cookie the dashboards' login form sets; a browser sends it with every request
API_KEY_COOKIE = "magma_api_key"
#: requests that change nothing, the only ones the cookie authorises on the API (a
#: cross-site form cannot make a browser send one with the cookie's SameSite=Strict, and
#: could not read the answer anyway)
SAFE_METHODS = ("GET", "HEAD")


def api_key_matches(settings: Settings, given: str | None) -> bool:
    """Whether ``given`` is the server's key (always, when none is set); in constant time."""
    if not settings.auth_enabled:
        return True
    expected = settings.api_key.get_secret_value().encode()  # type: ignore[union-attr]
    return secrets.compare_digest((given or "").encode(), expected)


def presented_key(request: Request) -> str | None:
    """The key a request carries: its Bearer token (read as ``HTTPBearer`` reads it), else
    (reads only) the login cookie."""
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    if scheme.lower() == "bearer" and token:
        return token
    if request.method in SAFE_METHODS:
        return request.cookies.get(API_KEY_COOKIE)
    return None


def auth_enabled(request: Request) -> bool:
    return get_settings(request).auth_enabled


def key_matches(request: Request, given: str | None) -> bool:
    """Whether ``given`` (typed into the login form, say) is this server's key."""
    return api_key_matches(get_settings(request), given)


def authorized(request: Request) -> bool:
    """The one key rule, for the API's routes and the dashboards' pages alike."""
    return key_matches(request, presented_key(request))


def unauthorized() -> APIError:
    return APIError(
        401, "missing or wrong API key", headers={"WWW-Authenticate": 'Bearer realm="magma"'}
    )


def require_api_key(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The API's key check; ``_bearer`` puts the scheme in the OpenAPI document."""
    if not authorized(request):
        raise unauthorized()


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
ReadSession = Annotated[Session, Depends(read_session)]

#: event ids are 64-bit
MAX_EVENT_ID = 2**63 - 1
StudyId = Annotated[int, Path(ge=1, le=MAX_ID)]
TrialId = Annotated[int, Path(ge=1, le=MAX_ID)]
