"""Chaos: a trainer's node dies mid-round, and `flamectl job stop` cleans up every process.

* With ≥ min_trainers trainers left the job completes (the aggregator goes on after its round
  timeout); with fewer for longer than the job's quorum_grace it ends `failed` with the
  reason.
* `flamectl job stop` → every process of the job is gone within 10 s (checked by pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.jobs_harness import Cluster, node_workdirs, start_cluster, wait_for_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("nodes")
    c = start_cluster(home, nodes=3, shards=3)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def _job_processes(cluster: Cluster, job_id: str) -> list[psutil.Process]:
    """Live task processes of ``job_id`` and the supervisors around them: deployer-run ones
    work in <data>/tasks/<job>/<task> (a link to a warm runner's folder when one took it),
    node ones in the folder the node's ledger names (a process started ahead runs
    ``flame.warm``: :mod:`flamelet.warm`, :mod:`flame_controller.deployers.warm`)."""
    task_ids = {t.id for t in cluster.client.list_tasks(job_id)}
    deployer_tasks = Path(cluster.state.home) / "data" / "tasks" / job_id
    on_nodes = set(node_workdirs(cluster, task_ids))
    on_nodes |= {(deployer_tasks / task_id).resolve() for task_id in task_ids}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "flame.launch" not in cmdline and "flame.warm" not in cmdline:
                continue
            cwd = proc.cwd()
        except psutil.Error:
            continue
        if job_id in cwd or Path(cwd).resolve() in on_nodes:
            found.append(proc)
    return found


def _lose_node(cluster: Cluster, node: str) -> None:
    cluster.stack.kill(cluster.state, f"flamelet-{node}", tree=True)


def _revive_node(cluster: Cluster, node: str) -> None:
    """Restart the node's agent and wait until the control plane sees it online again."""
    cluster.stack.respawn(cluster.state, f"flamelet-{node}")
    deadline = time.monotonic() + 60
    while not any(n.name == node and n.presence == "online" for n in cluster.client.list_nodes()):
        assert time.monotonic() < deadline, f"{node} did not come back online"
        time.sleep(0.1)


# long enough that the node is lost mid-job: a round takes tens of milliseconds, and the
# control plane sees it up to a quarter second later (the reporter's batches)
ROUNDS = 20


def test_job_completes_when_a_trainer_node_dies_and_quorum_remains(cluster: Cluster) -> None:
    job = cluster.submit(
        "central",
        "node-loss-ok",
        {"default": cluster.datasets},
        rounds=ROUNDS,
        min_trainers=2,
        round_timeout=5,
    )
    wait_for_round(cluster, job, 2)
    _lose_node(cluster, "node-2")
    try:
        assert cluster.wait(job, timeout=300) == "completed", cluster.reason(job)
        assert cluster.final_metric(job, "trainers") == 2.0
    finally:
        _revive_node(cluster, "node-2")


def test_job_fails_with_a_reason_below_min_trainers(cluster: Cluster) -> None:
    job = cluster.submit(
        "central",
        "node-loss-fail",
        {"default": cluster.datasets},
        rounds=ROUNDS,
        min_trainers=3,
        round_timeout=5,
        quorum_grace=10,  # the node stays away for longer
    )
    wait_for_round(cluster, job, 2)
    _lose_node(cluster, "node-1")
    try:
        assert cluster.wait(job, timeout=300) == "failed"
        reason = cluster.reason(job)
        assert "min_trainers" in reason or "trainer" in reason, reason
    finally:
        _revive_node(cluster, "node-1")


def test_flamectl_job_stop_leaves_no_process_behind(cluster: Cluster, tmp_path: Path) -> None:
    job = cluster.submit(
        "central", "to-stop", {"default": cluster.datasets}, rounds=10_000, min_trainers=3
    )
    wait_for_round(cluster, job, 1)
    procs = _job_processes(cluster, job)  # task processes and the supervisors around them
    tasks = [p for p in procs if p.cmdline()[1:3] in (["-m", "flame.launch"], ["-m", "flame.warm"])]
    assert len(tasks) == 4, [p.cmdline() for p in procs]  # 3 trainers + the aggregator
    env = {**os.environ, "FLAME_CONFIG": str(tmp_path / "flamectl.yaml")}
    flamectl = [str(Path(sys.executable).parent / "flamectl")]
    subprocess.run(
        [
            *flamectl,
            "login",
            "--server",
            cluster.state.api_url,
            "--token",
            cluster.state.admin_token,
            "--ca-file",
            cluster.state.ca_file,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    stopped_at = time.monotonic()
    subprocess.run([*flamectl, "job", "stop", job], env=env, check=True, capture_output=True)
    gone, alive = psutil.wait_procs(procs, timeout=10)
    elapsed = time.monotonic() - stopped_at
    print(f"job stop: {len(gone)}/{len(procs)} processes gone after {elapsed:.2f}s")
    assert not alive, f"still running 10 s after stop: {[p.pid for p in alive]}"
    assert cluster.wait(job, timeout=60) == "terminated"
