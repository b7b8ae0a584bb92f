"""grpc-backend behaviour beyond the shared contract: late peers, retries, refusals."""

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from structlog.testing import capture_logs

import flame.channels.grpc as grpc_channels
from flame.channels import ChannelSet, chunking, open_channels
from flame.channels.discovery import MemoryDiscovery
from flame.channels.settings import ChannelSettings
from flame.config import (
    ChannelMembership,
    DesignSchema,
    DiscoverySettings,
    JobSpec,
    PeerRef,
    TaskConfig,
)
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message
from flame_proto.v1 import data_pb2, data_pb2_grpc

DESIGN = DesignSchema.model_validate(
    {
        "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
    }
)
SETTINGS = ChannelSettings(send_timeout=10, retry_initial=0.02, retry_max=0.1)


async def _until_retried(logs: list[dict[str, object]], times: int = 2) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while sum(e["event"] == "grpc.retry" for e in logs) < times:
        assert asyncio.get_running_loop().time() < deadline, "the sender did not retry"
        await asyncio.sleep(0.01)


def pb_chunks(msg: Message, receiver: str, size: int) -> Iterator[data_pb2.Chunk]:
    """What a peer writing ``data_pb2.Chunk`` s with protobuf itself would send."""
    return (data_pb2.Chunk.FromString(c) for c in chunking.chunks_of(msg, receiver, size))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(
    job_id: str, task_id: str, peers: dict[str, str], endpoints: dict[str, str] | None = None
) -> TaskConfig:
    return TaskConfig(
        job_id=job_id,
        job_name="g",
        task_id=task_id,
        role="aggregator" if task_id == "agg" else "trainer",
        design=DESIGN,
        job=JobSpec(),
        channels={
            "param": ChannelMembership(
                name="param",
                group="default",
                backend="grpc",
                peers=[PeerRef(task_id=t, role=r) for t, r in peers.items()],
            )
        },
        discovery=DiscoverySettings(endpoints=endpoints or {}),
    )


async def test_a_send_waits_for_a_peer_that_starts_late_and_survives_its_restart() -> None:
    job = uuid.uuid4().hex
    endpoints = {"agg": f"127.0.0.1:{_free_port()}"}
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}, endpoints), settings=SETTINGS
    )
    agg_cfg = _config(job, "agg", {"t1": "trainer"}, endpoints)
    try:
        with capture_logs() as logs:
            sending = asyncio.create_task(t1["param"].send("agg", Message("update", round=1)))
            await _until_retried(logs)  # the aggregator is not up: the sender keeps retrying
        assert not sending.done()
        agg = await open_channels(agg_cfg, settings=SETTINGS)
        await sending
        assert (await agg["param"].recv("t1", timeout=5)).round == 1

        await agg.close()  # the aggregator restarts on its port
        with capture_logs() as logs:
            sending = asyncio.create_task(t1["param"].send("agg", Message("update", round=2)))
            await _until_retried(logs)
        agg = await open_channels(agg_cfg, settings=SETTINGS)
        await sending
        assert (await agg["param"].recv("t1", timeout=5)).round == 2
        await agg.close()
    finally:
        await t1.close()


async def test_a_peer_that_never_comes_times_out() -> None:
    job = uuid.uuid4().hex
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}, {"agg": f"127.0.0.1:{_free_port()}"}),
        settings=ChannelSettings(send_timeout=0.5, retry_initial=0.02),
    )
    try:
        with pytest.raises(PeerTimeout):
            await t1["param"].send("agg", Message("update"))
    finally:
        await t1.close()


async def test_the_send_timeout_defaults_to_the_round_timeout() -> None:
    cfg = _config("j", "t1", {"agg": "aggregator"}, {"agg": f"127.0.0.1:{_free_port()}"})
    cfg = cfg.model_copy(update={"job": JobSpec(round_timeout=0.3)})
    t1 = await open_channels(cfg)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PeerTimeout):
            await t1["param"].send("agg", Message("update"))
        assert loop.time() - started < 5  # gave up with the round, not after 60 s
    finally:
        await t1.close()


@dataclass
class Served:
    job: str
    endpoint: str
    agg: ChannelSet


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    job = uuid.uuid4().hex
    discovery = MemoryDiscovery()
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}), discovery=discovery, settings=SETTINGS
    )
    yield Served(job, await discovery.resolve("agg", 1), agg)
    await agg.close()


