"""One contract for every deployer (STYLE §1): start, observe success and failure, stop, adopt
after a controller restart without a second start, output shipped once. Each deployer runs the
same little role program: it prints a line per start, then exits or waits as its
hyperparameters say (``mode``: ``exit`` with ``code``, or ``wait`` until the test's
``release`` port says go: over the network, which a sandboxed task keeps, and not through a
file, which it cannot see).

Backends: ``local`` (child processes), ``local-warm`` (the same, each first attempt taken by a
warm runner started ahead) and ``kubernetes`` (Jobs, against the fake API server of
``tests/fake_kubernetes`` on loopback, whose kubelet runs each pod's command as a process; one
namespace per test). Kubernetes merges a container's stdout and stderr into one log, so the
contract asks for every line, and the stream only where the backend keeps it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from flame_controller.deployers.base import Deployer, Launch
from flame_controller.deployers.kubernetes import (
    RBAC,
    KubernetesDeployer,
    KubernetesDeployerSettings,
)
from flame_controller.deployers.local import LocalDeployer, LocalDeployerSettings
from flame_spec import TaskConfig, parse_design, parse_job_spec
from tests.fake_kubernetes import FakeKubernetes

ROLE = r"""
import json, os, sys, time
from pathlib import Path
cfg = json.loads(Path(sys.argv[1]).read_text())
hp = cfg["job"]["hyperparameters"]
print(f"started {os.getpid()} attempt-config {cfg['task_id']}", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if hp["mode"] == "exit":
    if hp.get("why"):
        print("flame.launch: " + hp["why"], file=sys.stderr, flush=True)
    sys.exit(hp["code"])
import socket
while True:
    if hp.get("release"):
        try:
            with socket.create_connection(("127.0.0.1", hp["release"]), timeout=5) as s:
                if s.recv(1) == b"g":
                    break
        except OSError:
            pass
    time.sleep(0.05)
print("released", flush=True)
"""
DESIGN = parse_design(
    {
        "roles": [
            {"name": "trainer", "isDataConsumer": True},
            {"name": "aggregator"},
        ]
    }
)

DeployerFactory = Callable[[], Deployer]


def code_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("aggregator/main.py", ROLE)
    return buf.getvalue()


IMAGE = "flame/task-runner:test"


@pytest.fixture(scope="module")
def fake_kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    root = tmp_path_factory.mktemp("kubernetes")
    with FakeKubernetes(root, images={IMAGE: {"python": sys.executable}}, rbac=RBAC) as fake:
        yield fake


def kubernetes_settings(
    fake: FakeKubernetes, tmp_path: Path, namespace: str
) -> KubernetesDeployerSettings:
    return KubernetesDeployerSettings(
        namespace=namespace,
        runner_image=IMAGE,
        kubeconfig=str(fake.kubeconfig(tmp_path / "kubeconfig")),
        command=["python", "bundle/code/aggregator/main.py"],
        stop_grace_seconds=2,
        task_labels={"app.kubernetes.io/name": "flame", "app.kubernetes.io/component": "task"},
    )


@pytest.fixture(params=["local", "local-warm", "kubernetes"])
async def factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DeployerFactory]:
    """Each call is a new deployer instance over the same state: a restarted controller."""
    made: list[Deployer] = []

    def make() -> Deployer:
        d: Deployer
        if request.param == "kubernetes":
            d = KubernetesDeployer(settings)
        else:
            warm = request.param == "local-warm"
            d = local = LocalDeployer(
                tmp_path / "data",
                LocalDeployerSettings(
                    python=sys.executable,
                    launch_args=["code/aggregator/main.py"],
                    stop_grace_seconds=2,
                    warm_runners=1 if warm else 0,
                ),
            )
            if warm:  # a first attempt runs in a process started ahead (prepare's runner)
                local.fill_warm()
        made.append(d)
        return d

    if request.param == "kubernetes":
        fake = request.getfixturevalue("fake_kubernetes")
        settings = kubernetes_settings(fake, tmp_path, f"t-{uuid.uuid4().hex[:10]}")
    yield make
    for d in made:
        await d.close()
    _kill_processes_under(tmp_path)  # what a failed test left running


def _kill_processes_under(root: Path) -> None:
    left = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(root)):
                left.append(proc)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=10)


class Release:
    """A port on loopback that tells the waiting role program to finish, once set."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.go = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                if self.go.is_set():
                    conn.sendall(b"g")
                    conn.close()
                else:
                    self.held.append(conn)

    def set(self) -> None:
        self.go.set()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.sendall(b"g")
                conn.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def release() -> Iterator[Release]:
    r = Release()
    yield r
    r.close()


def launch(tmp_path: Path, attempt: int = 1, **hp: Any) -> Launch:
    del tmp_path
    spec = parse_job_spec({"datasets": {"default": ["d"]}, "hyperparameters": hp})
    config = TaskConfig(
        job_id="job-1",
        job_name="demo",
        task_id="aggregator-0-abc",
        role="aggregator",
        design=DESIGN,
        job=spec,
    )
    return Launch(
        job_id="job-1",
        task_id="aggregator-0-abc",
        role="aggregator",
        attempt=attempt,
        config=config,
        code=code_zip(),
        credential="flm_task_secret",
    )


async def until(pred: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


async def lines(d: Deployer, handle: str) -> list[tuple[str, str]]:
    out = await d.read_output(handle, final=True)
    await d.ack_output(handle, out)
    return out.lines


async def test_a_task_that_exits_0_is_observed_completed(
    factory: DeployerFactory, tmp_path: Path
) -> None:
    d = factory()
    handle = await d.start(launch(tmp_path, mode="exit", code=0))
    await until(lambda: _state(d, handle, "exited"))
    seen = await d.observe(handle)
    assert (seen.state, seen.exit_code) == ("exited", 0)


async def test_a_failing_task_is_observed_with_its_exit_code(
    factory: DeployerFactory, tmp_path: Path
) -> None:
    d = factory()
    handle = await d.start(launch(tmp_path, mode="exit", code=3))
    await until(lambda: _state(d, handle, "exited"))
    seen = await d.observe(handle)
    assert (seen.state, seen.exit_code, seen.detail) == ("exited", 3, "exit code 3")
    again = await factory().observe(handle)  # a restarted controller sees the same outcome
    assert (again.state, again.exit_code) == ("exited", 3)


async def test_stop_ends_a_running_task(factory: DeployerFactory, tmp_path: Path) -> None:
    d = factory()
    handle = await d.start(launch(tmp_path, mode="wait"))
    await until(lambda: _has_output(d, handle))
    assert (await d.observe(handle)).state == "running"
    await d.stop(handle)
    assert (await d.observe(handle)).state != "running"
    await d.stop(handle)  # stopping what has ended is fine


async def test_a_restarted_controller_adopts_and_never_starts_twice(
    factory: DeployerFactory, tmp_path: Path, release: Release
) -> None:
    first = factory()
    task = launch(tmp_path, mode="wait", release=release.port)
    handle = await first.start(task)
    await until(lambda: _has_output(first, handle))
    await first.close()  # the controller goes away; the task keeps running

    second = factory()
    assert await second.adopt(handle)
    # the crash window: the handle never reached the store; start() finds the running attempt
    assert await second.start(task) == handle
    predicted = second.handle_for(task.job_id, task.task_id, task.attempt)
    assert (await second.observe(predicted)).state == "running"
    release.set()
    await until(lambda: _state(second, handle, "exited"))
    got = await lines(second, handle)
    assert sum(1 for _, text in got if text.startswith("started")) == 1  # started once
    assert ("stdout", "released") in got


async def test_output_is_shipped_once_even_across_a_restart(
    factory: DeployerFactory, tmp_path: Path
) -> None:
    d = factory()
    handle = await d.start(launch(tmp_path, mode="exit", code=0))
    await until(lambda: _state(d, handle, "exited"))
    out = await d.read_output(handle, final=True)
    assert any(t == "to stderr" for _, t in out.lines)
    assert any(s == "stdout" and t.startswith("started") for s, t in out.lines)
    assert (await d.read_output(handle, final=True)) == out  # not acknowledged: same again
    await d.ack_output(handle, out)
    assert (await factory().read_output(handle, final=True)).lines == []


async def test_a_new_attempt_after_an_exit_runs_again(
    factory: DeployerFactory, tmp_path: Path
) -> None:
    d = factory()
    h1 = await d.start(launch(tmp_path, attempt=1, mode="exit", code=1))
    await until(lambda: _state(d, h1, "exited"))
    h2 = await d.start(launch(tmp_path, attempt=2, mode="exit", code=0))
    await until(lambda: _state(d, h2, "exited"))
    assert (await d.observe(h2)).exit_code == 0
    output = await lines(d, h1) + await lines(d, h2)
    starts = [t for _, t in output if t.startswith("started")]
    assert len(starts) == 2  # both attempts ran, each once


async def _state(d: Deployer, handle: str, state: str) -> bool:
    return (await d.observe(handle)).state == state


async def _has_output(d: Deployer, handle: str) -> bool:
    return bool((await d.read_output(handle)).lines)


async def test_a_failed_tasks_detail_carries_the_reason_the_task_gave(
    factory: DeployerFactory, tmp_path: Path
) -> None:
    d = factory()
    why = "configuration error: dataset 'd' has 3 samples; the job needs at least 10"
    handle = await d.start(launch(tmp_path, mode="exit", code=2, why=why))
    await until(lambda: _state(d, handle, "exited"))
    seen = await d.observe(handle)
    assert (seen.state, seen.exit_code, seen.detail) == ("exited", 2, f"exit code 2: {why}")
