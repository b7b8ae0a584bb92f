"""The apiserver's only backend: one lazily-opened gRPC channel to the controller."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flame_apiserver.problems import ApiProblem, from_rpc_error
from flame_proto.v1 import control_pb2_grpc
from flame_service.auth import IDEMPOTENCY_KEY, Caller
from flame_service.connect import PLAINTEXT, Security, grpc_channel

if TYPE_CHECKING:
    from flame_proto.v1.control_pb2_grpc import ControlPlaneAsyncStub

R = TypeVar("R")


class Controller:
    """Forwards one call per request; maps gRPC errors to :class:`ApiProblem`."""

    def __init__(
        self,
        address: str,
        timeout: float = 30.0,
        security: Security = PLAINTEXT,
        service_token: str | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.security = security
        self._service_token = service_token
        self._channel: grpc.aio.Channel | None = None
        self._stub: ControlPlaneAsyncStub | None = None

    @property
    def stub(self) -> ControlPlaneAsyncStub:
        # Opened on first use so the channel belongs to the serving event loop.
        if self._stub is None:
            self._channel = grpc_channel(
                self.address, self.security, service_token=self._service_token
            )
            self._stub = control_pb2_grpc.ControlPlaneStub(self._channel)
        return self._stub

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Any, R],
        request: Any,
        caller: Caller | None,
        idempotency_key: str | None = None,
    ) -> R:
        metadata = caller.metadata() if caller is not None else None
        if idempotency_key is not None:
            metadata = (*(metadata or ()), (IDEMPOTENCY_KEY, idempotency_key))
        try:
            return await method(request, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc

    async def healthy(self, timeout: float = 2.0) -> bool:
        self.stub  # noqa: B018 - opens the channel
        assert self._channel is not None
        try:
            resp = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None


def unavailable(detail: str) -> ApiProblem:
    return ApiProblem(503, "unavailable", detail)
