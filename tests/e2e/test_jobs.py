"""Jobs submitted to the real embedded stack run to completion on real flamelets.

One stack (controller on SQLite, notifier, apiserver, 3 flamelets) serves the whole module;
each test submits an example job over REST and waits for a terminal state.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.jobs_harness import Cluster, example_spec, start_cluster, wait_for_round

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


def test_an_updated_job_runs_with_its_new_spec_and_task_set(cluster: Cluster) -> None:
    job = cluster.create(
        "central", "e2e-update", {"default": cluster.datasets[:3]}, rounds=6, min_trainers=3
    )
    assert len(cluster.client.list_tasks(job)) == 4
    two = cluster.datasets[:2]
    updated = cluster.client.update_job(
        job, spec=example_spec("central", {"default": two}, rounds=3, min_trainers=2)
    )
    assert updated.id == job
    tasks = cluster.client.list_tasks(job)
    assert sorted(t.role for t in tasks) == ["aggregator", "trainer", "trainer"]
    cluster.client.start_job(job)
    assert cluster.wait(job) == "completed", cluster.reason(job)
    steps = {m.step for m in cluster.client.get_metrics(job).metrics if m.key == "accuracy"}
    assert max(steps) == 3
    assert all(t.state == "completed" for t in cluster.client.list_tasks(job))


def _secrets_of(cluster: Cluster) -> dict[str, str]:
    home = Path(cluster.state.home)
    found = {
        "admin token": cluster.state.admin_token,
        "service token": (home / "secrets" / "service.token").read_text().strip(),
        "data-plane secret": (home / "data" / "data-plane.secret").read_text().strip(),
    }
    for name, node_home in cluster.state.nodes.items():
        identity = json.loads((Path(node_home) / "identity.json").read_text())
        found[f"credential of {name}"] = identity["credential"]
    return found


def _leaks(text: str, secrets_: dict[str, str]) -> list[str]:
    return [name for name, value in secrets_.items() if value and value in text]


def test_no_secret_shows_in_process_lists_environments_or_logs(cluster: Cluster) -> None:
    """While a job runs: every process's command line (what ``ps`` shows) and environment
    (a task's included), the stack's service logs and the job's logs hold none of the stack's
    secrets, and every process the stack started has telemetry turned off."""
    secrets_ = _secrets_of(cluster)
    # rounds enough that the tasks still run while they are looked at: a round takes tens of
    # milliseconds, and the control plane sees round 1 up to a quarter second after it ended
    job = cluster.submit(
        "central", "e2e-secrets", {"default": cluster.datasets[:3]}, rounds=30, min_trainers=3
    )
    wait_for_round(cluster, job, 1)
    seen = 0
    for proc in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            text = " ".join(proc.info["cmdline"] or []) + "\n"
            text += "\n".join(f"{k}={v}" for k, v in (proc.info["environ"] or {}).items())
            assert not _leaks(text, secrets_), (proc.pid, _leaks(text, secrets_))
            seen += 1
    # nothing the stack started phones home: services, flamelets, their tasks
    stack_pids = {p.pid for p in cluster.state.procs}
    started = [
        proc
        for pid in stack_pids
        if psutil.pid_exists(pid)
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ]
    checked = 0
    for proc in started:
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            if env:  # a process sandboxed into a user namespace may hide it: skip those
                assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true", proc.cmdline()
                assert env.get("DO_NOT_TRACK") == "1", proc.cmdline()
                checked += 1
    assert checked >= len(stack_pids) + 4  # the services, flamelets and the job's tasks
    assert cluster.wait(job) == "completed", cluster.reason(job)
    for log_file in (Path(cluster.state.home) / "logs").glob("*.log"):
        assert not _leaks(log_file.read_text(errors="replace"), secrets_), log_file
    lines = "\n".join(line.line for line in cluster.client.get_logs(job, limit=5000).lines)
    assert lines and not _leaks(lines, secrets_)
    assert seen > 10
