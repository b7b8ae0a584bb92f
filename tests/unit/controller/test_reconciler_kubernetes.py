"""The reconciler with the Kubernetes deployer (fake API server of tests/fake_kubernetes): a job
stopped while its aggregator runs as a Kubernetes Job ends that pod gracefully, ships what the
aggregator wrote while stopping, and deletes every Kubernetes object of the job once it is over."""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flame_controller.deployers.kubernetes import (
    RBAC,
    KubernetesDeployer,
    KubernetesDeployerSettings,
)
from flame_controller.store.base import Store
from tests.fake_kubernetes import FakeKubernetes

from .test_reconciler import (  # fixtures too: a sqlite store, a recording notifier
    aggregator,
    bring_to_running,
    create_job,
    eventually,
    job_state,
    make_reconciler,
    notifier,
    running,
    set_desired,
    store,
)

__all__ = ["notifier", "store"]  # the fixtures this module uses

IMAGE = "flame/task-runner:test"
NAMESPACE = "flame"
ROLE = r"""
import signal, sys, time
def bye(*_):
    print("saving a last checkpoint", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, bye)
print("aggregator up", flush=True)
while True:
    time.sleep(0.02)
"""


def code() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("aggregator/main.py", ROLE)
        zf.writestr("trainer/main.py", "print('trainers run on nodes')\n")
    return buf.getvalue()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(
        tmp_path / "k8s", images={IMAGE: {"python": sys.executable}}, rbac=RBAC
    ) as f:
        yield f


async def test_a_stopped_job_ends_its_pod_ships_its_last_lines_and_cleans_up(
    tmp_path: Path, store: Store, notifier: Any, fake: FakeKubernetes
) -> None:
    rec, address = notifier
    await create_job(store, code=code())
    deployer = KubernetesDeployer(
        KubernetesDeployerSettings(
            namespace=NAMESPACE,
            runner_image=IMAGE,
            kubeconfig=str(fake.kubeconfig(tmp_path / "kubeconfig")),
            command=["python", "bundle/code/aggregator/main.py"],
            stop_grace_seconds=5,
        )
    )
    r = make_reconciler(store, deployer, address, interval=0.2)
    async with running(r):
        await bring_to_running(store, r, rec)
        agg = await aggregator(store)
        assert agg.handle == f"{NAMESPACE}/{agg.handle.split('/')[1]}"

        async def shipped(line: str) -> bool:
            return line in {x.line for x in await store.read_logs("job-1", task_id=agg.id)}

        await eventually(lambda: shipped("aggregator up"), what="its first line is shipped")
        await set_desired(store, r, "stopped")
        await eventually(lambda: job_is_terminated(store), what="the job is terminated")
        await eventually(
            lambda: (
                not any(
                    fake.objects(p, NAMESPACE) for p in ("jobs", "pods", "secrets", "configmaps")
                )
            ),
            what="every Kubernetes object of the job is deleted",
        )
    assert (await aggregator(store)).state == "terminated"
    assert await shipped("saving a last checkpoint")  # written after SIGTERM, not lost
    (pod,) = fake.pods_run(NAMESPACE)
    assert pod.spec["terminationGracePeriodSeconds"] == 5


async def job_is_terminated(store: Store) -> bool:
    return await job_state(store) == "terminated"
