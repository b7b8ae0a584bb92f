"""The ControlPlane gRPC servicer: read the caller, call one domain function, convert.

Caller identity comes from the metadata the apiserver sets (``x-flame-scope`` /
``x-flame-subject``); only ``Authenticate``, ``EnrollNode`` and ``ReportPresence`` (the
internal notifier) work without it.  Domain errors become gRPC statuses with the stable code
in the trailing metadata key ``x-flame-error-code``."""

from __future__ import annotations

from flame_proto.v1 import control_pb2_grpc

from ..domain.context import Ctx
from .accounts import AccountCalls
from .agents import AgentCalls
from .calls import QUERIES, TELEMETRY
from .fleet import FleetCalls
from .workloads import WorkloadCalls

__all__ = ["QUERIES", "TELEMETRY", "ControlPlaneServicer"]


class ControlPlaneServicer(
    AccountCalls, FleetCalls, WorkloadCalls, AgentCalls, control_pb2_grpc.ControlPlaneServicer
):
    """``service_token`` is the credential every call must carry (flame_service.connect adds it
    for the apiserver and the notifier)."""

    def __init__(self, ctx: Ctx, service_token: str) -> None:
        self.ctx = ctx
        self.service_token = service_token