async def _exchange(
    endpoint: str, chunks: list[data_pb2.Chunk]
) -> tuple[list[data_pb2.Receipt], grpc.StatusCode]:
    """Write ``chunks`` on one raw ``Stream`` call (as a peer, maybe a hostile one, would) and
    half-close it; the receipts that came back and the status the call ended with."""
    async with grpc.aio.insecure_channel(endpoint) as conn:

        async def stream() -> AsyncIterator[data_pb2.Chunk]:
            for c in chunks:
                yield c

        call = data_pb2_grpc.DataChannelStub(conn).Stream(stream(), timeout=5)
        receipts: list[data_pb2.Receipt] = []
        try:
            async for receipt in call:
                receipts.append(receipt)
        except grpc.aio.AioRpcError:
            pass
        return receipts, await call.code()


# How a raw call the receiver aborted ends: with INVALID_ARGUMENT, or INTERNAL when the abort
# arrives while the client is writing (grpc.aio overwrites the status then: grpc/grpc#36066).
ABORTED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)


def _refusals(receipts: list[data_pb2.Receipt]) -> list[grpc.StatusCode | None]:
    codes = {c.value[0]: c for c in grpc.StatusCode}
    return [codes[r.refused] if r.refused else None for r in receipts]


async def test_the_server_refuses_what_is_not_for_it(served: Served) -> None:
    job, endpoint, agg = served.job, served.endpoint, served.agg

    def msg(sender: str = "t1", job_id: str = job, channel: str = "param") -> Message:
        w = {"w": np.ones(1000, np.float32)}
        return Message("update", weights=w, sender=sender, job_id=job_id, channel=channel)

    refused = [  # well-framed messages it will not take: refused in a receipt, the stream goes on
        (list(pb_chunks(msg(job_id="other-job"), "agg", 1024)), grpc.StatusCode.PERMISSION_DENIED),
        (list(pb_chunks(msg(sender="intruder"), "agg", 1024)), grpc.StatusCode.PERMISSION_DENIED),
        (list(pb_chunks(msg(channel="nope"), "agg", 1024)), grpc.StatusCode.NOT_FOUND),
        (list(pb_chunks(msg(), "someone-else", 1024)), grpc.StatusCode.NOT_FOUND),
    ]
    for chunks, code in refused:
        receipts, status = await _exchange(endpoint, chunks)
        assert (_refusals(receipts), status) == ([code], grpc.StatusCode.OK)
        assert receipts[0].message_id == chunks[0].message_id and receipts[0].reason
    all_at_once, status = await _exchange(endpoint, [c for chunks, _ in refused for c in chunks])
    assert (_refusals(all_at_once), status) == ([c for _, c in refused], grpc.StatusCode.OK)
    with capture_logs() as logs:
        truncated, status = await _exchange(endpoint, list(pb_chunks(msg(), "agg", 1024))[:2])
    assert truncated == [] and status in ABORTED
    rejected = [e["reason"] for e in logs if e["event"] == "message.rejected"]
    assert len(rejected) == 1 and "the stream ended inside it" in rejected[0]
    assert await _exchange(endpoint, []) == ([], grpc.StatusCode.OK)  # no message, no refusal
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)  # none of it was delivered

    good = msg()
    (receipt,), code = await _exchange(endpoint, list(pb_chunks(good, "agg", 1024)))
    assert code == grpc.StatusCode.OK
    assert receipt.message_id == good.message_id and receipt.bytes_received > 4000
    assert not receipt.refused
    (again,), _ = await _exchange(endpoint, list(pb_chunks(good, "agg", 1024)))
    assert again.bytes_received == 0  # a retry of a delivered message is acknowledged, dropped
    assert not again.refused
    assert (await agg["param"].recv("t1", timeout=1)).message_id == good.message_id
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)


def _msg(job: str, at_round: int = 0) -> Message:
    w = {"w": np.full(1000, 1.5, np.float32)}
    return Message("update", at_round, weights=w, sender="t1", job_id=job, channel="param")


async def test_one_stream_carries_messages_one_after_another(served: Served) -> None:
    job, endpoint, agg = served.job, served.endpoint, served.agg
    a, b, c = (_msg(job, r) for r in (1, 2, 3))
    chunks = [*pb_chunks(a, "agg", 1024), *pb_chunks(b, "agg", 1024), *pb_chunks(a, "agg", 1024)]
    chunks += pb_chunks(c, "agg", 1024)
    receipts, code = await _exchange(endpoint, chunks)
    assert code == grpc.StatusCode.OK
    assert [r.message_id for r in receipts] == [m.message_id for m in (a, b, a, c)]
    assert receipts[2].bytes_received == 0  # the repeat of a was acknowledged and dropped
    got = [await agg["param"].recv("t1", timeout=1) for _ in range(3)]
    assert [m.round for m in got] == [1, 2, 3]
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)


