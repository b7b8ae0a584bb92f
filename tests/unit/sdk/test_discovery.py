import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from flame.channels.discovery import (
    ControlPlaneDiscovery,
    MemoryDiscovery,
    StaticDiscovery,
    discovery_from,
)
from flame.config import DiscoverySettings
from flame.errors import ChannelError, ConfigError, PeerTimeout

TOKEN = "node-secret"


@dataclass
class FakeApiserver:
    """The two agent routes of docs/rest-api.md that discovery uses, over a dict."""

    url: str = ""
    endpoints: dict[str, str] = field(default_factory=dict)
    peer_requests: int = 0


def _app(state: FakeApiserver) -> FastAPI:
    app = FastAPI()
    job = {"agg": "aggregator", "t1": "trainer", "t2": "trainer"}

    def auth(authorization: str | None) -> None:
        if authorization != f"Bearer {TOKEN}":
            raise HTTPException(401, "unauthenticated")

    @app.post("/v1/agent/tasks/{task_id}/endpoint")
    async def endpoint(
        task_id: str, body: dict[str, str], authorization: str | None = Header(None)
    ) -> dict[str, str]:
        auth(authorization)
        if task_id not in job:
            raise HTTPException(404, "no such task")
        state.endpoints[task_id] = body["endpoint"]
        return {"task_id": task_id, "endpoint": body["endpoint"]}

    @app.get("/v1/agent/tasks/{task_id}/peers")
    async def peers(task_id: str, authorization: str | None = Header(None)) -> dict[str, object]:
        auth(authorization)
        state.peer_requests += 1
        return {
            "items": [
                {"task_id": t, "role": r, "endpoint": state.endpoints.get(t, "")}
                for t, r in job.items()
                if t != task_id
            ]
        }

    return app


@pytest.fixture
async def apiserver() -> AsyncIterator[FakeApiserver]:
    state = FakeApiserver()
    server = uvicorn.Server(
        uvicorn.Config(_app(state), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    server.should_exit = True
    await task


async def test_control_plane_discovery_waits_until_the_peer_registers(
    apiserver: FakeApiserver,
) -> None:
    agg = ControlPlaneDiscovery(apiserver.url, TOKEN, "agg", retry_initial=0.01, retry_max=0.05)
    t1 = ControlPlaneDiscovery(apiserver.url, TOKEN, "t1")
    try:
        lookup = asyncio.create_task(agg.resolve("t1", timeout=10))
        deadline = asyncio.get_running_loop().time() + 5
        while apiserver.peer_requests < 2:  # agg has asked at least twice, in vain
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert not lookup.done()
        await t1.register("t1", "10.0.0.5:4321")
        assert await lookup == "10.0.0.5:4321"
        assert apiserver.endpoints == {"t1": "10.0.0.5:4321"}
    finally:
        await agg.close()
        await t1.close()


async def test_control_plane_discovery_times_out_and_rejects_bad_credentials(
    apiserver: FakeApiserver,
) -> None:
    d = ControlPlaneDiscovery(apiserver.url, TOKEN, "agg", retry_initial=0.01, retry_max=0.02)
    bad = ControlPlaneDiscovery(apiserver.url, "wrong", "agg")
    try:
        with pytest.raises(PeerTimeout):
            await d.resolve("t2", timeout=0.2)
        with pytest.raises(ChannelError):
            await bad.register("agg", "127.0.0.1:1")
        with pytest.raises(ChannelError):
            await bad.resolve("t1", timeout=1)
    finally:
        await d.close()
        await bad.close()


async def test_control_plane_discovery_retries_while_the_apiserver_is_down() -> None:
    d = ControlPlaneDiscovery("http://127.0.0.1:9", TOKEN, "agg", retry_initial=0.01)
    try:
        with pytest.raises(PeerTimeout):
            await d.resolve("t1", timeout=0.3)
        with pytest.raises(ChannelError):
            await d.register("agg", "127.0.0.1:1", timeout=0.3)
    finally:
        await d.close()


async def test_registration_rides_out_a_restarting_control_plane_but_not_a_refusal() -> None:
    answers = iter([503, 503, 502, 200, 404])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(next(answers), json={"detail": "controller unavailable"})

    d = ControlPlaneDiscovery(
        "http://cp", TOKEN, "agg", retry_initial=0.01, transport=httpx.MockTransport(handler)
    )
    try:
        await d.register("agg", "127.0.0.1:1")
        assert len(calls) == 4
        with pytest.raises(ChannelError, match="404"):
            await d.register("agg", "127.0.0.1:1")
        assert len(calls) == 5
    finally:
        await d.close()


async def test_memory_discovery_wakes_waiters_on_register() -> None:
    d = MemoryDiscovery()
    lookup = asyncio.create_task(d.resolve("t1", timeout=5))
    await asyncio.sleep(0)
    await d.register("t1", "127.0.0.1:5000")
    assert await lookup == "127.0.0.1:5000"
    d.unregister("t1")
    with pytest.raises(PeerTimeout):
        await d.resolve("t1", timeout=0.05)


async def test_static_discovery_uses_its_table() -> None:
    d = StaticDiscovery({"agg": "10.0.0.1:7000"})
    assert d.bind_port("agg") == 7000 and d.bind_port("t1") == 0
    assert await d.resolve("agg") == "10.0.0.1:7000"
    with pytest.raises(ChannelError):
        await d.resolve("t1")
    with pytest.raises(ConfigError):
        StaticDiscovery({"x": "nohost"}).bind_port("x")


def test_discovery_from_settings() -> None:
    assert isinstance(discovery_from(DiscoverySettings(), "t1"), StaticDiscovery)
    cp = discovery_from(DiscoverySettings(kind="control-plane", url="http://x"), "t1")
    assert isinstance(cp, ControlPlaneDiscovery)
    with pytest.raises(ConfigError):
        discovery_from(DiscoverySettings(kind="control-plane"), "t1")


async def test_grpc_tasks_find_each_other_through_the_control_plane(
    apiserver: FakeApiserver,
) -> None:
    from flame.channels import open_channels
    from flame.config import ChannelMembership, DesignSchema, JobSpec, PeerRef, TaskConfig
    from flame.messages import Message

    design = DesignSchema.model_validate(
        {
            "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
            "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
        }
    )

    def cfg(task: str, peer: str, role: str) -> TaskConfig:
        return TaskConfig(
            job_id="j",
            job_name="cp",
            task_id=task,
            role="aggregator" if task == "agg" else "trainer",
            design=design,
            job=JobSpec(),
            channels={
                "param": ChannelMembership(
                    name="param",
                    group="default",
                    backend="grpc",
                    peers=[PeerRef(task_id=peer, role=role)],
                )
            },
            discovery=DiscoverySettings(kind="control-plane", url=apiserver.url, token=TOKEN),
        )

    t1 = await open_channels(cfg("t1", "agg", "aggregator"))
    agg = await open_channels(cfg("agg", "t1", "trainer"))
    try:
        assert set(apiserver.endpoints) == {"t1", "agg"}
        await t1["param"].send("agg", Message("update", round=4))
        assert (await agg["param"].recv("t1", timeout=5)).round == 4
        await agg["param"].send("t1", Message("weights", round=5))
        assert (await t1["param"].recv("agg", timeout=5)).round == 5
    finally:
        await t1.close()
        await agg.close()
