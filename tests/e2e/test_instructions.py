"""Per-trainer instructions on the control plane (issue 23.1): the aggregator's user code gives
each trainer its own instructions every round; each trainer, a process started by a flamelet
on its node, logs what it received, and its log reaches the control plane under its task id.
Each trainer got exactly its own instructions, every round, and nobody else's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.jobs_harness import Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

JOB = Path(__file__).resolve().parent / "jobs" / "instructed"
ROUNDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("instructions")
    c = start_cluster(home, nodes=3, shards=3)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def received(cluster: Cluster, job_id: str) -> dict[str, list[dict]]:
    """task id -> the ``instructions.received`` events its log shipped, in order."""
    out: dict[str, list[dict]] = {}
    after = 0
    while True:
        page = cluster.client.get_logs(job_id, after_seq=after, limit=1000)
        for line in page.lines:
            try:
                event = json.loads(line.line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "instructions.received":
                out.setdefault(line.task_id, []).append(event)
        if not page.lines or page.last_seq <= after:
            return out
        after = page.last_seq


def test_each_trainer_gets_exactly_its_own_instructions(cluster: Cluster) -> None:
    datasets = {"default": cluster.datasets}
    job = cluster.submit(str(JOB), "instructed", datasets, rounds=ROUNDS)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    trainers = sorted(t.id for t in cluster.client.list_tasks(job) if t.role == "trainer")
    assert len(trainers) == 3
    got = received(cluster, job)
    assert sorted(got) == trainers  # every trainer logged, and only trainers
    for task_id, events in got.items():
        rank = trainers.index(task_id)
        assert [e["round"] for e in events] == list(range(1, ROUNDS + 1)), events
        for e in events:
            assert e["params"] == {"for": task_id}, (task_id, e)
            assert e["local_steps"] == 1 + rank + e["round"], (task_id, e)
            assert "lr" not in e and "deadline" not in e and "local_epochs" not in e
