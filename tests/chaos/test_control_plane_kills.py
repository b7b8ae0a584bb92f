"""Chaos: the controller and the notifier are SIGKILLed while jobs run, then restarted.

Every job must still complete, each with the same final model as an undisturbed run with the
same seed, and no task may run twice (DESIGN §3: level-triggered, stored state, at-least-once
events that agents treat as idempotent hints).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.jobs_harness import (
    Cluster,
    aggregator_result,
    start_cluster,
    task_starts,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SPEC = {"rounds": 6, "min_trainers": 3, "seed": 0, "round_timeout": 60}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("chaos")
    c = start_cluster(home, nodes=3, shards=3)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


@pytest.fixture(scope="module")
def baseline(cluster: Cluster) -> dict:
    job = cluster.submit("central", "undisturbed", {"default": cluster.datasets}, **SPEC)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    return aggregator_result(cluster, job)


def _same_model(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _kill_during(
    cluster: Cluster, service: str, jobs: list[str], kills: int, rng: random.Random
) -> list[float]:
    """SIGKILL ``service`` ``kills`` times at random moments while jobs run; restart it."""
    moments = []
    started = time.monotonic()
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 2.5))
        cluster.stack.kill(cluster.state, service)
        moments.append(round(time.monotonic() - started, 2))
        time.sleep(rng.uniform(0.0, 0.5))
        cluster.stack.respawn(cluster.state, service)
        wait_ready(cluster, timeout=60.0)
    return moments


def _run_wave(
    cluster: Cluster, service: str, name: str, jobs_n: int, kills: int, seed: int
) -> list[str]:
    jobs = [
        cluster.submit("central", f"{name}-{i}", {"default": cluster.datasets}, **SPEC)
        for i in range(jobs_n)
    ]
    moments = _kill_during(cluster, service, jobs, kills, random.Random(seed))
    print(f"{service} killed at {moments} s")
    with ThreadPoolExecutor(len(jobs)) as pool:
        states = list(pool.map(lambda j: cluster.wait(j, timeout=600), jobs))
    assert states == ["completed"] * len(jobs), [cluster.reason(j) for j in jobs]
    return jobs


def test_controller_sigkilled_ten_times(cluster: Cluster, baseline: dict) -> None:
    jobs = []
    for wave in range(2):
        jobs += _run_wave(cluster, "controller", f"ctl-chaos-{wave}", jobs_n=5, kills=5, seed=wave)
    diffs = [_same_model(aggregator_result(cluster, j), baseline) for j in jobs]
    starts = {j: task_starts(cluster, j) for j in jobs}
    print(f"10 controller kills: {len(jobs)}/{len(jobs)} jobs completed; max |Δw| {max(diffs):.2e}")
    assert max(diffs) <= 1e-6
    twice = {j: {t: n for t, n in s.items() if n != 1} for j, s in starts.items()}
    assert not any(twice.values()), f"tasks not started exactly once: {twice}"


def test_notifier_killed_five_times(cluster: Cluster, baseline: dict) -> None:
    jobs = _run_wave(cluster, "notifier", "ntf-chaos", jobs_n=3, kills=5, seed=7)
    diffs = [_same_model(aggregator_result(cluster, j), baseline) for j in jobs]
    assert max(diffs) <= 1e-6
    for j in jobs:
        assert set(task_starts(cluster, j).values()) == {1}
