"""Bad input on the real embedded stack is refused, logged and recorded, and nothing runs.

One stack (controller on SQLite, notifier, apiserver, 2 flamelets) serves the module. Each
case tampers with what a node or the deployer would run — the stored code blob (sha256
mismatch), a zip with a path escape behind a "fixed" sha256 in the store, a node credential
used for another node's task, a revoked node — and checks the user-visible outcome: the job
(or a task) names the cause, and no task process ever started.

The ``distributed`` example has only data-consumer (flamelet) tasks, so it exercises the
flamelet's own checks; ``central`` adds a deployer-run aggregator, exercising the controller's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flame.cli.client import ApiError
from tests.e2e.bad_input_helpers import (
    Prepared,
    add_dataset,
    add_node,
    agent_log_lines,
    blob_path,
    dataset_path,
    evidence_of_runs,
    example_zip,
    flamelet_events,
    log_events,
    node_credential,
    node_id,
    prepare_job,
    set_code_sha256,
    wait_tasks_settled,
    wait_terminal,
)
from tests.e2e.jobs_harness import EXAMPLES, Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPEC = {"rounds": 2, "min_trainers": 2, "max_run_time": 120}
EVIL = b"print('this must never run')\n"
ESCAPES = ("../escaped.txt", "../../escaped.txt", "../../../escaped.txt")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("badinput")
    c = start_cluster(home, nodes=2, shards=2)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def _two_trainers(cluster: Cluster) -> dict[str, list[str]]:
    return {"default": cluster.datasets[:2]}  # digits-0 on node-0, digits-1 on node-1


def _reasons(cluster: Cluster, job_id: str) -> list[str]:
    return [cluster.client.get_job(job_id).reason] + [
        t.reason for t in cluster.client.list_tasks(job_id)
    ]


def _finish(cluster: Cluster, job: Prepared) -> tuple[str, list[str]]:
    """Start the job, wait for it and its tasks to end; its state and every reason."""
    cluster.client.start_job(job.job_id)
    state = wait_terminal(cluster.client, job.job_id)
    wait_tasks_settled(cluster.client, job.job_id)
    return state, _reasons(cluster, job.job_id)


def _refusals(cluster: Cluster, job: Prepared) -> list[str]:
    """Reasons of the ``task.refused`` events the flamelets logged for the job's tasks."""
    ids = {t.id for t in cluster.client.list_tasks(job.job_id)}
    return [
        str(ev.get("reason"))
        for node in cluster.state.nodes
        for ev in flamelet_events(cluster, node)
        if ev.get("event") == "task.refused" and ev.get("task_id") in ids
    ]


def _tamper_blob(cluster: Cluster, job: Prepared, example: str) -> bytes:
    """Replace the stored blob with another valid zip of the same code plus an extra module."""
    other = example_zip(example, {"evil.py": EVIL})
    blob_path(cluster, job.blob_key).write_bytes(other)
    assert hashlib.sha256(other).hexdigest() != job.code_sha256
    return other


def _plant_escape(cluster: Cluster, job: Prepared, example: str) -> None:
    """Replace the blob with a zip holding ``../`` members and make the stored sha256 match it
    (the apiserver refuses such an upload, so only someone with store access gets this far)."""
    evil = example_zip(example, dict.fromkeys(ESCAPES, EVIL))
    blob_path(cluster, job.blob_key).write_bytes(evil)
    set_code_sha256(cluster, job.design_id, job.code_version, hashlib.sha256(evil).hexdigest())


def _escaped_files(cluster: Cluster) -> list[Path]:
    """Any file a ``../`` member may have produced, anywhere in the stack's folder (the
    flamelets' homes and the deployer's task folders are inside it) or next to it."""
    home = Path(cluster.state.home)
    return [*home.rglob("escaped.txt"), *home.parent.glob("escaped.txt")]


# ---- sha256 mismatch -----------------------------------------------------------------------


