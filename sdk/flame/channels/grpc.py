"""gRPC backend: each task serves one ``DataChannel`` and streams chunks straight to its peers.

One :class:`GrpcTransport` per task owns the server (shared by all the task's grpc channels,
demultiplexed by ``Envelope.channel`` and ``receiver``) and one client connection per peer.
``send`` streams the message as chunks of at most ``grpc_chunk_bytes`` and returns when the
receiver's ``Receipt`` arrives, i.e. the message sits in the receiver's inbox. gRPC's flow
control gives back-pressure. On ``UNAVAILABLE`` the sender re-resolves the peer and retries
with capped backoff until the send timeout; the receiver drops the duplicates this may cause.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Sequence

import grpc
import structlog

from flame.channels.chunking import Payload, Reassembly, chunks_of
from flame.channels.common import ChannelBase
from flame.channels.discovery import Discovery
from flame.channels.settings import ChannelSettings
from flame.config import PeerRef
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message
from flame_proto.v1 import data_pb2, data_pb2_grpc

log = structlog.get_logger(__name__)

_MAX_GRPC_MESSAGE = 16 << 20  # a chunk plus its header, with room to spare
_CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
]


class _Servicer(data_pb2_grpc.DataChannelServicer):
    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    async def Send(
        self,
        request_iterator: AsyncIterator[data_pb2.Chunk],
        context: grpc.aio.ServicerContext[data_pb2.Chunk, data_pb2.Receipt],
    ) -> data_pb2.Receipt:
        it = aiter(request_iterator)
        try:
            first = await anext(it)
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty stream")
        env = first.header
        chan = self._transport.channel_for(env.channel, env.receiver)
        if chan is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"task {env.receiver!r} has no grpc channel {env.channel!r} here",
            )
        if chan.job_id and env.job_id != chan.job_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"message of job {env.job_id!r}, not this job"
            )
        if not chan.is_peer(env.sender):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{env.sender!r} is not a peer of {env.receiver!r} on {env.channel!r}",
            )
        if chan.seen(first.message_id):
            # a retry of a message we already have: acknowledge without reading it again
            chan.drop_duplicate(env.sender, first.message_id)
            return data_pb2.Receipt(message_id=first.message_id, bytes_received=0)
        try:
            whole = Reassembly(first, self._transport.settings.max_message_bytes)
            async for chunk in it:
                whole.add(chunk)
            msg = whole.message()
        except ChannelError as exc:
            log.warning("message.rejected", channel=env.channel, sender=env.sender, reason=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        chan.deliver(msg)
        return data_pb2.Receipt(message_id=msg.message_id, bytes_received=whole.total_bytes)


class GrpcTransport:
    """The gRPC server and peer connections of one task, shared by its grpc channels."""

    def __init__(
        self,
        task_id: str,
        discovery: Discovery,
        *,
        bind_host: str = "127.0.0.1",
        bind_port: int = 0,
        advertise_host: str | None = None,
        settings: ChannelSettings | None = None,
        owns_discovery: bool = False,
    ) -> None:
        self.task_id = task_id
        self._owns_discovery = owns_discovery
        self.settings = settings or ChannelSettings()
        self._discovery = discovery
        self._bind = f"{bind_host}:{bind_port}"
        self._advertise_host = advertise_host or _reachable(bind_host)
        self._channels: dict[tuple[str, str], GrpcChannel] = {}
        self._server: grpc.aio.Server | None = None
        self._peers: dict[str, grpc.aio.Channel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.endpoint = ""
        self._closed = False

    def attach(self, chan: GrpcChannel) -> None:
        self._channels[(chan.name, chan.me)] = chan

    def channel_for(self, name: str, receiver: str) -> GrpcChannel | None:
        chan = self._channels.get((name, receiver))
        return None if chan is None or chan.closed else chan

    async def start(self) -> str:
        """Serve, register with discovery and return this task's endpoint. Idempotent."""
        if self._server is not None:
            return self.endpoint
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
                ("grpc.so_reuseport", 0),
            ]
        )
        data_pb2_grpc.add_DataChannelServicer_to_server(_Servicer(self), server)
        port = server.add_insecure_port(self._bind)
        if port == 0:
            raise ChannelError(f"{self.task_id}: cannot listen on {self._bind}")
        await server.start()
        self._server = server
        self.endpoint = f"{self._advertise_host}:{port}"
        await self._discovery.register(self.task_id, self.endpoint)
        log.info("grpc.serving", task_id=self.task_id, endpoint=self.endpoint)
        return self.endpoint

    async def _connection(self, peer: str, timeout: float) -> grpc.aio.Channel:
        conn = self._peers.get(peer)
        if conn is None:
            endpoint = await self._discovery.resolve(peer, timeout)
            conn = self._peers[peer] = grpc.aio.insecure_channel(endpoint, options=_CLIENT_OPTIONS)
        return conn

    async def _forget(self, peer: str) -> None:
        conn = self._peers.pop(peer, None)
        if conn is not None:
            await conn.close()

    async def send(self, peer: str, msg: Message) -> None:
        """Deliver ``msg`` to ``peer``'s inbox; retry on UNAVAILABLE until the send timeout.

        Sends to one peer go one at a time, in call order, so they arrive in order.
        """
        if self._closed:
            raise ChannelError(f"{self.task_id}: transport is closed")
        lock = self._locks.setdefault(peer, asyncio.Lock())
        async with lock:
            await self._send_locked(peer, msg)

    async def _send_locked(self, peer: str, msg: Message) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.send_timeout
        delay = s.retry_initial
        attempt = 0
        payload = Payload.of(msg.weights)  # no copy; raises here on an unsendable tensor
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PeerTimeout(
                    f"{self.task_id} -> {peer}: not delivered within {s.send_timeout:g}s "
                    f"({attempt - 1} attempts)"
                )
            try:
                conn = await self._connection(peer, remaining)
                stub = data_pb2_grpc.DataChannelStub(conn)
                await stub.Send(
                    _stream(chunks_of(msg, peer, s.grpc_chunk_bytes, payload)),
                    timeout=deadline - loop.time(),
                )
                return
            except PeerTimeout:
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise PeerTimeout(
                        f"{self.task_id} -> {peer}: not delivered within {s.send_timeout:g}s"
                    ) from exc
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise ChannelError(
                        f"{self.task_id} -> {peer}: {code.name}: {exc.details()}"
                    ) from exc
                log.info("grpc.retry", peer=peer, attempt=attempt, details=exc.details())
                await self._forget(peer)  # the peer may come back elsewhere: resolve again
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, s.retry_max)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for peer in list(self._peers):
            await self._forget(peer)
        if self._server is not None:
            await self._server.stop(grace=0.5)
        if self._owns_discovery:
            await self._discovery.close()


