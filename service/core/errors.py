"""One error shape for every failure, so clients parse a single format:

``{"error": {"status": 422, "code": "invalid_spec", "message": "...",
"details": [{"field": "search.p", "message": "..."}]}}``

Unexpected exceptions are logged with their traceback and answered with a bare 500;
no stack trace reaches the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("magma_bench.api")

FIELD_PREFIX = re.compile(r"^(?P<field>[A-Za-z_][\w.\[\]]*): (?P<message>.+)$", re.DOTALL)
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    details: list[FieldError] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or STATUS_CODES.get(status, "error")
        self.details = details or []
        self.headers = headers


def not_found(kind: str, ident: int) -> APIError:
    return APIError(404, f"{kind} {ident} not found")


def field_errors(exc: ValidationError | ValueError, prefix: str = "") -> list[FieldError]:
    """Field-level messages from pydantic errors, or from a ``"field: message"`` ValueError
    (the spec's cross-field checks and the server caps word theirs so)."""
    if isinstance(exc, ValidationError):
        raw = [(e["loc"], str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()]
    else:
        raw = [((), str(exc))]
    errors = []
    for loc, message in raw:
        field = ".".join(str(part) for part in loc)
        if not field and (match := FIELD_PREFIX.match(message)):
            field, message = match["field"], match["message"]
        errors.append(FieldError(field=prefix + (field or "spec"), message=message))
    return errors


def _response(error: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error).model_dump(), status_code=error.status, headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        body = ErrorBody(status=exc.status, code=exc.code, message=exc.message, details=exc.details)
        return _response(body, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        return _response(ErrorBody(status=exc.status_code, code=code, message=str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            FieldError(
                field=".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                message=str(e.get("msg", "invalid")),
            )
            for e in exc.errors()
        ]
        message = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
        body = ErrorBody(status=422, code="invalid_request", message=message, details=details)
        return _response(body)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _response(ErrorBody(status=500, code="internal_error", message="internal error"))


ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"  # added to the components by main


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries documenting the error shape (always JSON, whatever the route's own
    media type) for the given statuses, plus 422, which every route can answer."""
    return {
        status: {
            "description": STATUS_CODES.get(status, "error").replace("_", " "),
            "content": {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}},
        }
        for status in sorted({*statuses, 422})
    }