def test_tampered_bundle_is_refused_by_the_nodes(cluster: Cluster) -> None:
    job = prepare_job(
        cluster, "distributed", "bad-sha-nodes", _two_trainers(cluster),
        example_zip("distributed"), **SPEC,
    )  # fmt: skip
    _tamper_blob(cluster, job, "distributed")

    state, reasons = _finish(cluster, job)

    assert state == "failed", reasons
    assert any("sha256" in r for r in reasons), reasons
    # Until the controller checks the blob itself (see the deployer case below), the nodes are
    # the ones that catch it; once it does, no node may ever be handed the task.
    refusals = _refusals(cluster, job)
    assert all("sha256 mismatch" in r for r in refusals), refusals
    agent_lines = agent_log_lines(cluster.client, job.job_id)
    assert all("sha256 mismatch" in line for line in agent_lines), agent_lines
    assert evidence_of_runs(cluster, job.job_id) == []


def test_tampered_bundle_is_not_run_by_the_deployer(cluster: Cluster) -> None:
    job = prepare_job(
        cluster, "central", "bad-sha-deployer", _two_trainers(cluster),
        example_zip("central"), **SPEC,
    )  # fmt: skip
    _tamper_blob(cluster, job, "central")

    state, reasons = _finish(cluster, job)

    assert state == "failed", reasons
    assert any("sha256" in r for r in reasons), reasons
    assert evidence_of_runs(cluster, job.job_id) == []


# ---- path escape ---------------------------------------------------------------------------


def test_apiserver_refuses_an_upload_with_a_path_escape(cluster: Cluster) -> None:
    schema = json.loads((EXAMPLES / "central" / "design.json").read_text())
    design = cluster.client.create_design("bad-upload-design", schema=schema)
    with pytest.raises(ApiError) as refused:
        cluster.client.push_code(design.id, example_zip("central", {"../escaped.txt": EVIL}))
    assert refused.value.status == 400 and refused.value.code == "invalid_argument"
    assert "escaped.txt" in refused.value.detail and ".." in refused.value.detail
    assert cluster.client.list_code(design.id) == []


def test_path_escape_bundle_is_refused_by_the_nodes(cluster: Cluster) -> None:
    job = prepare_job(
        cluster, "distributed", "bad-zip-nodes", _two_trainers(cluster),
        example_zip("distributed"), **SPEC,
    )  # fmt: skip
    _plant_escape(cluster, job, "distributed")

    state, reasons = _finish(cluster, job)

    assert state == "failed", reasons
    assert any("unsafe code bundle" in r and ".." in r for r in reasons), reasons
    refusals = _refusals(cluster, job)
    assert refusals and all("unsafe code bundle" in r for r in refusals), refusals
    assert _escaped_files(cluster) == []
    assert evidence_of_runs(cluster, job.job_id) == []


def test_path_escape_bundle_is_refused_by_the_deployer(cluster: Cluster) -> None:
    job = prepare_job(
        cluster, "central", "bad-zip-deployer", _two_trainers(cluster),
        example_zip("central"), **SPEC,
    )  # fmt: skip
    _plant_escape(cluster, job, "central")

    state, reasons = _finish(cluster, job)

    assert state == "failed", reasons
    assert any("escape" in r and ".." in r for r in reasons), reasons
    assert _escaped_files(cluster) == []
    assert evidence_of_runs(cluster, job.job_id) == []


# ---- node credentials ----------------------------------------------------------------------