async def test_a_hostile_chunk_sequence_on_a_stream_is_refused(served: Served) -> None:
    job, endpoint, agg = served.job, served.endpoint, served.agg
    good, a, b = _msg(job, 1), _msg(job, 2), _msg(job, 3)
    ok = list(pb_chunks(good, "agg", 1024))
    ca, cb = list(pb_chunks(a, "agg", 1024)), list(pb_chunks(b, "agg", 1024))
    assert len(ca) > 2
    extra = data_pb2.Chunk(message_id=a.message_id, index=len(ca), count=len(ca))
    foreign = list(pb_chunks(_msg("other-job"), "agg", 1024))
    cases = {
        "interleaved": [*ok, ca[0], cb[0], *ca[1:], *cb[1:]],
        "no header": [*ok, *ca[1:]],
        "gap": [*ok, ca[0], *ca[2:]],
        "a duplicate is still checked": [*ok, ok[0], ca[0], *ok[1:]],
        "a refused one is still checked": [*ok, foreign[0], ca[0], *foreign[1:]],
        "half-closed inside": [*ok, *ca[:-1]],
        "past its count": [*ok, *ca, extra],  # a "message" without a header
    }
    for name, chunks in cases.items():
        with capture_logs() as logs:
            receipts, code = await _exchange(endpoint, chunks)
        expected = [good.message_id]
        expected += [a.message_id] if name == "past its count" else []
        expected += [foreign[0].message_id] if name == "a refused one is still checked" else []
        assert [r.message_id for r in receipts] == expected, name
        assert code in ABORTED, name
        assert any(e["event"] == "message.rejected" for e in logs), name
    assert (await agg["param"].recv("t1", timeout=1)).message_id == good.message_id
    assert (await agg["param"].recv("t1", timeout=1)).message_id == a.message_id
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)  # nothing else got in


async def test_an_oversized_message_is_refused_before_its_data(served: Served) -> None:
    job, endpoint = served.job, served.endpoint
    first = next(pb_chunks(_msg(job), "agg", 1024))
    first.count, first.total_bytes = 10_000, SETTINGS.max_message_bytes + 1
    async with grpc.aio.insecure_channel(endpoint) as conn:
        call = data_pb2_grpc.DataChannelStub(conn).Stream(timeout=5)
        await call.write(first)
        receipt = await call.read()  # answered at once: the other 9,999 chunks are not awaited
        assert isinstance(receipt, data_pb2.Receipt)
        assert _refusals([receipt]) == [grpc.StatusCode.INVALID_ARGUMENT]
        assert "limit" in receipt.reason
        call.cancel()


async def test_a_refused_send_raises_channel_error_at_once() -> None:
    discovery = MemoryDiscovery()
    agg = await open_channels(
        _config("job-a", "agg", {"t1": "trainer"}), discovery=discovery, settings=SETTINGS
    )
    t1 = await open_channels(  # misconfigured: thinks it is in another job
        _config("job-b", "t1", {"agg": "aggregator"}), discovery=discovery, settings=SETTINGS
    )
    try:
        with pytest.raises(ChannelError) as info:
            await t1["param"].send("agg", Message("update"))
        assert not isinstance(info.value, PeerTimeout)
        assert "PERMISSION_DENIED" in str(info.value)
    finally:
        await t1.close()
        await agg.close()


async def test_all_grpc_channels_of_a_task_share_one_server() -> None:
    design = DesignSchema.model_validate(
        {
            "roles": [
                {"name": "trainer", "isDataConsumer": True},
                {"name": "middle"},
                {"name": "top"},
            ],
            "channels": [
                {"name": "down", "pair": ["trainer", "middle"]},
                {"name": "up", "pair": ["middle", "top"]},
            ],
        }
    )

    def cfg(task: str, role: str, chans: dict[str, dict[str, str]]) -> TaskConfig:
        return TaskConfig(
            job_id="j",
            job_name="h",
            task_id=task,
            role=role,
            design=design,
            job=JobSpec(),
            channels={
                name: ChannelMembership(
                    name=name,
                    group="default",
                    backend="grpc",
                    peers=[PeerRef(task_id=t, role=r) for t, r in peers.items()],
                )
                for name, peers in chans.items()
            },
        )

    discovery = MemoryDiscovery()
    with capture_logs() as logs:
        mid = await open_channels(
            cfg("mid", "middle", {"down": {"t1": "trainer"}, "up": {"top": "top"}}),
            discovery=discovery,
            settings=SETTINGS,
        )
    top = await open_channels(cfg("top", "top", {"up": {"mid": "middle"}}), discovery=discovery)
    t1 = await open_channels(cfg("t1", "trainer", {"down": {"mid": "middle"}}), discovery=discovery)
    try:
        assert sum(e["event"] == "grpc.serving" for e in logs) == 1
        await t1["down"].send("mid", Message("update", round=1))
        await top["up"].send("mid", Message("weights", round=2))
        assert (await mid["up"].recv("top", timeout=5)).round == 2
        assert (await mid["down"].recv("t1", timeout=5)).round == 1
        with pytest.raises(PeerTimeout):
            await mid["up"].recv_any(timeout=0.1)
    finally:
        for s in (t1, top, mid):
            await s.close()


