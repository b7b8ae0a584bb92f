"""Helpers for end-to-end job tests: a real embedded stack (controller, notifier, apiserver,
flamelets as processes), digits shards registered on the flamelets, job submission and waiting."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flame.cli.client import FlameClient
from flame.cli.code import zip_folder
from flame.cli.stack import Stack, StackState, _script
from flame.datasets import write_digits_shards

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMINAL = {"completed", "failed", "terminated"}


def example_spec(example: str, datasets: dict[str, list[str]], **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((EXAMPLES / example / "job.json").read_text())
    spec.update(datasets=datasets, **overrides)
    return spec


@dataclass
class Cluster:
    stack: Stack
    state: StackState
    client: FlameClient
    datasets: list[str]  # names, registered round-robin on the nodes

    def submit(
        self, example: str, name: str, datasets: dict[str, list[str]], **spec_overrides: Any
    ) -> str:
        job_id = self.create(example, name, datasets, **spec_overrides)
        self.client.start_job(job_id)
        return job_id

    def create(
        self, example: str, name: str, datasets: dict[str, list[str]], **spec_overrides: Any
    ) -> str:
        """Create (not start) a job of an example folder."""
        folder = EXAMPLES / example
        design = self.client.create_design(
            f"{name}-design", schema=json.loads((folder / "design.json").read_text())
        )
        code = self.client.push_code(design.id, zip_folder(folder))
        return self.client.create_job(
            name, design.id, example_spec(example, datasets, **spec_overrides), code.version
        ).id

    def wait(self, job_id: str, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.get_job(job_id)
            if job.state in TERMINAL:
                return job.state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.state} after {timeout}s")
            time.sleep(0.25)

    def final_metric(self, job_id: str, key: str = "accuracy") -> float:
        metrics = [m for m in self.client.get_metrics(job_id).metrics if m.key == key]
        assert metrics, f"job {job_id} reported no {key}"
        return max(metrics, key=lambda m: m.step).value

    def reason(self, job_id: str) -> str:
        return self.client.get_job(job_id).reason


def register_dataset(node_home: str, name: str, path: Path) -> None:
    """``flamelet dataset add`` on one node of the stack."""
    subprocess.run(
        [_script("flamelet"), "dataset", "add", name, str(path), "--home", node_home],
        check=True,
        capture_output=True,
    )


def start_cluster(home: Path, nodes: int, shards: int, *, mlflow: bool = False) -> Cluster:
    stack = Stack(home)
    state = stack.up(nodes=nodes, timeout=180, mlflow=mlflow)
    paths = write_digits_shards(home / "shards", n=shards, seed=0)
    names = []
    node_homes = [state.nodes[k] for k in sorted(state.nodes)]
    for i, path in enumerate(paths):
        name = f"digits-{i}"
        register_dataset(node_homes[i % nodes], name, path)
        names.append(name)
    client = FlameClient(state.api_url, state.admin_token, security=state.security())
    return Cluster(stack=stack, state=state, client=client, datasets=names)


def node_workdirs(cluster: Cluster, task_ids: set[str]) -> list[Path]:
    """The work folders the flamelets gave these tasks (from each node's task ledger): named
    ``<task id>-<attempt>``, or ``warm-...`` for a task run by a process started ahead
    (flamelet.warm)."""
    from flamelet.ledger import Ledger

    return [
        Path(e.workdir).resolve()
        for home in cluster.state.nodes.values()
        for e in Ledger(Path(home)).entries()
        if e.task_id in task_ids and e.workdir
    ]


def aggregator_result(cluster: Cluster, job_id: str, role: str = "aggregator") -> dict[str, Any]:
    """The final global weights the (deployer-run) aggregator of ``job_id`` (its ``role``: the
    top one's) left in its workdir."""
    from flame.tensors import from_bytes

    folder = Path(cluster.state.home) / "data" / "tasks" / job_id
    results = list(folder.glob(f"{role}-*/result.safetensors"))
    assert len(results) == 1, f"expected one aggregator result under {folder}, found {results}"
    return from_bytes(results[0].read_bytes())


def task_starts(cluster: Cluster, job_id: str) -> dict[str, int]:
    """How many times each task's process started, from the `task.started` events the task
    processes log: flamelet tasks' stdout is shipped to the control plane, the deployer's
    aggregator appends to its own stdout.log."""
    counts: dict[str, int] = {t.id: 0 for t in cluster.client.list_tasks(job_id)}
    after = 0
    while True:
        page = cluster.client.get_logs(job_id, after_seq=after, limit=1000)
        for line in page.lines:
            if "task.started" in line.line:
                counts[line.task_id] = counts.get(line.task_id, 0) + 1
        if not page.lines or page.last_seq <= after:
            break
        after = page.last_seq
    folder = Path(cluster.state.home) / "data" / "tasks" / job_id
    for log in folder.glob("*/stdout.log"):
        counts[log.parent.name] = log.read_text(errors="replace").count("task.started")
    return counts


def wait_for_round(cluster: Cluster, job_id: str, step: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        metrics = cluster.client.get_metrics(job_id).metrics
        if any(m.step >= step for m in metrics):
            return
        state = cluster.client.get_job(job_id).state
        assert state not in TERMINAL, f"job ended ({state}) before round {step}"
        assert time.monotonic() < deadline, f"no round {step} within {timeout}s"
        time.sleep(0.1)


def wait_ready(cluster: Cluster, timeout: float) -> None:
    """Until the control plane answers ready again (after a chaos test killed part of it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with cluster.state.client(timeout=1) as api:
                if api.get("/readyz").status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("control plane not ready again")
