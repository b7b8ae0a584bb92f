"""gRPC transport of the notifier: authorise, call the queues, map results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC as UTC_TZ

import grpc
import structlog

from flame_notifier.errors import ControllerUnavailable, Forbidden, Unauthenticated
from flame_notifier.queues import Event, EventQueues
from flame_proto.v1 import notifier_pb2, notifier_pb2_grpc
from flame_service.auth import bearer, from_service

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Identity:
    scope: str  # admin | user | node
    subject: str


Authenticator = Callable[[str], Awaitable[Identity]]


def to_proto(event: Event) -> notifier_pb2.Event:
    msg = notifier_pb2.Event(
        seq=event.seq,
        type=event.type,  # type: ignore[arg-type]
        job_id=event.job_id,
        task_id=event.task_id,
        payload_json=event.payload_json,
    )
    msg.at.FromDatetime(event.at)
    return msg


class NotifierServicer(notifier_pb2_grpc.NotifierServicer):
    def __init__(
        self, queues: EventQueues, authenticate: Authenticator, service_token: str
    ) -> None:
        self._queues = queues
        self._authenticate = authenticate
        self._service_token = service_token

    async def _only_services(self, context: grpc.aio.ServicerContext) -> None:
        """Events and the agent list come from the controller only."""
        md = context.invocation_metadata()
        if not from_service(md, self._service_token):  # type: ignore[arg-type]
            log.warning("notify.refused", peer=context.peer())
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "only the controller may send events"
            )

    async def _authorise(self, node_id: str, context: grpc.aio.ServicerContext) -> None:
        """Abort unless the caller's bearer credential is the node credential of ``node_id``."""
        token = bearer(context.invocation_metadata())  # type: ignore[arg-type]
        try:
            if not node_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
            if not token:
                raise Unauthenticated("missing 'authorization: Bearer <node credential>'")
            who = await self._authenticate(token)
            if who.scope != "node" or who.subject != node_id:
                raise Forbidden(f"the credential does not belong to node {node_id}")
        except Unauthenticated as exc:
            log.warning("agent.refused", node_id=node_id, reason=str(exc))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except Forbidden as exc:
            log.warning("agent.refused", node_id=node_id, reason=str(exc))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except ControllerUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def Subscribe(
        self, request: notifier_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[notifier_pb2.Event]:
        await self._authorise(request.node_id, context)
        # Headers now, so the agent knows it is subscribed before the first event.
        await context.send_initial_metadata(())
        log.info("agent.subscribed", node_id=request.node_id, after_seq=request.after_seq)
        try:
            async for event in self._queues.subscribe(request.node_id, request.after_seq):
                yield to_proto(event)
        finally:
            log.info("agent.unsubscribed", node_id=request.node_id)

    async def Ack(
        self, request: notifier_pb2.AckRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.AckResponse:
        await self._authorise(request.node_id, context)
        self._queues.ack(request.node_id, request.seq)
        return notifier_pb2.AckResponse()

    async def Notify(
        self, request: notifier_pb2.NotifyRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.NotifyResponse:
        await self._only_services(context)
        if not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id is required")
        ev = request.event
        if ev.type == notifier_pb2.EVENT_TYPE_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event.type is required")
        seq, delivered = self._queues.push(
            request.node_id,
            ev.type,
            job_id=ev.job_id,
            task_id=ev.task_id,
            payload_json=ev.payload_json,
            at=ev.at.ToDatetime(tzinfo=UTC_TZ) if ev.HasField("at") else None,
        )
        log.info(
            "event.queued",
            node_id=request.node_id,
            seq=seq,
            type=notifier_pb2.EventType.Name(ev.type),
            job_id=ev.job_id,
            task_id=ev.task_id,
            delivered=delivered,
        )
        return notifier_pb2.NotifyResponse(seq=seq, delivered=delivered)

    async def ListAgents(
        self, request: notifier_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> notifier_pb2.ListAgentsResponse:
        await self._only_services(context)
        return notifier_pb2.ListAgentsResponse(
            agents=[
                notifier_pb2.Agent(
                    node_id=a.node_id,
                    connected=a.connected,
                    last_seq=a.last_seq,
                    acked_seq=a.acked_seq,
                )
                for a in self._queues.agents()
            ]
        )
