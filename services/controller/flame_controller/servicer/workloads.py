"""The ControlPlane calls of one area: designs, code versions, jobs, their tasks and models."""

from __future__ import annotations

from flame_proto.v1 import control_pb2

from .. import convert
from ..domain import (
    code,
    designs,
    jobs,
    tracking,
)
from .calls import EMPTY, Context, ServicerBase, caller_of, idempotent, optional, rpc


class WorkloadCalls(ServicerBase):
    """Designs, code versions, jobs, their tasks and their models."""

    # ---- designs and code --------------------------------------------------------------------
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

    # ---- jobs and tasks ----------------------------------------------------------------------
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
            items=[convert.listed_job(j) for j in got.items], page=convert.page(got.next_page_token)
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
        return control_pb2.ListTasksResponse(items=[convert.listed_task(t) for t in got])

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
