"""Several controller replicas, one leader (a coordination.k8s.io Lease on the fake API server of
tests/fake_kubernetes), and the plaintext health-only port the kubelet probes:

* the health port answers grpc.health.v1 from the same servicer as the main port, and serves
  nothing else (no ControlPlane, no reflection);
* of two replicas exactly one leads: it reconciles and reports flame.v1.ControlPlane SERVING; the
  standby reports NOT_SERVING (and SERVING for the server as a whole: it is alive);
* a leader that stops gives the Lease up and the standby takes over at once; a leader that
  crashes is replaced once its Lease expires; a leader that cannot renew (another holder took
  the Lease) steps down within its renew deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flame_controller.kubeapi import api_client
from flame_controller.leadership import RBAC, LeaderElector, LeaseLock, Timing
from flame_controller.server import SERVICE_NAME, RunningController, serve
from flame_controller.settings import ControllerSettings
from flame_proto.v1 import control_pb2 as pb
from flame_proto.v1 import control_pb2_grpc
from flame_service.connect import grpc_channel
from tests.fake_kubernetes import FakeKubernetes
from tests.support import service_token_file

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAST = Timing(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(tmp_path_factory.mktemp("kubernetes"), rbac=RBAC) as f:
        yield f


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def status(port: int, service: str) -> int:
    async with grpc_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        return int(reply.status)


# -- the health-only port --------------------------------------------------------------------


async def test_the_health_port_serves_health_and_nothing_else(tmp_path: Path) -> None:
    running = await serve(
        ControllerSettings(
            data_dir=tmp_path,
            store_uri="sqlite://:memory:",
            listen="127.0.0.1:0",
            health_listen="127.0.0.1:0",
            notifier_address="",
            admin_token="flm_user_admin",
            service_token_file=service_token_file(tmp_path / "secrets"),
        ),
        workers=[],
    )
    try:
        assert running.health_port is not None and running.health_port != running.port
        for port in (running.port, running.health_port):
            assert await status(port, "") == SERVING
            assert await status(port, SERVICE_NAME) == SERVING
        assert running.health is not None  # one servicer behind both ports
        await running.health.set(SERVICE_NAME, NOT_SERVING)
        assert await status(running.health_port, SERVICE_NAME) == NOT_SERVING
        async with grpc_channel(f"127.0.0.1:{running.health_port}") as channel:
            control = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.Authenticate(pb.AuthenticateRequest(token="x"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            listing = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in listing.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                ):
                    pass
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with grpc_channel(f"127.0.0.1:{running.port}") as channel:  # the main port does
            control = control_pb2_grpc.ControlPlaneStub(channel)  # type: ignore[misc]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await control.Authenticate(pb.AuthenticateRequest(token="x"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(0)


def test_impossible_election_timing_is_refused() -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        ControllerSettings(
            leader_election=True,
            leader_election_lease_duration_seconds=5,
            leader_election_renew_deadline_seconds=10,
        )


# -- two controllers, one leader -------------------------------------------------------------


class Pair:
    def __init__(
        self, fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.fake, self.tmp = fake, tmp_path
        self.ns = f"le-{uuid.uuid4().hex[:8]}"
        self.lease = "flame-controller"
        monkeypatch.setenv("FLAME_KUBERNETES_KUBECONFIG", str(fake.kubeconfig(tmp_path / "kc")))
        self.running: dict[str, RunningController] = {}
        self.passes: dict[str, int] = {}

    async def start(self, name: str) -> RunningController:
        passes = self.passes

        class Counting:  # a worker standing in for the reconciler: counts its passes
            def __init__(self) -> None:
                self.stopped = asyncio.Event()

            async def run(self) -> None:
                while not self.stopped.is_set():
                    passes[name] = passes.get(name, 0) + 1
                    await asyncio.sleep(0.01)

            async def stop(self) -> None:
                self.stopped.set()

        running = await serve(
            ControllerSettings(
                data_dir=self.tmp / name,
                store_uri="sqlite://:memory:",
                listen="127.0.0.1:0",
                health_listen="127.0.0.1:0",
                notifier_address="",
                admin_token="flm_user_admin",
                service_token_file=service_token_file(self.tmp / "secrets"),
                leader_election=True,
                leader_election_namespace=self.ns,
                leader_election_lease_name=self.lease,
                leader_election_identity=name,
                leader_election_lease_duration_seconds=FAST.lease_duration,
                leader_election_renew_deadline_seconds=FAST.renew_deadline,
                leader_election_retry_period_seconds=FAST.retry_period,
            ),
            workers=[lambda ctx, settings: Counting()],
        )
        self.running[name] = running
        return running

    async def ready(self, name: str) -> bool:
        port = self.running[name].health_port
        assert port is not None
        return await status(port, SERVICE_NAME) == SERVING

    def holder(self) -> str | None:
        lease = self.fake.get("leases", self.ns, self.lease)
        return (lease or {}).get("spec", {}).get("holderIdentity")


@pytest.fixture
async def pair(
    fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Pair]:
    p = Pair(fake, tmp_path, monkeypatch)
    yield p
    for running in p.running.values():
        await running.stop(0)


async def test_one_leader_reconciles_and_is_ready_the_standby_is_not(pair: Pair) -> None:
    await pair.start("a")
    await until(lambda: pair.ready("a"), "a leads")
    await pair.start("b")
    await asyncio.sleep(FAST.lease_duration * 2)  # b campaigns all this time
    assert pair.holder() == "a"
    assert await pair.ready("a") and not await pair.ready("b")
    b_health = pair.running["b"].health_port
    assert b_health is not None
    assert await status(b_health, "") == SERVING  # alive (liveness), only not the leader
    assert pair.passes.get("a", 0) > 0 and pair.passes.get("b", 0) == 0

    # a stops cleanly: it gives the Lease up and b takes over well before it would expire
    a = pair.running.pop("a")
    stopped = time.monotonic()
    await a.stop(0)
    passes = pair.passes["a"]  # a's worker has stopped with it
    await until(lambda: pair.ready("b"), "b takes over")
    assert time.monotonic() - stopped < FAST.lease_duration + 1.0
    assert pair.holder() == "b"
    await until(lambda: pair.passes.get("b", 0) > 0, "b reconciles")
    assert pair.passes["a"] == passes  # and never ran again: one writer


async def test_a_crashed_leader_is_replaced_when_its_lease_expires(
    fake: FakeKubernetes, tmp_path: Path
) -> None:
    ns = f"le-{uuid.uuid4().hex[:8]}"
    api = api_client(str(fake.kubeconfig(tmp_path / "kc")))
    events: list[str] = []

    def elector(name: str) -> LeaderElector:
        async def started() -> None:
            events.append(f"{name} leads")

        async def stopped() -> None:
            events.append(f"{name} stepped down")

        lock = LeaseLock(api, ns, "lease", name)
        return LeaderElector(lock, FAST, on_started=started, on_stopped=stopped)

    a, b = elector("a"), elector("b")
    a_task = asyncio.create_task(a.run())
    await until(lambda: a.leading, "a leads")
    b_task = asyncio.create_task(b.run())
    a_task.cancel()  # a dies without a word: no release, no more renewals
    await asyncio.gather(a_task, return_exceptions=True)
    crashed = time.monotonic()
    await until(lambda: b.leading, "b takes over")
    waited = time.monotonic() - crashed
    assert FAST.lease_duration - FAST.retry_period <= waited < FAST.lease_duration + 2.0
    await b.stop()
    await b_task
    assert events == ["a leads", "b leads", "b stepped down"]
    api.close()


async def test_a_leader_that_cannot_renew_steps_down(fake: FakeKubernetes, tmp_path: Path) -> None:
    ns = f"le-{uuid.uuid4().hex[:8]}"
    api = api_client(str(fake.kubeconfig(tmp_path / "kc")))
    down = asyncio.Event()

    async def nothing() -> None:
        return None

    async def stepped_down() -> None:
        down.set()

    a = LeaderElector(
        LeaseLock(api, ns, "lease", "a"), FAST, on_started=nothing, on_stopped=stepped_down
    )
    task = asyncio.create_task(a.run())
    await until(lambda: a.leading, "a leads")

    def usurp() -> None:  # e.g. a replica on the other side of a partition took it over
        lease = fake.store.find("leases", ns, "lease")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["leaseDurationSeconds"] = 3600
        fake.store.put("leases", lease)

    fake.call(usurp)
    lost_at = time.monotonic()
    await asyncio.wait_for(down.wait(), timeout=30)
    assert not a.leading
    assert time.monotonic() - lost_at < FAST.renew_deadline + 1.0
    await a.stop()
    await task
    lease = fake.get("leases", ns, "lease")
    assert lease is not None and lease["spec"]["holderIdentity"] == "intruder"  # not released
    api.close()
