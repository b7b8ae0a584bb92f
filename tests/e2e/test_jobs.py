"""Jobs submitted to the real embedded stack run to completion on real flamelets.

One stack (controller on SQLite, notifier, apiserver, 3 flamelets) serves the whole module;
each test submits an example job over REST and waits for a terminal state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.jobs_harness import Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("stack")
    c = start_cluster(home, nodes=3, shards=4)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def test_central_job_completes_on_three_nodes(cluster: Cluster) -> None:
    job = cluster.submit(
        "central", "e2e-central", {"default": cluster.datasets[:3]}, rounds=5, min_trainers=3
    )
    assert cluster.wait(job) == "completed", cluster.reason(job)
    assert cluster.final_metric(job) > 0.8
    tasks = cluster.client.list_tasks(job)
    assert len(tasks) == 4 and all(t.state == "completed" for t in tasks)


def test_central_job_over_mqtt_completes_against_mosquitto(cluster: Cluster) -> None:
    job = cluster.submit(
        "central",
        "e2e-mqtt",
        {"default": cluster.datasets[:3]},
        rounds=5,
        min_trainers=3,
        backend="mqtt",
    )
    assert cluster.wait(job) == "completed", cluster.reason(job)
    assert cluster.final_metric(job) > 0.8


@pytest.mark.parametrize("example", ["hierarchical", "hybrid"])
def test_two_group_jobs_complete(cluster: Cluster, example: str) -> None:
    g1, g2 = cluster.datasets[:2], cluster.datasets[2:4]
    job = cluster.submit(example, f"e2e-{example}", {"g1": g1, "g2": g2}, rounds=4, min_trainers=4)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    assert cluster.final_metric(job) > 0.8
    roles = sorted({t.role for t in cluster.client.list_tasks(job)})
    expected = {
        "hierarchical": ["middle-aggregator", "top-aggregator", "trainer"],
        "hybrid": ["aggregator", "trainer"],
    }
    assert roles == expected[example]
