"""The notifier's calls to the controller: credential checks and presence reports."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from flame_notifier.errors import ControllerUnavailable, Unauthenticated
from flame_notifier.servicer import Identity
from flame_proto.v1 import common_pb2, control_pb2, control_pb2_grpc
from flame_service.auth import Caller
from flame_service.connect import PLAINTEXT, Security, grpc_channel
from flame_service.logship import Sink
from flame_service.logship_rpc import controller_sink

_SCOPES = {
    common_pb2.SCOPE_ADMIN: "admin",
    common_pb2.SCOPE_USER: "user",
    common_pb2.SCOPE_NODE: "node",
}
# The notifier reports presence as an internal service principal.
NOTIFIER_CALLER = Caller(scope="admin", subject="notifier")


class ControllerClient:
    def __init__(
        self,
        address: str,
        security: Security = PLAINTEXT,
        timeout: float = 5.0,
        service_token: str | None = None,
    ) -> None:
        self._channel = grpc_channel(address, security, service_token=service_token)
        self._stub = control_pb2_grpc.ControlPlaneStub(self._channel)
        self._timeout = timeout

    async def authenticate(self, token: str) -> Identity:
        try:
            principal = await self._stub.Authenticate(
                control_pb2.AuthenticateRequest(token=token), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                raise Unauthenticated(exc.details() or "invalid credential") from exc
            raise ControllerUnavailable(f"cannot check the credential: {exc.code().name}") from exc
        return Identity(scope=_SCOPES.get(principal.scope, ""), subject=principal.subject)

    async def report_presence(self, node_id: str, online: bool) -> None:
        report = control_pb2.PresenceReport(
            node_id=node_id,
            presence=control_pb2.PRESENCE_ONLINE if online else control_pb2.PRESENCE_OFFLINE,
        )
        report.at.FromDatetime(datetime.now(UTC))
        try:
            await self._stub.ReportPresence(
                report, metadata=NOTIFIER_CALLER.metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise ControllerUnavailable(f"{exc.code().name}: {exc.details()}") from exc

    def ship_logs_to(self) -> Sink:
        """Where the notifier's events about jobs go (flame_service.logship)."""
        return controller_sink(lambda: self._stub, "notifier", self._timeout)

    async def close(self) -> None:
        await self._channel.close()
