"""The new job kinds through the control plane (real controller, notifier, apiserver,
flamelets and deployer on loopback): vertical logistic regression with its three parties on
three nodes, federated statistics and cross-site evaluation over digits shards. Each runs the
example's code unchanged and ends with the results ``flame.simulate`` gives for the same seed;
``flamectl job get`` shows the cross-site matrix; bad input fails the job before training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flame
from flame.datasets import write_vertical_digits
from tests.e2e.conftest import Flamectl
from tests.e2e.jobs_harness import EXAMPLES, Cluster, register_dataset, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VERTICAL = {
    "feature-party/default": ["digits-left", "digits-right"],
    "label-party/default": ["digits-labels"],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("stack")
    c = start_cluster(home, nodes=3, shards=3)
    nodes = [c.state.nodes[k] for k in sorted(c.state.nodes)]
    c.vertical = {}  # type: ignore[attr-defined]
    for node, path in zip(nodes, write_vertical_digits(home / "vertical"), strict=True):
        register_dataset(node, path.stem, path)
        c.vertical[path.stem] = str(path)  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


def shard_paths(cluster: Cluster) -> dict[str, str]:
    return {n: str(Path(cluster.state.home) / "shards" / f"{n}.npz") for n in cluster.datasets}


def metrics_of(cluster: Cluster, job: str) -> dict[tuple[str, int], float]:
    return {(m.key, m.step): m.value for m in cluster.client.get_metrics(job).metrics}


def test_a_vertical_job_runs_on_three_nodes_as_in_simulation(cluster: Cluster) -> None:
    job = cluster.submit("vertical-logistic", "e2e-vertical", VERTICAL, rounds=3)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    tasks = cluster.client.list_tasks(job)
    assert sorted(t.role for t in tasks) == ["feature-party", "feature-party", "label-party"]
    assert len({t.node_id for t in tasks}) == 3 and all(t.data_consumer for t in tasks)
    got = metrics_of(cluster, job)
    sim = flame.simulate(
        EXAMPLES / "vertical-logistic",
        datasets=cluster.vertical,  # type: ignore[attr-defined]
        overrides={"rounds": 3},
    )
    assert [h["round"] for h in sim.history] == [0, 1, 2, 3]
    for h in sim.history:
        for key in ("accuracy", "loss"):
            assert got[(key, h["round"])] == h[key], (key, h["round"])
    assert sim.history[-1]["accuracy"] > 0.85


def test_a_vertical_job_with_a_wrong_feature_width_fails_before_training(cluster: Cluster) -> None:
    hp: dict[str, Any] = {"lr": 0.5, "batch_size": 32, "min_samples": 100}
    hp["feature_widths"] = {"digits-left": 32, "digits-right": 24}
    job = cluster.submit("vertical-logistic", "e2e-vertical-bad", VERTICAL, hyperparameters=hp)
    assert cluster.wait(job) == "failed"
    reason = cluster.reason(job)
    assert "'digits-right' has 32 feature columns but the job declares 24" in reason, reason
    assert not cluster.client.get_metrics(job).metrics  # nothing was trained or scored


def test_a_statistics_job_gives_the_simulations_statistics(cluster: Cluster) -> None:
    datasets = {"default": cluster.datasets}
    job = cluster.submit("statistics", "e2e-stats", datasets, min_trainers=3)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    got = {k: v for (k, _), v in metrics_of(cluster, job).items() if k.startswith("stats/")}
    sim = flame.simulate(
        EXAMPLES / "statistics",
        datasets=shard_paths(cluster),
        overrides={"datasets": datasets, "min_trainers": 3},
    )
    want = {k: v for k, v in sim.history[0].items() if k.startswith("stats/")}
    assert len(want) == 64 * 11  # count, sum, mean, variance, std, min, max, 4 quantiles
    assert got == want


def test_a_cross_site_evaluation_runs_as_in_simulation_and_flamectl_shows_its_matrix(
    cluster: Cluster, flamectl: Flamectl
) -> None:
    datasets = {"default": cluster.datasets}
    job = cluster.submit("cross-site", "e2e-xsite", datasets, rounds=2, min_trainers=3)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    got = {k: v for (k, _), v in metrics_of(cluster, job).items() if k.startswith("xsite/")}
    sim = flame.simulate(
        EXAMPLES / "cross-site",
        datasets=shard_paths(cluster),
        overrides={"datasets": datasets, "rounds": 2, "min_trainers": 3},
    )
    matrix = sim.report["matrix"]
    assert len(got) == 4 * 3 * 2  # (global + 3 sites) x 3 sites x (accuracy, loss)
    for (model, site, metric), value in [(tuple(k.split("/")[1:]), v) for k, v in got.items()]:
        assert value == pytest.approx(matrix[model][site][metric], abs=1e-6)
    flamectl(
        "login",
        *("--server", cluster.state.api_url, "--token", cluster.state.admin_token),
        *("--ca-file", cluster.state.ca_file),
    )
    out = flamectl("job", "get", "e2e-xsite").stdout
    assert "cross-site evaluation: accuracy" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("global "))
    assert row.split()[1] == f"{got['xsite/global/digits-0/accuracy']:.4g}"
