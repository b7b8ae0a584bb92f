"""The ControlPlane calls of one area: what flamelets and their tasks call."""

from __future__ import annotations

from flame_proto.v1 import control_pb2

from .. import convert
from ..domain import (
    agent,
    service_logs,
    tracking,
)
from .calls import EMPTY, Context, ServicerBase, caller_of, rpc


class AgentCalls(ServicerBase):
    """What flamelets and their tasks call."""

    # ---- node-facing -------------------------------------------------------------------------
    @rpc
    async def ListAssignedTasks(
        self, request: control_pb2.Empty, context: Context
    ) -> control_pb2.ListTasksResponse:
        got = await agent.list_assigned_tasks(self.ctx, caller_of(context))
        return control_pb2.ListTasksResponse(items=[convert.listed_task(t) for t in got])

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
        self, request: control_pb2.GetMetricsRequest, context: Context
    ) -> control_pb2.MetricsResponse:
        view = await agent.get_metrics(self.ctx, caller_of(context), request.id, request.after_seq)
        return convert.metrics(view)

    @rpc
    async def GetTrackingCredentials(
        self, request: control_pb2.Empty, context: Context
    ) -> control_pb2.TrackingCredentials:
        got = await tracking.tracking_credentials(self.ctx, caller_of(context))
        return control_pb2.TrackingCredentials(
            uri=got.uri, username=got.username, password=got.password
        )

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

    # ---- distributed logs --------------------------------------------------------------------
    @rpc
    async def AppendServiceLogs(
        self, request: control_pb2.AppendServiceLogsRequest, context: Context
    ) -> control_pb2.Empty:
        """The apiserver's and the notifier's events about jobs (the service credential, which
        every call carries, is the authority: no user or node may call this)."""
        lines = [convert.shipped_line(x) for x in request.lines]
        await service_logs.append_service_logs(self.ctx, request.source, lines)
        return EMPTY