def _reachable(bind_host: str) -> str:
    """A host peers can dial when none is advertised: a wildcard bind is not one."""
    if bind_host in ("", "0.0.0.0", "::", "[::]"):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return bind_host


async def _stream(chunks: Iterator[data_pb2.Chunk]) -> AsyncIterator[data_pb2.Chunk]:
    """Feed a chunk generator to grpc.aio; built lazily so only one chunk is in memory."""
    for chunk in chunks:
        yield chunk


class GrpcChannel(ChannelBase):
    """One grpc channel end of a task; its messages travel through the task's transport."""

    def __init__(
        self,
        name: str,
        me: str,
        peers: Sequence[PeerRef],
        transport: GrpcTransport,
        job_id: str = "",
    ) -> None:
        super().__init__(name, me, peers, job_id)
        self._transport = transport
        transport.attach(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def seen(self, message_id: str) -> bool:
        return self._inbox.seen(message_id)

    def drop_duplicate(self, sender: str, message_id: str) -> None:
        log.info(
            "message.duplicate_dropped",
            channel=self.name,
            me=self.me,
            sender=sender,
            message_id=message_id,
        )

    def is_peer(self, task_id: str) -> bool:
        return task_id in self._peers

    def deliver(self, msg: Message) -> None:
        self._accept(msg)

    async def open(self) -> None:
        await self._transport.start()

    async def _transmit(self, peer: str, msg: Message) -> None:
        await self._transport.send(peer, msg)
