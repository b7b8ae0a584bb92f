"""Chaos: a node's flamelet agent is SIGKILLed for 60 s mid-job while its trainer runs on.

An offline node fails nothing by itself: the trainer keeps answering the aggregator, so the
job completes with every trainer in every round (the undisturbed model: training is seeded
per round and task), and when the agent is back it reports what the trainer really did, so
no task is marked failed. (Nodes that never come back: tests/chaos/test_node_loss_and_stop.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.jobs_harness import Cluster, start_cluster, wait_for_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

OUTAGE = 60.0
# A job of at least 100 s (each round sleeps half a second) outlasts the outage on any machine:
# the torch example with 100 epochs a round outlasted it by CPU, 300 rounds that took 6.5
# minutes on a slow machine.
PACED_JOB = str(Path(__file__).resolve().parent / "jobs" / "paced")
SPEC = {"rounds": 200, "min_trainers": 3, "seed": 0, "round_timeout": 60}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("agent-outage")
    c = start_cluster(home, nodes=3, shards=3)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def _presence(cluster: Cluster, node: str) -> str:
    return next(n.presence for n in cluster.client.list_nodes() if n.name == node)


def test_an_agent_outage_of_a_minute_fails_nothing(cluster: Cluster) -> None:
    job = cluster.submit(PACED_JOB, "agent-outage", {"default": cluster.datasets}, **SPEC)
    wait_for_round(cluster, job, 2)
    cluster.stack.kill(cluster.state, "flamelet-node-1")  # the agent only: its trainer runs on
    down_at = time.monotonic()
    deadline = down_at + 60
    while _presence(cluster, "node-1") != "offline":
        assert time.monotonic() < deadline, "the control plane never saw node-1 go offline"
        time.sleep(0.2)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    during = cluster.client.get_job(job)
    assert during.state == "running", f"{during.state}: {during.reason}"
    tasks = cluster.client.list_tasks(job)
    assert not [t for t in tasks if t.state == "failed"], [(t.id, t.reason) for t in tasks]
    cluster.stack.respawn(cluster.state, "flamelet-node-1")
    deadline = time.monotonic() + 60
    while _presence(cluster, "node-1") != "online":
        assert time.monotonic() < deadline, "node-1 did not come back online"
        time.sleep(0.2)
    assert cluster.wait(job, timeout=900) == "completed", cluster.reason(job)
    tasks = cluster.client.list_tasks(job)
    states = {t.id: (t.state, t.reason) for t in tasks}
    print(f"agent down {OUTAGE:.0f}s: job completed; tasks {states}")
    assert {t.state for t in tasks} == {"completed"}, states
    trainers = [m for m in cluster.client.get_metrics(job).metrics if m.key == "trainers"]
    assert len(trainers) == SPEC["rounds"] + 1  # type: ignore[operator]
    assert {m.value for m in trainers} == {3.0}  # nobody was left out of any round
