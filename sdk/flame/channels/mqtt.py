"""MQTT backend: tasks talk through a broker (paho-mqtt 2.x, MQTT 5, QoS 1).

One :class:`MqttTransport` (one paho client) per task serves all its mqtt channels. A message
for ``receiver`` on ``channel`` is published as serialised :class:`data_pb2.Chunk` s on
``{prefix}/{job_id}/{channel}/{receiver}``; chunks above ``mqtt_chunk_bytes`` are split and
reassembled by ``message_id``; redelivered chunks and messages are dropped by ``message_id``.

Presence: each task keeps a retained message on ``{prefix}/{job_id}/_presence/{task_id}``
(cleared by its will if it dies), published only after its subscriptions are acknowledged. A
send waits until the receiver is present, so nothing is published into the void at startup,
and a send to a peer that is gone raises :class:`PeerTimeout` after the send timeout.

paho runs its network loop in its own thread; every callback hops to the event loop with
``loop.call_soon_threadsafe`` and all state is touched on the event loop only, except the
PUBACK futures are keyed by message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from flame.channels.channel import Channel
from flame.channels.chunking import Chunk, Reassembly, chunks_of, decode_chunk
from flame.channels.inbox import Inbox
from flame.channels.settings import ChannelSettings
from flame.channels.transport import TransportContext
from flame.config import MqttSettings
from flame.connect import PLAINTEXT, Security, mqtt_client
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message

log = structlog.get_logger(__name__)

PRESENCE = "_presence"  # never a channel name: those cannot start with "_"
SESSION_EXPIRY = 60  # seconds the broker keeps our subscriptions and queue across a blip
WINDOW_BYTES = 32 << 20  # unacknowledged bytes per send: bounds memory, keeps the pipe full


class MqttTransport:
    """One paho client of one task, shared by the task's mqtt channels."""

    name = "mqtt"

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        job_id: str,
        task_id: str,
        *,
        settings: ChannelSettings | None = None,
        security: Security = PLAINTEXT,
    ) -> None:
        self.mqtt = mqtt_settings
        self.security = security
        self.job_id = job_id
        self.task_id = task_id
        self.settings = settings or ChannelSettings()
        self._base = f"{mqtt_settings.topic_prefix}/{job_id}"
        self._channels: dict[str, Channel] = {}
        self._partial: dict[tuple[str, str], Reassembly] = {}
        self._present: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._client: mqtt.Client | None = None
        self._sub_mid: int | None = None
        self._connect_error: str | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False

    # -- topics ------------------------------------------------------------------------------
    def topic(self, channel: str, receiver: str) -> str:
        return f"{self._base}/{channel}/{receiver}"

    def _presence_topic(self, task_id: str) -> str:
        return f"{self._base}/{PRESENCE}/{task_id}"

    def attach(self, chan: Channel) -> Inbox:
        self._channels[chan.name] = chan
        return Inbox(chan.name, chan.me)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, subscribe and announce presence; idempotent."""
        async with self._start_lock:
            if self._client is not None:
                return
            if self._closed:
                raise ChannelError(f"{self.task_id}: mqtt transport is closed")
            self._loop = asyncio.get_running_loop()
            self._ready = asyncio.Event()
            client_id = f"flame-{self.job_id}-{self.task_id}-{uuid.uuid4().hex[:8]}"
            client = mqtt_client(self.mqtt, self.security, client_id)
            s = self.mqtt
            client.will_set(self._presence_topic(self.task_id), b"", qos=1, retain=True)
            client.reconnect_delay_set(1, 10)
            client.on_connect = self._on_connect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            client.on_disconnect = self._on_disconnect
            client.on_socket_open = _no_delay
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY
            self._client = client
            try:
                client.connect_async(
                    s.host,
                    s.port,
                    keepalive=self.settings.mqtt_keepalive,
                    clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=props,
                )
                client.loop_start()
                await asyncio.wait_for(self._ready.wait(), self.settings.connect_timeout)
                if self._connect_error is not None:
                    raise ChannelError(
                        f"{self.task_id}: MQTT broker {s.host}:{s.port} refused the connection: "
                        f"{self._connect_error}"
                    )
            except ChannelError:
                await self.close()
                raise
            except TimeoutError:
                await self.close()
                raise ChannelError(
                    f"{self.task_id}: MQTT broker {s.host}:{s.port} not ready within "
                    f"{self.settings.connect_timeout:g}s"
                ) from None
            log.info("mqtt.connected", task_id=self.task_id, broker=f"{s.host}:{s.port}")

    async def close(self) -> None:
        """Clear presence, drop the broker session and stop the network thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        if self._ready is not None and self._ready.is_set():
            try:
                info = client.publish(self._presence_topic(self.task_id), b"", qos=1, retain=True)
                await asyncio.wait_for(self._expect_ack(info), 2.0)
            except (TimeoutError, ChannelError):
                log.info("mqtt.presence_not_cleared", task_id=self.task_id)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        client.disconnect(properties=props)
        await asyncio.to_thread(client.loop_stop)
        for fut in list(self._acks.values()):
            if not fut.done():
                fut.set_exception(ChannelError("mqtt transport closed"))

    # -- paho callbacks (network thread) -----------------------------------------------------
    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt.connect_failed", task_id=self.task_id, reason=str(reason))
            self._call(self._refused, str(reason))
            return
        _, mid = client.subscribe(
            [(f"{self._base}/+/{self.task_id}", 1), (f"{self._base}/{PRESENCE}/+", 1)]
        )
        self._sub_mid = mid

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        if mid != self._sub_mid:
            return
        if any(r.is_failure for r in reasons):
            log.error(
                "mqtt.subscribe_failed", task_id=self.task_id, reasons=[str(r) for r in reasons]
            )
            return
        client.publish(self._presence_topic(self.task_id), b"1", qos=1, retain=True)
        if self._ready is not None:
            self._call(self._ready.set)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if not self._closed:
            log.warning("mqtt.disconnected", task_id=self.task_id, reason=str(reason))
            self._call(self._lost)

    def _refused(self, reason: str) -> None:
        """The broker refused us (bad credentials, ...): fail a pending ``start`` at once."""
        if self._ready is not None and not self._ready.is_set():
            self._connect_error = reason
            self._ready.set()

    def _lost(self) -> None:
        """Disconnected: peers count as absent until the broker tells us again (retained
        presence), so new sends wait for the receiver to be subscribed after the reconnect."""
        for event in self._present.values():
            event.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        _quick_ack(client)
        self._call(self._acked, mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        _quick_ack(client)
        self._call(self._received, message.topic, message.payload)

    # -- receiving (event loop) --------------------------------------------------------------
    def _received(self, topic: str, payload: bytes) -> None:
        parts = topic[len(self._base) + 1 :].split("/")
        if len(parts) != 2:
            return
        channel, who = parts
        if channel == PRESENCE:
            event = self._presence(who)
            if payload:
                event.set()
            else:
                event.clear()
            return
        chan = self._channels.get(channel)
        if chan is None or chan.closed or who != self.task_id:
            return
        try:
            chunk = decode_chunk(payload)
        except ChannelError:
            log.warning("message.rejected", channel=channel, reason="not a chunk")
            return
        self._chunk(chan, chunk)

    def _chunk(self, chan: Channel, chunk: Chunk) -> None:
        if chunk.index > 0 and chan.seen(chunk.message_id):
            return
        try:
            if chunk.index == 0:
                env = chunk.header
                if env is None:
                    raise ChannelError("first chunk has no header")
                if env.job_id != self.job_id:  # the topic's job, whatever the channel knows
                    raise ChannelError(f"message of job {env.job_id!r}, not this job")
                if not chan.admit(env.sender, env.receiver, env.job_id, chunk.message_id):
                    return
                key = (chan.name, env.sender)
                old = self._partial.pop(key, None)
                if old is not None and old.message_id != chunk.message_id:
                    log.warning("message.incomplete_dropped", sender=env.sender, id=old.message_id)
                whole = Reassembly(
                    chunk, self.settings.max_message_bytes, hashed=chan.auth is not None
                )
            else:
                found = [k for k, r in self._partial.items() if r.message_id == chunk.message_id]
                if not found:
                    return  # the rest of a message whose start we never saw or already dropped
                key = found[0]
                whole = self._partial.pop(key)
                whole.add(chunk)
            if whole.complete:
                chan.deliver(whole.message(), whole.digest)
            else:
                self._partial[key] = whole
        except ChannelError as exc:
            log.warning("message.rejected", channel=chan.name, id=chunk.message_id, reason=str(exc))

    def _presence(self, task_id: str) -> asyncio.Event:
        return self._present.setdefault(task_id, asyncio.Event())

    # -- sending (event loop) ----------------------------------------------------------------
    def _expect_ack(self, info: mqtt.MQTTMessageInfo) -> asyncio.Future[None]:
        """A future for the PUBACK of ``info``; call it right after ``publish``, on the loop.

        paho reports the PUBACK (``on_publish``) on its thread; the report reaches the loop
        after this registration, since both go through the loop and this runs first.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: queued while disconnected; paho sends it after the reconnect
            fut.set_exception(ChannelError(f"publish failed: {mqtt.error_string(info.rc)}"))
            return fut
        self._acks[info.mid] = fut
        fut.add_done_callback(lambda _: self._acks.pop(info.mid, None))
        return fut

    def _acked(self, mid: int) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def send(self, channel: str, peer: str, msg: Message) -> None:
        """Publish ``msg`` for ``peer`` and return once the broker acknowledged every chunk."""
        if self._client is None or self._closed:
            raise ChannelError(f"{self.task_id}: mqtt transport is not open")
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.send_timeout
        if not self._client.is_connected():
            self._lost()  # the disconnect callback may still be on its way to the loop
        try:
            await asyncio.wait_for(self._presence(peer).wait(), s.send_timeout)
        except TimeoutError:
            raise PeerTimeout(
                f"{self.task_id} -> {peer}: peer not connected to the broker within "
                f"{s.send_timeout:g}s"
            ) from None
        topic = self.topic(channel, peer)
        lock = self._locks.setdefault(peer, asyncio.Lock())
        async with lock:
            pending: list[asyncio.Future[None]] = []
            try:
                window = max(2, WINDOW_BYTES // s.mqtt_chunk_bytes)
                for chunk in chunks_of(msg, peer, s.mqtt_chunk_bytes):
                    while len(pending) >= window:
                        await self._until(pending.pop(0), deadline, peer)
                    client = self._client
                    if client is None:
                        raise ChannelError(f"{self.task_id}: mqtt transport closed while sending")
                    info = client.publish(topic, chunk, qos=1)
                    pending.append(self._expect_ack(info))
                while pending:
                    await self._until(pending.pop(0), deadline, peer)
            finally:
                for t in pending:
                    t.cancel()

    async def _until(self, ack: asyncio.Future[None], deadline: float, peer: str) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(ack, max(remaining, 0.0))
        except TimeoutError:
            raise PeerTimeout(
                f"{self.task_id} -> {peer}: broker did not acknowledge within "
                f"{self.settings.send_timeout:g}s"
            ) from None


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Turn Nagle off: paho does not, and a PUBACK followed by a PUBLISH then waits for the
    broker's delayed ACK (≈ 40 ms per message in a request/reply exchange)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quick_ack(client: mqtt.Client) -> None:
    """ACK what we just read at once instead of delaying it (Linux).

    A broker with Nagle on (Mosquitto's default: ``set_tcp_nodelay false``) holds its next small
    packet to us until we ACK the previous one; our delayed ACK would cost ≈ 40 ms per message
    in a request/reply exchange. Setting ``TCP_QUICKACK`` flushes the pending ACK now.
    """
    quickack = getattr(socket, "TCP_QUICKACK", None)
    sock: Any = client.socket()
    if quickack is None or sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def transport(ctx: TransportContext) -> MqttTransport:
    cfg = ctx.config
    return MqttTransport(
        cfg.mqtt, cfg.job_id, cfg.task_id, settings=ctx.settings, security=Security.of(cfg)
    )
