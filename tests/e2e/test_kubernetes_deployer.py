"""A real Flame job whose aggregator runs as a Kubernetes Job ends with the same model as with
the local deployer.

The embedded stack (controller, notifier, apiserver, two flamelets as processes) runs with
``FLAME_CONTROLLER_DEPLOYER=kubernetes`` against the fake API server of tests/fake_kubernetes,
whose kubelet runs the task-runner's command (``python -m flame.launch bundle/config.json``) as a
local process in a folder standing in for the pod. The digits central example (2 trainers on the
flamelets, 3 rounds) completes; its aggregator's final weights are compared with those of the
same job run by the local deployer on the same stack (the controller restarted with
``FLAME_CONTROLLER_DEPLOYER=local``), and everything the deployer made for the job is gone
once it has finished.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from flame.cli.code import zip_folder
from flame.tensors import from_bytes
from flame_controller.deployers.kubernetes import RBAC
from tests.e2e.jobs_harness import EXAMPLES, Cluster, aggregator_result, example_spec, start_cluster
from tests.fake_kubernetes import FakeKubernetes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

IMAGE = "flame/task-runner:e2e"
NAMESPACE = "flame"
SPEC = {"rounds": 3, "min_trainers": 2, "seed": 0, "round_timeout": 60}
RESOURCES = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(
        tmp_path_factory.mktemp("k8s"), images={IMAGE: {"python": sys.executable}}, rbac=RBAC
    ) as f:
        yield f


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, fake: FakeKubernetes) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLAME_CONTROLLER_DEPLOYER", "kubernetes")
        env.setenv("FLAME_KUBERNETES_KUBECONFIG", str(fake.kubeconfig(home / "kubeconfig")))
        env.setenv("FLAME_KUBERNETES_NAMESPACE", NAMESPACE)
        env.setenv("FLAME_KUBERNETES_RUNNER_IMAGE", IMAGE)
        env.setenv("FLAME_KUBERNETES_SERVICE_ACCOUNT", "flame-task")
        env.setenv(
            "FLAME_KUBERNETES_TASK_LABELS",
            json.dumps({"app.kubernetes.io/name": "flame", "app.kubernetes.io/component": "task"}),
        )
        env.setenv("FLAME_KUBERNETES_TASK_BIND_HOST", "127.0.0.1")  # the fake's pods share lo
        c = start_cluster(home, nodes=2, shards=2)
        try:
            yield c
        finally:
            c.client.close()
            c.stack.down(c.state)


def submit(cluster: Cluster, name: str) -> str:
    """The digits central example, its aggregator with resources in the design."""
    folder = EXAMPLES / "central"
    schema = json.loads((folder / "design.json").read_text())
    for role in schema["roles"]:
        if role["name"] == "aggregator":
            role["resources"] = RESOURCES
    design = cluster.client.create_design(f"{name}-design", schema=schema)
    code = cluster.client.push_code(design.id, zip_folder(folder))
    spec = example_spec("central", {"default": cluster.datasets}, **SPEC)
    job = cluster.client.create_job(name, design.id, spec, code.version).id
    cluster.client.start_job(job)
    return job


def aggregator_task(cluster: Cluster, job_id: str) -> str:
    (task,) = [t.id for t in cluster.client.list_tasks(job_id) if t.role == "aggregator"]
    return task


def until(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def test_a_job_on_kubernetes_ends_with_the_local_deployers_model(
    cluster: Cluster, fake: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    job = submit(cluster, "on-kubernetes")
    assert cluster.wait(job) == "completed", cluster.reason(job)
    k8s_seconds = time.monotonic() - started
    task = aggregator_task(cluster, job)

    # the aggregator ran as a Job: one pod, with the design's resources, hardened
    (pod,) = fake.pods_run(NAMESPACE, **{"flame/task": task})
    (container,) = pod.spec["containers"]
    assert container["resources"] == RESOURCES
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod.spec["automountServiceAccountToken"] is False
    weights = from_bytes((pod.root / "volumes" / "work" / "result.safetensors").read_bytes())
    assert fake.api.audit.count("POST", f"/namespaces/{NAMESPACE}/jobs$") == 1
    (record,) = [t for t in cluster.client.list_tasks(job) if t.id == task]
    assert record.state == "completed"
    # its output reached the control plane from the pod's log
    lines = [x.line for x in cluster.client.get_logs(job, limit=1000).lines if x.task_id == task]
    assert any("task.started" in line for line in lines), lines[:5]
    # at the job's end everything made for it is deleted (anchor -> Jobs, Secrets -> pods)
    until(
        lambda: (
            not any(fake.objects(p, NAMESPACE) for p in ("jobs", "secrets", "configmaps", "pods"))
        ),
        "the job's Kubernetes objects are deleted",
    )
    posts = {
        path: n
        for path in ("jobs", "secrets", "configmaps")
        if (n := fake.api.audit.count("POST", f"/namespaces/{NAMESPACE}/{path}$"))
    }
    assert posts == {"jobs": 1, "secrets": 1, "configmaps": 1}

    # the same job with the local deployer: the controller restarted with it
    cluster.stack.kill(cluster.state, "controller")
    monkeypatch.setenv("FLAME_CONTROLLER_DEPLOYER", "local")
    cluster.stack.respawn(cluster.state, "controller")
    until(lambda: _ready(cluster), "the controller is back")
    started = time.monotonic()
    local_job = submit(cluster, "on-local")
    assert cluster.wait(local_job) == "completed", cluster.reason(local_job)
    local_seconds = time.monotonic() - started
    baseline = aggregator_result(cluster, local_job)

    assert weights.keys() == baseline.keys()
    diff = max(float(np.max(np.abs(weights[k] - baseline[k]))) for k in weights)
    print(
        f"kubernetes {k8s_seconds:.1f}s, local {local_seconds:.1f}s, "
        f"max |w_k8s - w_local| = {diff:.2e} over {sum(w.size for w in weights.values())} weights"
    )
    assert diff <= 1e-6
    assert fake.api.audit.count("POST", f"/namespaces/{NAMESPACE}/jobs$") == 1  # none by local


def _ready(cluster: Cluster) -> bool:
    try:
        with cluster.state.client(timeout=1) as api:
            return api.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False