def test_node_token_cannot_reach_another_nodes_task(cluster: Cluster) -> None:
    job = prepare_job(
        cluster, "central", "foreign-token", _two_trainers(cluster),
        example_zip("central"), **SPEC,
    )  # fmt: skip
    node1 = node_id(cluster, "node-1")
    (task,) = [t for t in cluster.client.list_tasks(job.job_id) if t.node_id == node1]

    def call(node: str, method: str, path: str, body: object = None) -> httpx.Response:
        with cluster.state.client(node_credential(cluster, node), timeout=10) as api:
            return api.request(method, path, json=body)

    base = f"/v1/agent/tasks/{task.id}"
    assert call("node-1", "GET", base).status_code == 200  # its own node may
    assert call("node-1", "GET", f"{base}/code").status_code == 200
    for method, path, body in [
        ("GET", base, None),
        ("GET", f"{base}/code", None),
        ("POST", f"{base}/status", {"state": "running", "reason": "hijacked", "attempt": 0}),
        ("POST", f"{base}/endpoint", {"endpoint": "127.0.0.1:1"}),
        ("GET", f"{base}/peers", None),
        ("POST", f"{base}/metrics", {"metrics": [{"key": "accuracy", "value": 1, "step": 1}]}),
    ]:
        resp = call("node-0", method, path, body)
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert resp.json()["code"] == "not_found"
        assert task.id in resp.json()["detail"]
    logs = {"lines": [{"task_id": task.id, "stream": "stdout", "line": "forged"}]}
    assert call("node-0", "POST", "/v1/agent/logs", logs).status_code == 404
    listed = call("node-0", "GET", "/v1/agent/tasks").json()["items"]
    assert task.id not in {t["id"] for t in listed}

    after = next(t for t in cluster.client.list_tasks(job.job_id) if t.id == task.id)
    assert (after.state, after.attempt, after.reason) == (task.state, task.attempt, task.reason)
    # the controller's own events about the job (job.created) may be there by now; nothing of
    # the task is (a CI run under a CPU hog saw the service line and failed on `== []`)
    lines = cluster.client.get_logs(job.job_id).lines
    assert [x for x in lines if x.task_id == task.id or "forged" in x.line] == []
    assert cluster.client.get_metrics(job.job_id).metrics == []
    assert evidence_of_runs(cluster, job.job_id) == []
    denied = [
        ev
        for ev in log_events(cluster, "controller")
        if ev.get("event") == "rpc.failed" and task.id in str(ev.get("message"))
    ]
    assert denied and all(ev.get("code") == "not_found" for ev in denied), denied


@dataclass(frozen=True)
class Revoked:
    node: str
    node_id: str
    credential: str
    dataset: str
    job: Prepared  # created while the node was still enrolled, not started


@pytest.fixture(scope="module")
def revoked(cluster: Cluster) -> Revoked:
    """A fourth node with one dataset and a job that needs it; then the node is revoked."""
    add_node(cluster, "node-r")
    add_dataset(cluster, "node-r", "revoked-0", dataset_path(cluster, "node-0", "digits-0"))
    datasets = {"default": ["revoked-0", cluster.datasets[1]]}
    job = prepare_job(cluster, "central", "revoked-node", datasets, example_zip("central"), **SPEC)
    rid = node_id(cluster, "node-r")
    credential = node_credential(cluster, "node-r")
    assert cluster.client.revoke_node(rid).revoked
    return Revoked("node-r", rid, credential, "revoked-0", job)


def test_revoked_node_credential_is_refused(cluster: Cluster, revoked: Revoked) -> None:
    with cluster.state.client(revoked.credential, timeout=10) as api:
        resp = api.get("/v1/agent/tasks")
    assert resp.status_code == 401
    assert resp.json()["code"] == "unauthenticated"
    refusals = [
        ev
        for ev in log_events(cluster, "controller")
        if ev.get("event") == "rpc.failed" and ev.get("code") == "unauthenticated"
    ]
    assert any("revoked" in str(ev.get("message")) for ev in refusals), refusals

    spec = {"datasets": {"default": [revoked.dataset, cluster.datasets[1]]}, **SPEC}
    with pytest.raises(ApiError) as refused:
        cluster.client.create_job(
            "revoked-new", revoked.job.design_id, spec, code_version=revoked.job.code_version
        )
    assert refused.value.status == 400, refused.value
    assert "revoked" in refused.value.detail and revoked.node_id in refused.value.detail


def test_job_needing_a_revoked_node_fails_and_says_so(cluster: Cluster, revoked: Revoked) -> None:
    job_id = revoked.job.job_id
    try:
        try:
            cluster.client.start_job(job_id)
        except ApiError as refused:  # refusing the start outright is as good
            assert "revoked" in refused.detail, refused
        else:
            state = wait_terminal(cluster.client, job_id, timeout=15)
            reasons = _reasons(cluster, job_id)
            assert state == "failed", reasons
            assert any("revoked" in r for r in reasons), reasons
            wait_tasks_settled(cluster.client, job_id)
        assert evidence_of_runs(cluster, job_id) == []
    finally:
        if cluster.client.get_job(job_id).state not in (
            "ready",
            "completed",
            "failed",
            "terminated",
        ):
            cluster.client.stop_job(job_id)
