"""The ControlPlane calls of one area: users, tokens and projects."""

from __future__ import annotations

from flame_proto.v1 import common_pb2, control_pb2
from flame_service.auth import Caller

from .. import convert
from ..domain import (
    audit,
    invitations,
    projects,
    tokens,
    users,
)
from .calls import EMPTY, Context, ServicerBase, caller_of, idempotent, metadata_of, optional, rpc


class AccountCalls(ServicerBase):
    """Users, tokens and projects."""

    # ---- users and tokens --------------------------------------------------------------------
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

    # ---- projects ----------------------------------------------------------------------------
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

    # ---- project invitations -----------------------------------------------------------------
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
