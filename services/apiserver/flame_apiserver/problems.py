"""RFC 9457 problem+json: the one error shape of the REST API, and the gRPC → HTTP mapping."""

from __future__ import annotations

import traceback
from http import HTTPStatus
from typing import Any

import grpc
import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from flame_service.errors import ERROR_CODE_KEY

log = structlog.get_logger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://flame.dev/errors/"


class Problem(BaseModel):
    """An RFC 9457 problem document with a stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str


class ApiProblem(Exception):
    """Raised anywhere in a request; rendered as problem+json by :func:`install_handlers`."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers

    def response(self) -> JSONResponse:
        return problem_response(self.status, self.code, self.detail, self.headers)


def problem_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = Problem(
        type=TYPE_BASE + code,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
    )
    return JSONResponse(
        body.model_dump(), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


# gRPC status -> (HTTP status, default code when the controller sent none)
_GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_argument"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_argument"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (413, "too_large"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (503, "unavailable"),
}
_STATUS_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "invalid_argument",
    409: "conflict",
    413: "too_large",
    415: "invalid_argument",
    422: "invalid_argument",
    503: "unavailable",
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> ApiProblem:
    status, code = _GRPC_TO_HTTP.get(exc.code(), (500, "internal"))
    for key, value in exc.trailing_metadata() or ():
        text = value.decode() if isinstance(value, bytes) else str(value)
        if key == ERROR_CODE_KEY and text:
            code = text
    detail = exc.details() or HTTPStatus(status).phrase
    if status >= 500:
        log.warning("controller.call_failed", grpc_status=exc.code().name, code=code, detail=detail)
    if status == 500:
        detail = "internal error"  # never leak controller internals
    if status == 503:
        detail = f"controller unavailable: {detail}"
    return ApiProblem(status, code, detail)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: Any) -> None:
    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiProblem)
        return exc.response()

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, "invalid_argument", _validation_detail(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, ApiProblem):  # e.g. the body limit hit while parsing JSON
            return exc.__cause__.response()
        status = exc.status_code
        code = _STATUS_CODES.get(status, "internal")
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(status, code, str(exc.detail), headers)

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "request.crashed",
            method=request.method,
            path=request.url.path,
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc)),  # plain text: cheap to render
        )
        return problem_response(500, "internal", "internal error")

    app.add_exception_handler(Exception, on_crash)
    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route on this path (Starlette only names the first route's)."""
    exact: set[str] = set()
    templated: set[str] = set()
    for pattern, route_methods, has_params in request.app.state.route_methods:
        if pattern.match(request.url.path):
            (templated if has_params else exact).update(route_methods)
    # A literal path (/v1/nodes/enroll) wins over a template that also matches it.
    return sorted(exact or templated)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the problem documents a route can answer."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


# Every authenticated /v1 route may answer these (auth, validation, controller down, size).
COMMON_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)
