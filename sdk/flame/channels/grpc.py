"""gRPC backend: each task serves one ``DataChannel`` and streams chunks straight to its peers.

One :class:`GrpcTransport` per task owns the server (shared by all the task's grpc channels,
demultiplexed by ``Envelope.channel`` and ``receiver``) and one client connection per peer.
A sender keeps one ``Stream`` call open per peer and sends every message to that peer on it:
a new RPC per message cost more than the message itself for small ones (per-call machinery and
its asyncio callbacks were ~35% of a task's CPU). ``send`` writes the message as chunks of at
most ``grpc_chunk_bytes`` and returns when the receiver's ``Receipt`` for it arrives, i.e. the
message sits in the receiver's inbox; only then does the next message to that peer start, so a
stream carries one message at a time and messages arrive in order. gRPC's flow control gives
back-pressure. A message the receiver refuses is answered with a refusing ``Receipt`` (raised at
the sender as :class:`ChannelError`) and the stream goes on; chunks that do not frame whole
messages end the stream (INVALID_ARGUMENT). When the stream or the peer is lost
(``UNAVAILABLE``, the stream ended between or inside messages) the sender re-resolves the peer
and resends with capped backoff until the send timeout; the receiver drops the duplicates this
may cause.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import grpc
import structlog

from flame.channels.channel import Channel
from flame.channels.chunking import Chunk, Payload, Reassembly, chunk_count, chunks_of, decode_chunk
from flame.channels.discovery import Discovery, StaticDiscovery, discovery_from
from flame.channels.inbox import Inbox
from flame.channels.settings import ChannelSettings
from flame.channels.transport import TransportContext
from flame.connect import PLAINTEXT, Security, grpc_channel, grpc_listen
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message
from flame_proto.v1 import data_pb2
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


# How a call ends when the peer (not the message) is the problem: it is not up (yet), it went
# away, or it closed the stream between messages. INTERNAL too: a stream that breaks under a
# write reports it whatever happened (grpc/grpc#36066), and our receivers refuse messages in
# receipts, never by ending the stream. The message is sent again until the send timeout.
_LOST = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.OK,
        grpc.StatusCode.INTERNAL,
    }
)
_CODES = {code.value[0]: code for code in grpc.StatusCode}
STOP_GRACE = 0.5  # seconds a closing task lets calls inside a message finish


class _Refused(ChannelError):
    """A well-framed message the receiver will not take: answered with a refusing ``Receipt``
    (``code`` says why) and the stream goes on. ``unread``: its other chunks are still to come
    (it was refused on its header) and are read past, unkept."""

    def __init__(self, code: grpc.StatusCode, reason: str, *, unread: bool) -> None:
        super().__init__(reason)
        self.code = code
        self.unread = unread


class _Garbled(ChannelError):
    """Chunks that do not frame whole messages: the stream cannot go on (INVALID_ARGUMENT)."""


class _Servicer:
    """Takes the messages of one peer's stream one after another and answers each with a
    ``Receipt``. Nothing from the peer is trusted: a chunk sequence that does not frame whole
    messages (chunk 0 with the header, then 1 .. count-1 of the same message) ends the stream."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport
        self.idle: set[asyncio.Task[object]] = set()  # handlers waiting between messages
        self.closing = False

    @property
    def _stall(self) -> float:
        """How long a message may pause between its chunks (the senders' send timeout)."""
        return self._transport.settings.send_timeout

    async def Stream(
        self,
        request_iterator: AsyncIterator[Chunk],
        context: grpc.aio.ServicerContext[Chunk, data_pb2.Receipt],
    ) -> AsyncIterator[data_pb2.Receipt]:
        chunks = aiter(request_iterator)
        me = asyncio.current_task()
        assert me is not None  # grpc.aio runs each call in a task of its own
        while (first := await self._next_message(me, chunks)) is not None:
            try:
                yield await self._receive(first, chunks)
            except _Refused as exc:
                self._rejected(first, exc)
                yield data_pb2.Receipt(
                    message_id=first.message_id, refused=exc.code.value[0], reason=str(exc)
                )
                if exc.unread:  # after the refusal went out, so a sender can stop early
                    await self._skip_rest(first, chunks, context)
            except _Garbled as exc:
                self._rejected(first, exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _next_message(
        self, me: asyncio.Task[object], chunks: AsyncIterator[Chunk]
    ) -> Chunk | None:
        """The first chunk of the stream's next message; None when the sender closed its side
        or this task is closing (a stream between messages holds nothing to finish). ``me``:
        the call's task, which close() cancels while it waits here."""
        self.idle.add(me)
        try:
            return await anext(chunks, None)
        except asyncio.CancelledError:
            if self.closing:  # close() ended the wait: finish the call (OK), not abort it
                me.uncancel()
                return None
            raise
        finally:
            self.idle.discard(me)

    async def _receive(self, first: Chunk, chunks: AsyncIterator[Chunk]) -> data_pb2.Receipt:
        """Read the rest of the message ``first`` starts and put it in its channel's inbox."""
        if first.index != 0 or first.header is None:
            raise _Garbled(f"message {first.message_id}: chunk {first.index} starts no message")
        env = first.header
        chan = self._transport.channel_for(env.channel, env.receiver)
        if chan is None:
            raise _Refused(
                grpc.StatusCode.NOT_FOUND,
                f"task {env.receiver!r} has no grpc channel {env.channel!r} here",
                unread=True,
            )
        try:
            fresh = chan.admit(env.sender, env.receiver, env.job_id, first.message_id)
        except ChannelError as exc:
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, str(exc), unread=True) from exc
        if not fresh:
            # a resend of a message we already have (its receipt was lost): skip it unread
            await _skip(first, chunks, self._stall)
            return data_pb2.Receipt(message_id=first.message_id, bytes_received=0)
        try:
            whole = Reassembly(
                first, self._transport.settings.max_message_bytes, hashed=chan.auth is not None
            )
        except ChannelError as exc:  # too large, or a nonsensical size
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc), unread=True) from exc
        try:
            while not whole.complete:
                whole.add(await _next_of(first, chunks, self._stall))
        except ChannelError as exc:
            raise _Garbled(str(exc)) from exc
        try:
            msg = whole.message()
        except ChannelError as exc:  # not safetensors
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc), unread=False) from exc
        try:
            chan.deliver(msg, whole.digest)
        except ChannelError as exc:  # not from whom it claims, stale or replayed
            raise _Refused(grpc.StatusCode.PERMISSION_DENIED, str(exc), unread=False) from exc
        return data_pb2.Receipt(message_id=first.message_id, bytes_received=whole.total_bytes)

    async def _skip_rest(
        self,
        first: Chunk,
        chunks: AsyncIterator[Chunk],
        context: grpc.aio.ServicerContext[Chunk, data_pb2.Receipt],
    ) -> None:
        try:
            await _skip(first, chunks, self._stall)
        except _Garbled as exc:
            self._rejected(first, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    @staticmethod
    def _rejected(first: Chunk, exc: ChannelError) -> None:
        env = first.header or data_pb2.Envelope()
        log.warning("message.rejected", channel=env.channel, sender=env.sender, reason=str(exc))


async def _next_of(first: Chunk, chunks: AsyncIterator[Chunk], stall: float) -> Chunk:
    """The next chunk of the message ``first`` started; the stream may not end inside it, nor
    pause in it for ``stall`` seconds (the sender's send timeout: it has given up by then, and
    a message left half-sent would keep its buffer as long as the stream stays open)."""
    try:
        async with asyncio.timeout(stall):
            chunk = await anext(chunks, None)
    except TimeoutError:
        raise _Garbled(f"message {first.message_id}: no chunk for {stall:g}s inside it") from None
    if chunk is None:
        raise _Garbled(f"message {first.message_id}: the stream ended inside it")
    return chunk


async def _skip(first: Chunk, chunks: AsyncIterator[Chunk], stall: float) -> None:
    """Read past the other chunks of a message without keeping them, checking that they are
    that message's, in order: the stream must still be framed for the message after it."""
    if first.count < 1:
        raise _Garbled(f"message {first.message_id}: bad chunk count")
    for index in range(1, first.count):
        chunk = await _next_of(first, chunks, stall)
        if chunk.message_id != first.message_id or chunk.index != index:
            raise _Garbled(
                f"message {first.message_id}: chunk {chunk.index} of {chunk.message_id} "
                f"where its chunk {index} was expected"
            )


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
        self._servicer = _Servicer(self)
        self._links: dict[str, _Link] = {}
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
        _serve_data_channel(self._servicer, server)
        port = grpc_listen(server, self._bind, self.security)
        if port == 0:
            raise ChannelError(f"{self.task_id}: cannot listen on {self._bind}")
        await server.start()
        self._server = server
        self.endpoint = f"{self._advertise_host}:{port}"
        await self._discovery.register(self.task_id, self.endpoint)
        log.info("grpc.serving", task_id=self.task_id, endpoint=self.endpoint)
        return self.endpoint

    async def _link(self, peer: str, timeout: float) -> _Link:
        link = self._links.get(peer)
        if link is None:
            endpoint = await self._discovery.resolve(peer, timeout)
            conn = grpc_channel(
                endpoint, self.security, _CLIENT_OPTIONS, server_name=DATA_PLANE_NAME
            )
            link = self._links[peer] = _Link(conn)
        return link

    async def _forget(self, peer: str) -> None:
        link = self._links.pop(peer, None)
        if link is not None:
            await link.conn.close()

    async def send(self, channel: str, peer: str, msg: Message) -> None:
        """Deliver ``msg`` to ``peer``'s inbox; retry on a lost peer until the send timeout.

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
        try:
            # the usual case, one attempt on the open stream, without the retry machinery
            # (building it cost more per message than the rest of the sender's Python)
            await self._once(peer, msg, payload, deadline)
            return
        except _Unavailable as exc:
            log.info("grpc.retry", peer=peer, details=str(exc), delay=0.0)

        def on_retry(exc: BaseException, delay: float) -> None:
            log.info("grpc.retry", peer=peer, details=str(exc), delay=delay)

        try:
            async for attempt in retrying(
                initial=s.retry_initial,
                maximum=s.retry_max,
                deadline=max(0.0, deadline - loop.time()),
                retry=lambda exc: isinstance(exc, _Unavailable),
                on_retry=on_retry,
            ):
                with attempt:
                    await self._once(peer, msg, payload, deadline)
        except _Unavailable as exc:
            raise PeerTimeout(f"{self._late(peer)} (last: {exc})") from exc

    def _late(self, peer: str) -> str:
        return f"{self.task_id} -> {peer}: not delivered within {self.settings.send_timeout:g}s"

    async def _once(self, peer: str, msg: Message, payload: Payload, deadline: float) -> None:
        """One attempt to deliver ``msg`` before ``deadline`` (event-loop time). Raises
        :class:`_Unavailable` when the peer or the stream is lost (worth another attempt)."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise PeerTimeout(self._late(peer))
        link = await self._link(peer, remaining)
        try:
            async with asyncio.timeout_at(deadline):
                await self._attempt(link, peer, msg, payload)
        except TimeoutError as exc:
            link.drop()  # the stream is inside the message: unusable
            raise PeerTimeout(self._late(peer)) from exc
        except _Unavailable:
            await self._forget(peer)  # it may come back elsewhere: resolve again
            raise

    async def _attempt(self, link: _Link, peer: str, msg: Message, payload: Payload) -> None:
        """Send ``msg`` once on ``link``'s stream and wait for its receipt."""
        call = link.stream()
        size = self.settings.grpc_chunk_bytes
        chunks = chunks_of(msg, peer, size, payload)
        try:
            receipt, whole = await _exchange(call, chunks, chunk_count(payload.total_bytes, size))
        except _Broken:
            link.drop()
            code, details = await call.code(), await call.details()
            if code in _LOST:
                raise _Unavailable(f"{code.name}: {details}") from None
            raise ChannelError(f"{self.task_id} -> {peer}: {code.name}: {details}") from None
        except BaseException:
            link.drop()  # cancelled inside the message: the stream cannot carry the next one
            raise
        if not whole:
            link.drop()  # answered before the message was all written: the rest is not coming
        if receipt.message_id != msg.message_id:  # a receiver answering out of turn
            link.drop()
            raise ChannelError(f"{self.task_id} -> {peer}: receipt for another message")
        if receipt.refused:
            code = _CODES.get(receipt.refused, grpc.StatusCode.UNKNOWN)
            raise ChannelError(f"{self.task_id} -> {peer}: {code.name}: {receipt.reason}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for peer in list(self._links):
            await self._forget(peer)
        if self._server is not None:
            self._servicer.closing = True
            for handler in list(self._servicer.idle):
                handler.cancel()  # a peer's stream between messages: nothing to finish
            await self._server.stop(grace=STOP_GRACE)
        if self._owns_discovery:
            await self._discovery.close()


class _Link:
    """The connection to one peer and the stream its messages currently go on."""

    def __init__(self, conn: grpc.aio.Channel) -> None:
        self.conn = conn
        # the method, built once per connection rather than once per message; it writes
        # chunks serialised already (chunking.chunks_of)
        self._open: grpc.aio.StreamStreamMultiCallable[bytes, data_pb2.Receipt] = (
            conn.stream_stream(_STREAM, response_deserializer=data_pb2.Receipt.FromString)
        )
        self._call: grpc.aio.StreamStreamCall[bytes, data_pb2.Receipt] | None = None

    def stream(self) -> grpc.aio.StreamStreamCall[bytes, data_pb2.Receipt]:
        """The open stream, or a new one when the last has ended (refused, or the receiver
        closed it between messages). No deadline: it lives as long as the peer; each send
        bounds its own wait."""
        if self._call is None or self._call.done():
            self._call = self._open()
        return self._call

    def drop(self) -> None:
        """Abandon the stream (its state is unknown or it has failed): cancel it."""
        if self._call is not None:
            self._call.cancel()
            self._call = None


_SERVICE = "flame.v1.DataChannel"
_STREAM = f"/{_SERVICE}/Stream"


def _serve_data_channel(servicer: _Servicer, server: grpc.aio.Server) -> None:
    """``data_pb2_grpc.add_DataChannelServicer_to_server``, but chunks arrive as
    :func:`decode_chunk` reads them: their data a view into the received bytes, not copied out
    by protobuf twice."""
    handlers = {
        "Stream": grpc.stream_stream_rpc_method_handler(
            servicer.Stream,
            request_deserializer=decode_chunk,
            response_serializer=data_pb2.Receipt.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)


class _Broken(Exception):
    """The call ended before the message's receipt came: its status says why."""


async def _exchange(
    call: grpc.aio.StreamStreamCall[bytes, data_pb2.Receipt], chunks: Iterator[bytes], count: int
) -> tuple[data_pb2.Receipt, bool]:
    """Write one message's ``count`` chunks and read its receipt; also whether all of it was
    written.

    A message of several chunks is read for while it is written: a receiver that refuses it
    on its header answers at once, and the sender stops instead of streaming the rest.
    """
    await _write(call, next(chunks))
    if count == 1:
        return await _read(call), True
    reading = asyncio.ensure_future(_read(call))
    try:
        for chunk in chunks:
            if reading.done():
                return reading.result(), False
            await _write(call, chunk)
        return await reading, True
    finally:
        if not reading.done():
            reading.cancel()
        elif not reading.cancelled():
            reading.exception()  # a failed write said first that the call broke


async def _write(call: grpc.aio.StreamStreamCall[bytes, data_pb2.Receipt], chunk: bytes) -> None:
    try:
        await call.write(chunk)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        raise _Broken from None


async def _read(call: grpc.aio.StreamStreamCall[bytes, data_pb2.Receipt]) -> data_pb2.Receipt:
    try:
        answer = await call.read()
    except grpc.aio.AioRpcError:
        raise _Broken from None
    if not isinstance(answer, data_pb2.Receipt):  # EOF: the receiver ended the stream
        raise _Broken
    return answer


def _reachable(bind_host: str) -> str:
    """A host peers can dial when none is advertised: a wildcard bind is not one."""
    if bind_host in ("", "0.0.0.0", "::", "[::]"):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return bind_host


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
