"""Prometheus on every service and node health, on the real embedded stack running a job.

Every process `flamectl up` starts serves /metrics behind the stack's metrics token; the test
scrapes each after a job, parses the text with prometheus_client's own parser and checks the
series and their values; flamelets' health samples reach `GET /v1/nodes/{id}/health` and
`flamectl node get`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flame.connect import sync_http_client
from tests.e2e.conftest import Flamectl
from tests.e2e.jobs_harness import Cluster, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home: Path = tmp_path_factory.mktemp("stack")
    c = start_cluster(home, nodes=2, shards=2)
    try:
        yield c
    finally:
        c.client.close()
        c.stack.down(c.state)


@pytest.fixture(scope="module")
def job(cluster: Cluster) -> str:
    job_id = cluster.submit(
        "central", "obs-central", {"default": cluster.datasets}, rounds=3, min_trainers=2
    )
    assert cluster.wait(job_id) == "completed", cluster.reason(job_id)
    return job_id


def _get(cluster: Cluster, url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with sync_http_client(url, cluster.state.security(), timeout=30) as client:
        return client.get(url, headers=headers)


FIGURES: dict[str, tuple[int, int, int]] = {}  # service -> (families, samples, bytes)


def scrape(cluster: Cluster, service: str) -> tuple[Samples, int]:
    token = Path(cluster.state.metrics_token_file).read_text().strip()
    resp = _get(cluster, cluster.state.metrics[service], token)
    assert resp.status_code == 200, resp.text
    samples: Samples = {}
    families = list(text_string_to_metric_families(resp.text))
    for family in families:
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    count = sum(len(v) for v in samples.values())
    FIGURES[service] = (len(families), count, len(resp.content))
    return samples, len(resp.content)


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [
        v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())
    ]
    assert found, f"no {name}{labels} in {sorted(samples)}"
    return sum(found)


def eventually(check: Any, timeout: float = 120.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not reached before the deadline: {what}"
        time.sleep(0.5)


def test_every_service_serves_its_series_after_a_job(cluster: Cluster, job: str) -> None:
    services = ["apiserver", "controller", "notifier", "flamelet-node-0", "flamelet-node-1"]
    assert sorted(cluster.state.metrics) == sorted(services)
    figures = {}

    api, figures["apiserver"] = scrape(cluster, "apiserver")
    assert value(api, "flame_apiserver_request_seconds_count", route="/v1/jobs/{id}") >= 1
    assert value(api, "flame_apiserver_request_seconds_bucket", le="+Inf") >= 1
    assert value(api, "flame_apiserver_requests_total", status="200") >= 1

    ctl, figures["controller"] = scrape(cluster, "controller")
    assert value(ctl, "flame_jobs", state="completed") >= 1
    assert value(ctl, "flame_jobs", state="failed") == 0
    assert value(ctl, "flame_job_rounds", job_id=job) == 3
    starts = value(ctl, "flame_task_start_seconds_count")
    assert starts >= 3  # two trainers on nodes, the aggregator by the deployer
    assert 0 < value(ctl, "flame_task_start_seconds_sum") / starts < 120
    assert value(ctl, "flame_task_start_seconds_count", started_by="node") >= 2
    assert value(ctl, "flame_nodes", presence="online") == 2

    notifier, figures["notifier"] = scrape(cluster, "notifier")
    assert value(notifier, "flame_notifier_events_total") >= 2  # the trainers' starts
    assert value(notifier, "flame_notifier_redeliveries_total") >= 0
    assert value(notifier, "flame_notifier_agent_connected") == 2
    # every event was acknowledged once the job was over
    eventually(
        lambda: value(scrape(cluster, "notifier")[0], "flame_notifier_queue_depth") == 0,
        what="queues drained",
    )

    for name in services[3:]:
        node, figures[name] = scrape(cluster, name)
        assert value(node, "flame_flamelet_connected") == 1
        assert value(node, "flame_flamelet_tasks", phase="done") >= 1
        assert (
            0
            < value(node, "flame_node_memory_used_bytes")
            < value(node, "flame_node_memory_total_bytes")
        )
        assert 0 <= value(node, "flame_node_cpu_percent") <= 100
        assert value(node, "flame_node_network_recv_bytes_total") > 0
        assert value(node, "flame_flamelet_health_reports_total") >= 1
        # its trainer ended: a process for the next task of its dataset is started ahead
        eventually(
            lambda n=name: value(scrape(cluster, n)[0], "flame_flamelet_warm_runners_idle") == 1,
            what="a warm runner",
        )
    print("scrape sizes (bytes):", figures)
    print("families, samples, bytes per service:", FIGURES)


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "flame.json"


def test_the_grafana_dashboard_only_uses_series_the_services_serve(
    cluster: Cluster, job: str
) -> None:
    served: set[str] = set()
    for service in cluster.state.metrics:
        served |= set(scrape(cluster, service)[0])
    exprs = [
        t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]
    ]
    assert len(exprs) >= 15
    for expr in exprs:
        names = set(re.findall(r"\bflame_[a-z0-9_]+", expr))
        assert names, expr
        assert names <= served, f"{expr}: {sorted(names - served)} not served"


def test_scrapes_without_the_token_are_refused(cluster: Cluster) -> None:
    for service, url in cluster.state.metrics.items():
        assert _get(cluster, url, None).status_code == 401, service
        assert _get(cluster, url, "not-the-token").status_code == 401, service
    # the admin's token also reads the apiserver's metrics; a user's does not
    assert _get(cluster, cluster.state.metrics["apiserver"], cluster.state.admin_token).is_success
    user = cluster.client.create_user("metrics-reader")
    token = cluster.client.create_token(user.id).token
    assert _get(cluster, cluster.state.metrics["apiserver"], token).status_code == 403


def test_node_health_reaches_the_api_and_flamectl(
    cluster: Cluster, flamectl: Flamectl, tmp_path: Path
) -> None:
    nodes = {n.name: n.id for n in cluster.client.list_nodes()}
    node_id = nodes["node-0"]
    samples = eventually(
        lambda: cluster.client.node_health(node_id), what="a health sample of node-0"
    )
    latest = samples[-1]
    assert latest.node_id == node_id
    assert 0 < latest.memory_used_bytes < latest.memory_total_bytes
    assert 0 < latest.disk_used_bytes < latest.disk_total_bytes
    assert latest.cpu_count >= 1 and 0 <= latest.cpu_percent <= 100
    assert latest.gpus == []  # no nvidia-smi here
    assert [s.at for s in samples] == sorted(s.at for s in samples)

    flamectl(
        "login",
        "--server",
        cluster.state.api_url,
        "--token",
        cluster.state.admin_token,
        "--ca-file",
        cluster.state.ca_file,
    )
    shown = flamectl("node", "get", node_id).stdout
    assert "health at" in shown and "memory" in shown and "% of" in shown
    as_json = flamectl("node", "get", node_id, "-o", "json").stdout
    assert '"memory_total_bytes"' in as_json

    # another tenant does not see the node, nor its health
    other = cluster.client.create_user("health-outsider")
    token = cluster.client.create_token(other.id).token
    with sync_http_client(
        cluster.state.api_url, cluster.state.security(), token=token, timeout=30
    ) as client:
        assert client.get(f"/v1/nodes/{node_id}/health").status_code == 404
