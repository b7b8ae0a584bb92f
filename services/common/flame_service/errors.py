"""One exception tree for the control plane, with stable codes.

The domain layer raises these; gRPC servicers map them to status codes (:func:`grpc_status`)
and put ``code`` in trailing metadata ``x-flame-error-code``; the apiserver maps the gRPC status
back to RFC 9457 problem+json with the same code.
"""

from __future__ import annotations

import grpc

ERROR_CODE_KEY = "x-flame-error-code"


class FlameServiceError(Exception):
    code = "internal"
    status = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(FlameServiceError):
    code = "invalid_argument"
    status = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(FlameServiceError):
    code = "not_found"
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FlameServiceError):
    code = "already_exists"
    status = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FlameServiceError):
    code = "failed_precondition"
    status = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(FlameServiceError):
    """A compare-and-set lost the race; retrying after a re-read may succeed."""

    code = "conflict"
    status = grpc.StatusCode.ABORTED


class PermissionDenied(FlameServiceError):
    code = "permission_denied"
    status = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(FlameServiceError):
    code = "unauthenticated"
    status = grpc.StatusCode.UNAUTHENTICATED


class TooLarge(FlameServiceError):
    code = "too_large"
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(FlameServiceError):
    code = "unavailable"
    status = grpc.StatusCode.UNAVAILABLE
