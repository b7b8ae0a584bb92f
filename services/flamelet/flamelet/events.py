"""Notifier client: the agent's stream of event hints (START_TASK / STOP_TASK / UPDATE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from flame_proto.v1 import notifier_pb2, notifier_pb2_grpc
from flame_service.connect import PLAINTEXT, Security, grpc_channel
from flamelet.errors import Unauthorized, Unavailable

CONNECTED = "connected"
START = "start"
STOP = "stop"
UPDATE = "update"
_KINDS = {
    notifier_pb2.EVENT_TYPE_START_TASK: START,
    notifier_pb2.EVENT_TYPE_STOP_TASK: STOP,
    notifier_pb2.EVENT_TYPE_UPDATE: UPDATE,
}


@dataclass(frozen=True)
class NodeEvent:
    seq: int
    kind: str  # connected | start | stop | update
    job_id: str = ""
    task_id: str = ""
    payload_json: str = ""


class EventSource(Protocol):
    def subscribe(self, after_seq: int) -> AsyncIterator[NodeEvent]:
        """Yield a ``connected`` event once subscribed, then events after ``after_seq``.

        Raises Unauthorized (credential refused) or Unavailable (retry later)."""
        ...

    async def ack(self, seq: int) -> None: ...


class GrpcEventSource:
    def __init__(
        self, address: str, node_id: str, credential: str, security: Security = PLAINTEXT
    ) -> None:
        self._address = address
        self._security = security
        self._node_id = node_id
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> notifier_pb2_grpc.NotifierAsyncStub:
        if self._channel is None:
            self._channel = grpc_channel(self._address, self._security)
        return notifier_pb2_grpc.NotifierStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def subscribe(self, after_seq: int) -> AsyncIterator[NodeEvent]:
        call = self._stub().Subscribe(
            notifier_pb2.SubscribeRequest(node_id=self._node_id, after_seq=after_seq),
            metadata=self._metadata,
        )
        try:
            await call.initial_metadata()
            yield NodeEvent(seq=0, kind=CONNECTED)
            async for ev in call:
                yield NodeEvent(
                    seq=ev.seq,
                    kind=_KINDS.get(ev.type, UPDATE),
                    job_id=ev.job_id,
                    task_id=ev.task_id,
                    payload_json=ev.payload_json,
                )
        except grpc.aio.AioRpcError as exc:
            raise _map(exc) from exc
        finally:
            call.cancel()

    async def ack(self, seq: int) -> None:
        try:
            await self._stub().Ack(
                notifier_pb2.AckRequest(node_id=self._node_id, seq=seq),
                metadata=self._metadata,
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise _map(exc) from exc


def _map(exc: grpc.aio.AioRpcError) -> Exception:
    if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Unauthorized(f"notifier refused the node credential: {exc.details()}", 401)
    return Unavailable(f"notifier: {exc.code().name}: {exc.details()}")
