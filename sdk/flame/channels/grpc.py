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
from collections.abc import AsyncIterator, Iterator

import grpc
import structlog

from flame.channels.channel import Channel
from flame.channels.chunking import Payload, Reassembly, chunks_of
from flame.channels.discovery import Discovery, StaticDiscovery, discovery_from
from flame.channels.inbox import Inbox
from flame.channels.settings import ChannelSettings
from flame.channels.transport import TransportContext
from flame.connect import PLAINTEXT, Security, grpc_channel, grpc_listen
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message
from flame_proto.v1 import data_pb2, data_pb2_grpc
from flame_spec.pki import DATA_PLANE_NAME
from flame_spec.retry import retrying

log = structlog.get_logger(__name__)

_MAX_GRPC_MESSAGE = 16 << 20  # a chunk plus its header, with room to spare
_CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
]


class _Unavailable(Exception):
    """The peer's server is not reachable right now (not up yet, restarting): retry."""


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
        try:
            fresh = chan.admit(env.sender, env.receiver, env.job_id, first.message_id)
        except ChannelError as exc:
            log.warning("message.rejected", channel=env.channel, sender=env.sender, reason=str(exc))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if not fresh:
            # a retry of a message we already have: acknowledge without reading it again
            return data_pb2.Receipt(message_id=first.message_id, bytes_received=0)
        try:
            whole = Reassembly(
                first, self._transport.settings.max_message_bytes, hashed=chan.auth is not None
            )
            async for chunk in it:
                whole.add(chunk)
            msg = whole.message()
        except ChannelError as exc:
            log.warning("message.rejected", channel=env.channel, sender=env.sender, reason=str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            chan.deliver(msg, whole.digest)
        except ChannelError as exc:  # not from whom it claims, stale or replayed
            log.warning("message.rejected", channel=env.channel, sender=env.sender, reason=str(exc))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return data_pb2.Receipt(message_id=first.message_id, bytes_received=whole.total_bytes)


class GrpcTransport:
    """The gRPC server and peer connections of one task, shared by its grpc channels."""

    name = "grpc"

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
        security: Security = PLAINTEXT,
    ) -> None:
        self.task_id = task_id
        self.security = security
        self._owns_discovery = owns_discovery
        self.settings = settings or ChannelSettings()
        self._discovery = discovery
        self._bind = f"{bind_host}:{bind_port}"
        self._advertise_host = advertise_host or _reachable(bind_host)
        self._channels: dict[tuple[str, str], Channel] = {}
        self._server: grpc.aio.Server | None = None
        self._peers: dict[str, grpc.aio.Channel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.endpoint = ""
        self._closed = False

    def attach(self, chan: Channel) -> Inbox:
        self._channels[(chan.name, chan.me)] = chan
        return Inbox(chan.name, chan.me)

    def channel_for(self, name: str, receiver: str) -> Channel | None:
        chan = self._channels.get((name, receiver))
        return None if chan is None or chan.closed else chan

    async def start(self) -> None:
        """Serve and register this task's endpoint with discovery. Idempotent."""
        await self.serve()

    async def serve(self) -> str:
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
        port = grpc_listen(server, self._bind, self.security)
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
            conn = self._peers[peer] = grpc_channel(
                endpoint, self.security, _CLIENT_OPTIONS, server_name=DATA_PLANE_NAME
            )
        return conn

    async def _forget(self, peer: str) -> None:
        conn = self._peers.pop(peer, None)
        if conn is not None:
            await conn.close()

    async def send(self, channel: str, peer: str, msg: Message) -> None:
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
        payload = Payload.of(msg.weights)  # no copy; raises here on an unsendable tensor
        late = f"{self.task_id} -> {peer}: not delivered within {s.send_timeout:g}s"

        def on_retry(exc: BaseException, delay: float) -> None:
            log.info("grpc.retry", peer=peer, details=str(exc), delay=delay)

        try:
            async for attempt in retrying(
                initial=s.retry_initial,
                maximum=s.retry_max,
                deadline=s.send_timeout,
                retry=lambda exc: isinstance(exc, _Unavailable),
                on_retry=on_retry,
            ):
                with attempt:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise PeerTimeout(late)
                    conn = await self._connection(peer, remaining)
                    try:
                        await data_pb2_grpc.DataChannelStub(conn).Send(
                            _stream(chunks_of(msg, peer, s.grpc_chunk_bytes, payload)),
                            timeout=deadline - loop.time(),
                        )
                    except grpc.aio.AioRpcError as exc:
                        code = exc.code()
                        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                            raise PeerTimeout(late) from exc
                        if code != grpc.StatusCode.UNAVAILABLE:
                            detail = f"{code.name}: {exc.details()}"
                            raise ChannelError(f"{self.task_id} -> {peer}: {detail}") from exc
                        await self._forget(peer)  # it may come back elsewhere: resolve again
                        raise _Unavailable(exc.details() or "unavailable") from exc
        except _Unavailable as exc:
            raise PeerTimeout(f"{late} (last: {exc})") from exc

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


def transport(ctx: TransportContext) -> GrpcTransport:
    """The grpc transport of a task: its discovery (given, or the one its config names) and,
    with a static table, the port the table assigns it."""
    d = ctx.config.discovery
    security = Security.of(ctx.config)  # for discovery (the apiserver)
    # peers talk TLS when the task holds a certificate for it (flame_spec.pki)
    peers = security if security.cert is not None else PLAINTEXT
    discovery, bind_port, owned = ctx.discovery, 0, False
    if discovery is None:
        discovery, owned = discovery_from(d, ctx.config.task_id, security), True
        if isinstance(discovery, StaticDiscovery):
            bind_port = discovery.bind_port(ctx.config.task_id)
    return GrpcTransport(
        ctx.config.task_id,
        discovery,
        bind_host=d.bind_host,
        bind_port=bind_port,
        advertise_host=d.advertise_host,
        settings=ctx.settings,
        owns_discovery=owned,
        security=peers,
    )