class _CountCalls(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts the RPCs (HTTP/2 streams) the servers of a test were asked to handle."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.methods.append(details.method)
        return await continuation(details)


@pytest.fixture
def served_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The RPCs every grpc server started during the test handled, in order."""
    counter = _CountCalls()
    real = grpc.aio.server

    def server(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        return real(*args, interceptors=[counter], **kwargs)

    monkeypatch.setattr(grpc.aio, "server", server)
    return counter.methods


async def _pair(
    job: str, agg_settings: ChannelSettings = SETTINGS, t1_discovery: Any = None
) -> tuple[ChannelSet, ChannelSet, MemoryDiscovery]:
    discovery = MemoryDiscovery()
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}), discovery=discovery, settings=agg_settings
    )
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}),
        discovery=t1_discovery or discovery,
        settings=SETTINGS,
    )
    return agg, t1, discovery


async def test_messages_to_one_peer_share_one_call(served_calls: list[str]) -> None:
    agg, t1, _ = await _pair(uuid.uuid4().hex)
    try:
        for r in range(50):
            await t1["param"].send("agg", Message("update", round=r))
        assert [(await agg["param"].recv("t1", timeout=5)).round for _ in range(50)] == list(
            range(50)
        )
        assert served_calls == ["/flame.v1.DataChannel/Stream"]
    finally:
        await t1.close()
        await agg.close()


async def test_a_refused_message_leaves_later_sends_working(served_calls: list[str]) -> None:
    agg, t1, _ = await _pair(uuid.uuid4().hex, ChannelSettings(max_message_bytes=100_000))
    try:
        await t1["param"].send("agg", Message("update", round=1))
        small_but_too_big = {"w": np.zeros(100_000, np.float32)}  # one chunk
        with pytest.raises(ChannelError) as info:
            await t1["param"].send("agg", Message("update", round=2, weights=small_but_too_big))
        assert not isinstance(info.value, PeerTimeout)
        assert "INVALID_ARGUMENT" in str(info.value) and "limit" in str(info.value)
        await t1["param"].send("agg", Message("update", round=3))
        assert served_calls == ["/flame.v1.DataChannel/Stream"]  # the refusal kept the stream

        huge = {"w": np.zeros(10_000_000, np.float32)}  # 40 chunks, refused on its header
        with pytest.raises(ChannelError) as info:
            await t1["param"].send("agg", Message("update", round=4, weights=huge))
        assert "INVALID_ARGUMENT" in str(info.value) and "limit" in str(info.value)
        await t1["param"].send("agg", Message("update", round=5))
        got = [(await agg["param"].recv("t1", timeout=5)).round for _ in range(3)]
        assert got == [1, 3, 5]
        with pytest.raises(PeerTimeout):
            await agg["param"].recv("t1", timeout=0.2)
        # the sender stopped streaming the refused model (a new stream for the next message)
        # unless it had all been written by the time the refusal came back
        assert len(served_calls) <= 2
    finally:
        await t1.close()
        await agg.close()


class _Relay:
    """A TCP relay in front of a task's server that a test can cut, as a network fault or the
    peer's crash would: every open connection is reset; later connections are relayed again."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        self._open: list[asyncio.StreamWriter] = []
        self.up_bytes = 0
        self.cut_at: int | None = None  # cut once this many bytes went towards the server
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self._upstream.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._open += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, upward=True),
            self._pump(up_reader, writer, upward=False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upward: bool
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if upward:
                    self.up_bytes += len(data)
                    if self.cut_at is not None and self.up_bytes >= self.cut_at:
                        self.cut_at = None
                        self.cut()
                        return
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> None:
        self.cuts += 1
        for w in self._open:
            w.transport.abort()
        self._open.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[ChannelSet, ChannelSet, _Relay]]:
    """agg and t1, t1 reaching agg through a relay the test can cut."""
    job = uuid.uuid4().hex
    agg_discovery, t1_discovery = MemoryDiscovery(), MemoryDiscovery()
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}), discovery=agg_discovery, settings=SETTINGS
    )
    relay = _Relay(await agg_discovery.resolve("agg", 1))
    await t1_discovery.register("agg", await relay.start())
    t1 = await open_channels(
        _config(job, "t1", {"agg": "aggregator"}), discovery=t1_discovery, settings=SETTINGS
    )
    yield agg, t1, relay
    await t1.close()
    await agg.close()
    await relay.close()


