"""Request dependencies: settings, database sessions, and the API key check.

Reads get a session from a dependency; writes open their own transaction inside the
route, so the commit has happened (or failed) before the response is built.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.db import Database
from service.core.errors import APIError


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.database


def read_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with database.reads() as session, session.begin():
        yield session


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


def presented_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The key a request carries: its Bearer token, else (reads only) the login cookie."""
    if credentials is not None:
        return credentials.credentials
    if request.method in SAFE_METHODS:
        return request.cookies.get(API_KEY_COOKIE)
    return None


def require_api_key(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if not api_key_matches(settings, presented_key(request, credentials)):
        raise APIError(
            401, "missing or wrong API key", headers={"WWW-Authenticate": 'Bearer realm="magma"'}
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
ReadSession = Annotated[Session, Depends(read_session)]

#: row ids are 32-bit integers in PostgreSQL; larger ones cannot exist (and would overflow)
MAX_ID = 2**31 - 1
#: event ids are 64-bit
MAX_EVENT_ID = 2**63 - 1
StudyId = Annotated[int, Path(ge=1, le=MAX_ID)]
TrialId = Annotated[int, Path(ge=1, le=MAX_ID)]
