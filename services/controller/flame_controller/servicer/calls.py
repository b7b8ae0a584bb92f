"""The ControlPlane gRPC servicer: read the caller, call one domain function, convert.

Caller identity comes from the metadata the apiserver sets (``x-flame-scope`` /
``x-flame-subject``); only ``Authenticate``, ``EnrollNode`` and ``ReportPresence`` (the
internal notifier) work without it.  Domain errors become gRPC statuses with the stable code
in the trailing metadata key ``x-flame-error-code``."""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import grpc
import pydantic
import structlog
from google.protobuf.message import Message

from flame_proto.v1 import control_pb2
from flame_service.auth import IDEMPOTENCY_KEY, Caller, from_service
from flame_service.errors import (
    ERROR_CODE_KEY,
    FlameServiceError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)

from .. import idempotency
from ..domain import (
    audit,
)
from ..domain.context import Ctx

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
EMPTY = control_pb2.Empty()


# Calls that change nothing: a read-only token may make them, and they are not audited.
QUERIES = frozenset(
    {
        "Authenticate",
        "GetUser",
        "ListUsers",
        "ListTokens",
        "ListAudit",
        "GetProject",
        "ListProjects",
        "GetNode",
        "ListNodes",
        "GetDataset",
        "ListDatasets",
        "GetDesign",
        "ListDesigns",
        "GetCode",
        "ListCode",
        "FetchCode",
        "GetJob",
        "ListJobs",
        "ListTasks",
        "ListAssignedTasks",
        "FetchTask",
        "GetLogs",
        "GetMetrics",
        "ListEndpoints",
        "ListInvitations",
        "GetNodeHealth",
    }
)
# High-volume reports from tasks: state, but not worth an audit entry each.
TELEMETRY = frozenset({"AppendLogs", "ReportMetrics", "AppendServiceLogs", "ReportNodeHealth"})
_TARGET_FIELDS = (
    "id",
    "job_id",
    "design_id",
    "task_id",
    "node_id",
    "user_id",
    "name",
    "project_id",
)


def _target(request: Any) -> str:
    for name in _TARGET_FIELDS:
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            return value
    return ""


def rpc(
    fn: Callable[[S, Req, Context], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Coroutine[Any, Any, Resp]]:
    """Map domain errors (and invalid records) to gRPC statuses with a stable error code;
    refuse changes to read-only callers; audit every state-changing call."""
    action = fn.__name__
    audited = action not in QUERIES and action not in TELEMETRY

    @functools.wraps(fn)
    async def handler(self: S, request: Req, context: Context) -> Resp:
        with structlog.contextvars.bound_contextvars(rpc=action):
            md = metadata_of(context)
            if not from_service(md, getattr(self, "service_token", "")):
                # Only the apiserver and the notifier may call: nobody else can claim a caller.
                log.warning("rpc.unauthenticated", peer=context.peer())
                context.set_trailing_metadata(((ERROR_CODE_KEY, Unauthenticated.code),))
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the controller answers the apiserver and the notifier only",
                )
            caller = Caller.from_metadata(md)
            try:
                if caller is not None and caller.read_only and action not in QUERIES:
                    raise PermissionDenied("this token is read-only: it may only query")
                result = await fn(self, request, context)
                if audited:
                    await _audit(self, caller, action, request, "ok")
                return result
            except FlameServiceError as err:
                error = err
                log.info("rpc.failed", code=error.code, message=error.message)
            except pydantic.ValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                error = InvalidArgument(f"invalid value: {detail}")
                log.info("rpc.failed", code=error.code, message=error.message)
            except Exception:
                # A bug, not the caller's fault: keep the details in the log, not on the wire.
                log.exception("rpc.crashed")
                error = FlameServiceError("internal error in the controller")
        if audited:
            await _audit(self, caller, action, request, error.code, error.message)
        context.set_trailing_metadata(((ERROR_CODE_KEY, error.code),))
        await context.abort(error.status, error.message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return handler


def idempotent(
    parse: Callable[[bytes], Resp],
) -> Callable[
    [Callable[[S, Req, Context], Awaitable[Resp]]], Callable[[S, Req, Context], Awaitable[Resp]]
]:
    """A create that honours the caller's ``Idempotency-Key`` (metadata ``x-flame-idempotency-key``,
    see :mod:`flame_controller.idempotency`); ``parse`` reads a recorded response back."""

    def wrap(
        fn: Callable[[S, Req, Context], Awaitable[Resp]],
    ) -> Callable[[S, Req, Context], Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: S, request: Req, context: Context) -> Resp:
            key = dict(metadata_of(context)).get(IDEMPOTENCY_KEY)
            if key is None:
                return await fn(self, request, context)
            text = key.decode(errors="replace") if isinstance(key, bytes) else key

            async def create(ctx: Ctx) -> Any:
                runner = copy.copy(self)  # the same servicer, with the replaying context
                runner.ctx = ctx  # type: ignore[attr-defined]
                return await fn(runner, request, context)

            ctx: Ctx = self.ctx  # type: ignore[attr-defined]
            message = cast(Message, request)
            caller = caller_of(context)
            result = await idempotency.once(ctx, caller, fn.__name__, text, message, create, parse)
            return cast(Resp, result)

        return handler

    return wrap


async def _audit(
    servicer: Any, caller: Caller | None, action: str, request: Any, outcome: str, detail: str = ""
) -> None:
    ctx = getattr(servicer, "ctx", None)
    if ctx is not None:
        await audit.record(
            ctx, caller, action, target=_target(request), outcome=outcome, detail=detail
        )


def metadata_of(context: Context) -> list[tuple[str, str | bytes]]:
    return [(item[0], item[1]) for item in context.invocation_metadata() or ()]


def caller_of(context: Context) -> Caller:
    caller = Caller.from_metadata(metadata_of(context))
    if caller is None:
        raise Unauthenticated("missing caller identity (x-flame-scope / x-flame-subject)")
    return caller


def optional(msg: Any, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


class ServicerBase:
    """What every group of calls works with: the domain context and the service credential."""

    ctx: Ctx
    service_token: str
