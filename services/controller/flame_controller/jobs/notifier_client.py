"""The controller's client of the notifier (``Notify``): the gRPC edge of the reconciler."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, Literal, Protocol, cast

import grpc

from flame_proto.v1 import notifier_pb2, notifier_pb2_grpc
from flame_service.connect import PLAINTEXT, Security, grpc_channel

EventKind = Literal["start", "stop", "update"]
_TYPES = {
    "start": notifier_pb2.EVENT_TYPE_START_TASK,
    "stop": notifier_pb2.EVENT_TYPE_STOP_TASK,
    "update": notifier_pb2.EVENT_TYPE_UPDATE,
}


class NotifierUnavailable(Exception):
    """The notifier could not take the event; retry later (events are only hints)."""


class Notifier(Protocol):
    async def notify(
        self, node_id: str, kind: EventKind, *, job_id: str, task_id: str, payload: dict[str, Any]
    ) -> bool:
        """Queue an event for a node; True when an agent stream was open.  Raises
        :class:`NotifierUnavailable` when the notifier cannot be reached."""
        ...

    async def close(self) -> None: ...


class GrpcNotifier:
    """``Notify`` over one lazily opened channel (:mod:`flame_service.connect`)."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 2.0,
        security: Security = PLAINTEXT,
        service_token: str | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._security = security
        self._service_token = service_token
        self._channel: grpc.aio.Channel | None = None
        self._stub: notifier_pb2_grpc.NotifierStub | None = None

    def _connect(self) -> notifier_pb2_grpc.NotifierStub:
        if self._stub is None:
            self._channel = grpc_channel(
                self.address, self._security, service_token=self._service_token
            )
            self._stub = notifier_pb2_grpc.NotifierStub(self._channel)
        return self._stub

    async def notify(
        self, node_id: str, kind: EventKind, *, job_id: str, task_id: str, payload: dict[str, Any]
    ) -> bool:
        event = notifier_pb2.Event(
            type=_TYPES[kind], job_id=job_id, task_id=task_id, payload_json=json.dumps(payload)
        )
        event.at.GetCurrentTime()
        request = notifier_pb2.NotifyRequest(node_id=node_id, event=event)
        try:
            call = self._connect().Notify(request, timeout=self.timeout)
            # the generated stubs are typed for the sync API; on an aio channel it's awaitable
            response = await cast("Awaitable[notifier_pb2.NotifyResponse]", call)
        except grpc.aio.AioRpcError as exc:
            raise NotifierUnavailable(
                f"notifier {self.address}: {exc.code().name}: {exc.details()}"
            ) from None
        return bool(response.delivered)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None
