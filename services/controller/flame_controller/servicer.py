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

from flame_proto.v1 import common_pb2, control_pb2, control_pb2_grpc
from flame_service.auth import IDEMPOTENCY_KEY, Caller, from_service
from flame_service.errors import (
    ERROR_CODE_KEY,
    FlameServiceError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)

from . import convert, idempotency
from .domain import (
    agent,
    audit,
    code,
    datasets,
    designs,
    invitations,
    jobs,
    nodes,
    projects,
    service_logs,
    tokens,
    tracking,
    users,
)
from .domain.context import Ctx

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


class ControlPlaneServicer(control_pb2_grpc.ControlPlaneServicer):
    """``service_token`` is the credential every call must carry (flame_service.connect adds it
    for the apiserver and the notifier)."""

    def __init__(self, ctx: Ctx, service_token: str) -> None:
        self.ctx = ctx
        self.service_token = service_token

    # ---- users and tokens ----------------------------------------------------------------
    @rpc
    async def Authenticate(
        self, request: control_pb2.AuthenticateRequest, context: Context
    ) -> common_pb2.Principal:
        return convert.principal(await tokens.authenticate(self.ctx, request.token))

    @rpc
    @idempotent(control_pb2.User.FromString)
    async def CreateUser(
        self, request: control_pb2.CreateUserRequest, context: Context
    ) -> control_pb2.User:
        rec = await users.create_user(
            self.ctx,
            caller_of(context),
            name=request.name,
            email=request.email,
            admin=request.admin,
        )
        return convert.user(rec)

    @rpc
    async def GetUser(self, request: control_pb2.GetRequest, context: Context) -> control_pb2.User:
        return convert.user(await users.get_user(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListUsers(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListUsersResponse:
        got = await users.list_users(
            self.ctx, caller_of(context), limit=request.page.limit, after=request.page.page_token
        )
        return control_pb2.ListUsersResponse(
            items=[convert.user(u) for u in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateUser(
        self, request: control_pb2.UpdateUserRequest, context: Context
    ) -> control_pb2.User:
        rec = await users.update_user(
            self.ctx,
            caller_of(context),
            request.id,
            email=optional(request, "email"),
            admin=optional(request, "admin"),
        )
        return convert.user(rec)

    @rpc
    async def DeleteUser(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await users.delete_user(self.ctx, caller_of(context), request.id)
        return EMPTY

    @rpc
    @idempotent(control_pb2.TokenSecret.FromString)
    async def CreateToken(
        self, request: control_pb2.CreateTokenRequest, context: Context
    ) -> control_pb2.TokenSecret:
        issued = await tokens.create_token(
            self.ctx,
            caller_of(context),
            user_id=request.user_id,
            description=request.description,
            ttl_seconds=request.ttl_seconds,
            scopes=list(request.scopes),
        )
        return convert.token(issued)

    @rpc
    async def ListTokens(
        self, request: control_pb2.ListTokensRequest, context: Context
    ) -> control_pb2.ListTokensResponse:
        got = await tokens.list_tokens(self.ctx, caller_of(context), request.user_id)
        return control_pb2.ListTokensResponse(items=[convert.token_info(t) for t in got])

    @rpc
    async def ListAudit(
        self, request: control_pb2.ListAuditRequest, context: Context
    ) -> control_pb2.ListAuditResponse:
        got = await audit.list_audit(
            self.ctx,
            caller_of(context),
            actor=request.actor,
            action=request.action,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListAuditResponse(
            items=[convert.audit(a) for a in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def RevokeToken(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await tokens.revoke_token(self.ctx, caller_of(context), request.id)
        return EMPTY

    # ---- projects ------------------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.Project.FromString)
    async def CreateProject(
        self, request: control_pb2.CreateProjectRequest, context: Context
    ) -> control_pb2.Project:
        rec = await projects.create_project(
            self.ctx, caller_of(context), name=request.name, description=request.description
        )
        return convert.project(rec)

    @rpc
    async def GetProject(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Project:
        return convert.project(await projects.get_project(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListProjects(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListProjectsResponse:
        got = await projects.list_projects(
            self.ctx, caller_of(context), limit=request.page.limit, after=request.page.page_token
        )
        return control_pb2.ListProjectsResponse(
            items=[convert.project(p) for p in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateProject(
        self, request: control_pb2.UpdateProjectRequest, context: Context
    ) -> control_pb2.Project:
        rec = await projects.update_project(
            self.ctx, caller_of(context), request.id, description=optional(request, "description")
        )
        return convert.project(rec)

    @rpc
    async def DeleteProject(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await projects.delete_project(self.ctx, caller_of(context), request.id)
        return EMPTY

    @rpc
    async def AddMember(
        self, request: control_pb2.MemberRequest, context: Context
    ) -> control_pb2.Project:
        rec = await projects.add_member(
            self.ctx, caller_of(context), request.project_id, request.user_id
        )
        return convert.project(rec)

    @rpc
    async def RemoveMember(
        self, request: control_pb2.MemberRequest, context: Context
    ) -> control_pb2.Project:
        rec = await projects.remove_member(
            self.ctx, caller_of(context), request.project_id, request.user_id
        )
        return convert.project(rec)

    # ---- nodes ---------------------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.NodeWithSecret.FromString)
    async def CreateNode(
        self, request: control_pb2.CreateNodeRequest, context: Context
    ) -> control_pb2.NodeWithSecret:
        got = await nodes.create_node(
            self.ctx,
            caller_of(context),
            name=request.name,
            project_id=request.project_id,
            labels=dict(request.labels),
        )
        return convert.node_secret(got)

    @rpc
    async def ReportNodeHealth(
        self, request: control_pb2.NodeHealthSample, context: Context
    ) -> control_pb2.Empty:
        await nodes.report_health(self.ctx, caller_of(context), convert.health_in(request))
        return EMPTY

    @rpc
    async def GetNodeHealth(
        self, request: control_pb2.NodeHealthRequest, context: Context
    ) -> control_pb2.NodeHealthResponse:
        got = await nodes.get_health(self.ctx, caller_of(context), request.node_id, request.limit)
        return control_pb2.NodeHealthResponse(samples=[convert.health(s) for s in got])

    @rpc
    async def GetNode(self, request: control_pb2.GetRequest, context: Context) -> control_pb2.Node:
        return convert.node(await nodes.get_node(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListNodes(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListNodesResponse:
        got = await nodes.list_nodes(
            self.ctx,
            caller_of(context),
            project_id=request.project_id,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListNodesResponse(
            items=[convert.node(n) for n in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateNode(
        self, request: control_pb2.UpdateNodeRequest, context: Context
    ) -> control_pb2.Node:
        rec = await nodes.update_node(
            self.ctx,
            caller_of(context),
            request.id,
            labels=dict(request.labels),
            replace=request.replace_labels,
        )
        return convert.node(rec)

    @rpc
    async def DeleteNode(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await nodes.delete_node(self.ctx, caller_of(context), request.id)
        return EMPTY

    @rpc
    async def EnrollNode(
        self, request: control_pb2.EnrollNodeRequest, context: Context
    ) -> control_pb2.NodeWithSecret:
        got = await nodes.enroll_node(
            self.ctx, enrolment_token=request.enrolment_token, facts=dict(request.facts)
        )
        return convert.node_secret(got)

    @rpc
    async def RevokeNodeToken(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Node:
        return convert.node(await nodes.revoke_node_token(self.ctx, caller_of(context), request.id))

    @rpc
    async def ReportPresence(
        self, request: control_pb2.PresenceReport, context: Context
    ) -> control_pb2.Empty:
        await nodes.report_presence(
            self.ctx,
            Caller.from_metadata(metadata_of(context)),
            node_id=request.node_id,
            presence=convert.presence_in(request.presence),
            at=convert.from_ts(request.at, request.HasField("at")),
        )
        return EMPTY

    # ---- datasets ------------------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.Dataset.FromString)
    async def CreateDataset(
        self, request: control_pb2.CreateDatasetRequest, context: Context
    ) -> control_pb2.Dataset:
        rec = await datasets.create_dataset(
            self.ctx,
            caller_of(context),
            name=request.name,
            project_id=request.project_id,
            node_id=request.node_id,
            realm=request.realm,
            format=request.format,
            size_bytes=request.size_bytes,
            uri=request.uri,
            description=request.description,
            num_samples=request.num_samples,
        )
        return convert.dataset(rec)

    @rpc
    async def GetDataset(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Dataset:
        return convert.dataset(await datasets.get_dataset(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListDatasets(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListDatasetsResponse:
        got = await datasets.list_datasets(
            self.ctx,
            caller_of(context),
            project_id=request.project_id,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListDatasetsResponse(
            items=[convert.dataset(d) for d in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateDataset(
        self, request: control_pb2.UpdateDatasetRequest, context: Context
    ) -> control_pb2.Dataset:
        rec = await datasets.update_dataset(
            self.ctx,
            caller_of(context),
            request.id,
            description=optional(request, "description"),
            realm=optional(request, "realm"),
        )
        return convert.dataset(rec)

    @rpc
    async def DeleteDataset(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await datasets.delete_dataset(self.ctx, caller_of(context), request.id)
        return EMPTY

    # ---- designs and code ----------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.Design.FromString)
    async def CreateDesign(
        self, request: control_pb2.CreateDesignRequest, context: Context
    ) -> control_pb2.Design:
        rec = await designs.create_design(
            self.ctx,
            caller_of(context),
            name=request.name,
            project_id=request.project_id,
            description=request.description,
            schema_json=request.schema_json,
        )
        return convert.design(rec)

    @rpc
    async def GetDesign(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Design:
        return convert.design(await designs.get_design(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListDesigns(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListDesignsResponse:
        got = await designs.list_designs(
            self.ctx,
            caller_of(context),
            project_id=request.project_id,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListDesignsResponse(
            items=[convert.design(d) for d in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateDesign(
        self, request: control_pb2.UpdateDesignRequest, context: Context
    ) -> control_pb2.Design:
        rec = await designs.update_design(
            self.ctx,
            caller_of(context),
            request.id,
            description=optional(request, "description"),
            schema_json=optional(request, "schema_json"),
        )
        return convert.design(rec)

    @rpc
    async def DeleteDesign(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await designs.delete_design(self.ctx, caller_of(context), request.id)
        return EMPTY

    @rpc
    @idempotent(control_pb2.CodeVersion.FromString)
    async def PushCode(
        self, request: control_pb2.PushCodeRequest, context: Context
    ) -> control_pb2.CodeVersion:
        rec = await code.push_code(
            self.ctx, caller_of(context), design_id=request.design_id, data=request.zip
        )
        return convert.code(rec)

    @rpc
    async def GetCode(
        self, request: control_pb2.GetCodeRequest, context: Context
    ) -> control_pb2.CodeVersion:
        rec = await code.get_code(
            self.ctx, caller_of(context), design_id=request.design_id, version=request.version
        )
        return convert.code(rec)

    @rpc
    async def ListCode(
        self, request: control_pb2.ListCodeRequest, context: Context
    ) -> control_pb2.ListCodeResponse:
        got = await code.list_code(self.ctx, caller_of(context), design_id=request.design_id)
        return control_pb2.ListCodeResponse(items=[convert.code(c) for c in got])

    @rpc
    async def FetchCode(
        self, request: control_pb2.GetCodeRequest, context: Context
    ) -> control_pb2.CodeBundle:
        got = await code.fetch_code(
            self.ctx, caller_of(context), design_id=request.design_id, version=request.version
        )
        return convert.code_bundle(got)

    @rpc
    async def DeleteCode(
        self, request: control_pb2.GetCodeRequest, context: Context
    ) -> control_pb2.Empty:
        await code.delete_code(
            self.ctx, caller_of(context), design_id=request.design_id, version=request.version
        )
        return EMPTY

    # ---- jobs and tasks ------------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.Job.FromString)
    async def CreateJob(
        self, request: control_pb2.CreateJobRequest, context: Context
    ) -> control_pb2.Job:
        rec = await jobs.create_job(
            self.ctx,
            caller_of(context),
            name=request.name,
            project_id=request.project_id,
            design_id=request.design_id,
            code_version=request.code_version,
            spec_json=request.spec_json,
        )
        return convert.job(rec)

    @rpc
    async def GetJob(self, request: control_pb2.GetRequest, context: Context) -> control_pb2.Job:
        return convert.job(await jobs.get_job(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListJobs(
        self, request: control_pb2.ListRequest, context: Context
    ) -> control_pb2.ListJobsResponse:
        got = await jobs.list_jobs(
            self.ctx,
            caller_of(context),
            project_id=request.project_id,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListJobsResponse(
            items=[convert.job(j) for j in got.items], page=convert.page(got.next_page_token)
        )

    @rpc
    async def UpdateJob(
        self, request: control_pb2.UpdateJobRequest, context: Context
    ) -> control_pb2.Job:
        rec = await jobs.update_job(
            self.ctx,
            caller_of(context),
            request.id,
            spec_json=optional(request, "spec_json"),
            code_version=optional(request, "code_version"),
        )
        return convert.job(rec)

    @rpc
    async def DeleteJob(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Empty:
        await jobs.delete_job(self.ctx, caller_of(context), request.id)
        return EMPTY

    @rpc
    async def StartJob(self, request: control_pb2.GetRequest, context: Context) -> control_pb2.Job:
        return convert.job(await jobs.start_job(self.ctx, caller_of(context), request.id))

    @rpc
    async def StopJob(self, request: control_pb2.GetRequest, context: Context) -> control_pb2.Job:
        return convert.job(await jobs.stop_job(self.ctx, caller_of(context), request.id))

    @rpc
    async def ListTasks(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.ListTasksResponse:
        got = await jobs.list_tasks(self.ctx, caller_of(context), request.id)
        return control_pb2.ListTasksResponse(items=[convert.task(t) for t in got])

    # ---- node-facing ---------------------------------------------------------------------
    @rpc
    async def ListAssignedTasks(
        self, request: control_pb2.Empty, context: Context
    ) -> control_pb2.ListTasksResponse:
        got = await agent.list_assigned_tasks(self.ctx, caller_of(context))
        return control_pb2.ListTasksResponse(items=[convert.task(t) for t in got])

    @rpc
    async def FetchTask(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.TaskBundle:
        got = await agent.fetch_task(self.ctx, caller_of(context), request.id)
        return convert.task_bundle(got)

    @rpc
    async def ReportTaskStatus(
        self, request: control_pb2.TaskStatusReport, context: Context
    ) -> control_pb2.Task:
        rec = await agent.report_task_status(
            self.ctx,
            caller_of(context),
            task_id=request.task_id,
            state=request.state,
            reason=request.reason,
            attempt=request.attempt,
        )
        return convert.task(rec)

    @rpc
    async def AppendLogs(
        self, request: control_pb2.AppendLogsRequest, context: Context
    ) -> control_pb2.Empty:
        lines = [convert.new_log_line(x) for x in request.lines]
        await agent.append_logs(self.ctx, caller_of(context), lines)
        return EMPTY

    @rpc
    async def GetLogs(
        self, request: control_pb2.GetLogsRequest, context: Context
    ) -> control_pb2.GetLogsResponse:
        got = await agent.get_logs(
            self.ctx,
            caller_of(context),
            job_id=request.job_id,
            task_id=request.task_id,
            after_seq=request.after_seq,
            limit=request.limit,
            source=request.source,
            node_id=request.node_id,
            min_level=request.min_level,
        )
        return convert.log_page(got)

    @rpc
    async def ReportMetrics(
        self, request: control_pb2.MetricsReport, context: Context
    ) -> control_pb2.Empty:
        await agent.report_metrics(
            self.ctx,
            caller_of(context),
            task_id=request.task_id,
            metrics=[convert.new_metric(m) for m in request.metrics],
            run_uri=request.run_uri,
            model_uri=request.model_uri,
        )
        return EMPTY

    @rpc
    async def GetMetrics(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.MetricsResponse:
        return convert.metrics(await agent.get_metrics(self.ctx, caller_of(context), request.id))

    @rpc
    async def GetTrackingCredentials(
        self, request: control_pb2.Empty, context: Context
    ) -> control_pb2.TrackingCredentials:
        got = await tracking.tracking_credentials(self.ctx, caller_of(context))
        return control_pb2.TrackingCredentials(
            uri=got.uri, username=got.username, password=got.password
        )

    @rpc
    async def SetModelAlias(
        self, request: control_pb2.SetModelAliasRequest, context: Context
    ) -> control_pb2.ModelAlias:
        got = await tracking.set_model_alias(
            self.ctx,
            caller_of(context),
            model=request.model,
            alias=request.alias,
            version=request.version,
        )
        return control_pb2.ModelAlias(model=got.model, alias=got.alias, version=got.version)

    @rpc
    async def RegisterEndpoint(
        self, request: control_pb2.EndpointRegistration, context: Context
    ) -> control_pb2.Empty:
        await agent.register_endpoint(
            self.ctx, caller_of(context), task_id=request.task_id, endpoint=request.endpoint
        )
        return EMPTY

    @rpc
    async def ListEndpoints(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.ListEndpointsResponse:
        got = await agent.list_endpoints(self.ctx, caller_of(context), request.id)
        return convert.endpoints(got)

    # ---- distributed logs ----------------------------------------------------------------
    @rpc
    async def AppendServiceLogs(
        self, request: control_pb2.AppendServiceLogsRequest, context: Context
    ) -> control_pb2.Empty:
        """The apiserver's and the notifier's events about jobs (the service credential, which
        every call carries, is the authority: no user or node may call this)."""
        lines = [convert.shipped_line(x) for x in request.lines]
        await service_logs.append_service_logs(self.ctx, request.source, lines)
        return EMPTY

    # ---- project invitations ---------------------------------------------------------------
    @rpc
    @idempotent(control_pb2.InvitationSecret.FromString)
    async def CreateInvitation(
        self, request: control_pb2.CreateInvitationRequest, context: Context
    ) -> control_pb2.InvitationSecret:
        issued = await invitations.create_invitation(
            self.ctx,
            caller_of(context),
            request.project_id,
            ttl_seconds=request.ttl_seconds,
            note=request.note,
        )
        return control_pb2.InvitationSecret(
            invitation=convert.invitation(issued.record), secret=issued.secret
        )

    @rpc
    async def ListInvitations(
        self, request: control_pb2.ListInvitationsRequest, context: Context
    ) -> control_pb2.ListInvitationsResponse:
        got = await invitations.list_invitations(
            self.ctx,
            caller_of(context),
            request.project_id,
            limit=request.page.limit,
            after=request.page.page_token,
        )
        return control_pb2.ListInvitationsResponse(
            items=[convert.invitation(i) for i in got.items],
            page=convert.page(got.next_page_token),
        )

    @rpc
    async def RevokeInvitation(
        self, request: control_pb2.GetRequest, context: Context
    ) -> control_pb2.Invitation:
        rec = await invitations.revoke_invitation(self.ctx, caller_of(context), request.id)
        return convert.invitation(rec)

    @rpc
    async def AcceptInvitation(
        self, request: control_pb2.AcceptInvitationRequest, context: Context
    ) -> control_pb2.InvitationAccepted:
        joined = await invitations.accept_invitation(
            self.ctx,
            Caller.from_metadata(metadata_of(context)),
            request.secret,
            name=request.name,
            email=request.email,
        )
        return control_pb2.InvitationAccepted(
            project=convert.project(joined.project),
            user=convert.user(joined.user),
            token=convert.token(joined.token) if joined.token is not None else None,
        )