async def test_a_stream_broken_mid_message_is_resent_and_arrives_once(
    relayed: tuple[ChannelSet, ChannelSet, _Relay],
) -> None:
    agg, t1, relay = relayed
    await t1["param"].send("agg", Message("update", round=1))  # the stream is up
    model = {"w": np.arange(2_000_000, dtype=np.float32)}  # 8 MB: 8 chunks
    relay.cut_at = relay.up_bytes + 3_000_000
    with capture_logs() as logs:
        await t1["param"].send("agg", Message("update", round=2, weights=model))
    assert relay.cuts == 1 and any(e["event"] == "grpc.retry" for e in logs)
    await t1["param"].send("agg", Message("update", round=3))
    assert (await agg["param"].recv("t1", timeout=5)).round == 1
    got = await agg["param"].recv("t1", timeout=5)
    assert got.round == 2 and got.weights is not None
    np.testing.assert_array_equal(got.weights["w"], model["w"])
    assert (await agg["param"].recv("t1", timeout=5)).round == 3
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)


async def test_a_receipt_lost_on_the_way_back_means_a_resend_that_is_dropped(
    relayed: tuple[ChannelSet, ChannelSet, _Relay], monkeypatch: pytest.MonkeyPatch
) -> None:
    agg, t1, relay = relayed
    chan = agg["param"]
    deliver = chan.deliver

    def deliver_then_cut(msg: Message, digest: tuple[int, bytes] | None = None) -> bool:
        delivered = deliver(msg, digest)
        if msg.round == 2 and not relay.cuts:
            relay.cut()  # the message is in the inbox; its receipt will never reach t1
        return delivered

    monkeypatch.setattr(chan, "deliver", deliver_then_cut)
    await t1["param"].send("agg", Message("update", round=1))
    with capture_logs() as logs:
        await t1["param"].send("agg", Message("update", round=2))
    assert relay.cuts == 1
    assert any(e["event"] == "message.duplicate_dropped" for e in logs)
    assert [(await agg["param"].recv("t1", timeout=5)).round for _ in range(2)] == [1, 2]
    with pytest.raises(PeerTimeout):
        await agg["param"].recv("t1", timeout=0.2)


async def test_a_task_closes_promptly_while_peers_hold_streams_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a grace far longer than any close on a loaded machine: waiting it out would show
    monkeypatch.setattr(grpc_channels, "STOP_GRACE", 60.0)
    agg, t1, _ = await _pair(uuid.uuid4().hex)
    try:
        await t1["param"].send("agg", Message("update", round=1))
        await agg["param"].recv("t1", timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await agg.close()  # t1's stream to it is open and idle: nothing to wait for
        assert loop.time() - started < 30
    finally:
        await t1.close()
        await agg.close()


async def test_a_message_left_half_sent_does_not_hold_its_buffer() -> None:
    """A job member that announces a big message and stops sending inside it would keep the
    receiver's buffer for it (up to max_message_bytes) as long as the stream stays open: the
    receiver ends such a stream once no chunk came for the send timeout (the sender has given
    up on the message by then)."""
    job = uuid.uuid4().hex
    discovery = MemoryDiscovery()
    settings = ChannelSettings(send_timeout=1.0, retry_initial=0.02, retry_max=0.1)
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}), discovery=discovery, settings=settings
    )
    try:
        endpoint = await discovery.resolve("agg", 1)
        chunks = list(pb_chunks(_msg(job), "agg", 1024))
        async with grpc.aio.insecure_channel(endpoint) as conn:
            call = data_pb2_grpc.DataChannelStub(conn).Stream(timeout=120)
            with capture_logs() as logs:
                await call.write(chunks[0])  # then nothing more, and the stream stays open
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await call.read()
                code = await call.code()
            assert code in ABORTED, code  # ended by the receiver, well before the call's 120 s
            rejected = [e["reason"] for e in logs if e["event"] == "message.rejected"]
            assert rejected and "no chunk" in rejected[0], rejected
    finally:
        await agg.close()
