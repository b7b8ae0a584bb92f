"""The ControlPlane calls of one area: nodes and datasets."""

from __future__ import annotations

from flame_proto.v1 import control_pb2
from flame_service.auth import Caller

from .. import convert
from ..domain import (
    datasets,
    nodes,
)
from .calls import EMPTY, Context, ServicerBase, caller_of, idempotent, metadata_of, optional, rpc


class FleetCalls(ServicerBase):
    """Nodes and datasets."""

    # ---- nodes -------------------------------------------------------------------------------
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

    # ---- datasets ----------------------------------------------------------------------------
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
