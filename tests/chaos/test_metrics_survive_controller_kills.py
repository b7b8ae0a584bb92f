"""Chaos: the controller is SIGKILLed three times during a 100-round job, so the aggregator's
metric reports meet a control plane that answers 503 or not at all.

Every one of the 101 steps must be in the job's metrics, each with the value the aggregator
computed, and the final accuracy shown must be what the final model really scores.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flame.datasets import load_shard
from tests.e2e.jobs_harness import (
    Cluster,
    aggregator_result,
    start_cluster,
    wait_for_round,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROUNDS = 100
SPEC = {"rounds": ROUNDS, "min_trainers": 3, "seed": 0, "round_timeout": 60}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("metrics-chaos")
    c = start_cluster(home, nodes=3, shards=3)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def _model_accuracy(cluster: Cluster, weights: dict) -> float:
    """The final model's accuracy over every shard's test split (what the trainers' final
    evaluation weights by test samples)."""
    correct = total = 0
    for path in sorted((Path(cluster.state.home) / "shards").glob("*.npz")):
        shard = load_shard(str(path))
        logits = shard.x_test @ weights["weight"].T + weights["bias"]
        correct += int(np.sum(np.argmax(logits, axis=1) == shard.y_test))
        total += len(shard.y_test)
    return correct / total


def test_every_step_survives_three_controller_kills(cluster: Cluster) -> None:
    rng = random.Random(3)
    job = cluster.submit("central", "metrics-chaos", {"default": cluster.datasets}, **SPEC)
    wait_for_round(cluster, job, 1)
    kills = []
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))
        cluster.stack.kill(cluster.state, "controller")
        kills.append(time.monotonic())
        time.sleep(rng.uniform(1.0, 3.0))  # reports meanwhile get 503
        cluster.stack.respawn(cluster.state, "controller")
        wait_ready(cluster, timeout=120.0)
    assert cluster.wait(job, timeout=900) == "completed", cluster.reason(job)

    reported = cluster.client.get_metrics(job).metrics
    folder = Path(cluster.state.home) / "data" / "tasks" / job
    (result,) = folder.glob("aggregator-*/result.json")
    history = json.loads(result.read_text())["history"]
    computed = {
        (k, int(h["round"])): float(v) for h in history for k, v in h.items() if k != "round"
    }
    shown = {(m.key, m.step): m.value for m in reported}
    steps = {m.step for m in reported if m.key == "accuracy"}
    print(
        f"controller killed 3 times; {len(steps)} of {ROUNDS + 1} steps kept; "
        f"{len(reported)} metric values for {len(computed)} computed"
    )
    assert steps == set(range(ROUNDS + 1))
    assert len(reported) == len(shown)  # every (metric, step) once
    assert shown == computed
    final = max((m for m in reported if m.key == "accuracy"), key=lambda m: m.step).value
    scored = _model_accuracy(cluster, aggregator_result(cluster, job))
    print(f"final accuracy shown {final:.4f}, the final model scores {scored:.4f}")
    assert abs(final - scored) <= 1e-6
