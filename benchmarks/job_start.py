"""Job start latency on the embedded stack: submit → every task of a 10-trainer job running.

A real embedded stack (controller on SQLite, notifier, apiserver, one flamelet per trainer as
processes, as ``flamectl up`` starts it) runs the ``central`` example with 10 digits shards.
Each repetition creates and starts a new job and measures, from the control plane's own task
transitions (no polling error), the time from the ``create`` request (and from the ``start``
request) until the last task — the 10 trainers on the flamelets and the deployer-run
aggregator — is ``running``; then the job is stopped. Target: ≤ 2 s (median and max reported).
Usage: python -m benchmarks.job_start [--reps 5] [--nodes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.run import save
from flame.cli.client import FlameClient, Task
from flame.cli.code import zip_folder
from tests.e2e.jobs_harness import EXAMPLES, TERMINAL, Cluster, start_cluster

TARGET_SECONDS = 2.0
TRAINERS = 10


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}


def running_at(task: Task) -> datetime | None:
    """When the task last entered ``running`` (from its stored transitions)."""
    ats = [t.at for t in task.transitions if t.to_state == "running" and t.at is not None]
    return max(ats) if ats else None


def entered_running(task: Task) -> datetime:
    at = running_at(task)
    if at is None:
        raise RuntimeError(f"task {task.id} has not run")
    return at


def wait_all_running(client: FlameClient, job_id: str, timeout: float = 120.0) -> list[Task]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = client.list_tasks(job_id)
        if tasks and all(running_at(t) is not None for t in tasks):
            return tasks
        state = client.get_job(job_id).state
        if state in TERMINAL:
            raise RuntimeError(f"job {job_id} ended ({state}) before all its tasks ran")
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks of {job_id} not all running within {timeout}s")
        time.sleep(0.05)


def wait_terminal(client: FlameClient, job_id: str, timeout: float = 600.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        tasks = client.list_tasks(job_id)
        if job.state in TERMINAL and all(t.state in TERMINAL for t in tasks):
            return job.state
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout}s")
        time.sleep(0.1)


def stack(home: Path, nodes: int) -> Cluster:
    """The embedded stack with ``nodes`` flamelets and 10 digits shards (round-robin)."""
    return start_cluster(home, nodes=nodes, shards=TRAINERS)


def new_design(cluster: Cluster, example: str, name: str) -> tuple[str, int]:
    folder = EXAMPLES / example
    design = cluster.client.create_design(
        name, schema=json.loads((folder / "design.json").read_text())
    )
    code = cluster.client.push_code(design.id, zip_folder(folder))
    return design.id, code.version


def job_spec(cluster: Cluster, example: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((EXAMPLES / example / "job.json").read_text())
    spec.update(datasets={"default": cluster.datasets[:TRAINERS]}, **overrides)
    return spec


def one_start(cluster: Cluster, design: tuple[str, int], name: str) -> dict[str, Any]:
    client = cluster.client
    spec = job_spec(cluster, "central", rounds=1000, min_trainers=TRAINERS)
    created = time.time()
    job = client.create_job(name, design[0], spec, code_version=design[1])
    started = time.time()
    client.start_job(job.id)
    tasks = wait_all_running(client, job.id)
    last = max(entered_running(t) for t in tasks)
    last_trainer = max(entered_running(t) for t in tasks if t.data_consumer)
    result = {
        "tasks": len(tasks),
        "from_create_s": round(last.timestamp() - created, 3),
        "from_start_s": round(last.timestamp() - started, 3),
        "trainers_from_start_s": round(last_trainer.timestamp() - started, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    client.stop_job(job.id)
    wait_terminal(client, job.id)
    return result


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def main(reps: int = 5, nodes: int = TRAINERS) -> dict[str, Any]:
    before = machine()
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        t0 = time.perf_counter()
        cluster = stack(Path(tmp) / "stack", nodes)
        stack_up = time.perf_counter() - t0
        try:
            design = new_design(cluster, "central", "bench-start")
            runs = [one_start(cluster, design, f"bench-start-{i}") for i in range(reps)]
        finally:
            cluster.client.close()
            cluster.stack.down(cluster.state)
    from_create = [r["from_create_s"] for r in runs]
    row = (
        f"| job_start | central, {TRAINERS} trainers on {nodes} flamelets: create request -> "
        f"every task running, median {statistics.median(from_create):.2f} s (max "
        f"{max(from_create):.2f} s) over {reps} jobs; `flamectl up` with {nodes} nodes "
        f"{stack_up:.1f} s | <= {TARGET_SECONDS:g} s |"
    )
    return {
        "table_row": row,
        "machine": {**before, "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "setup": {"nodes": nodes, "trainers": TRAINERS, "example": "central", "reps": reps},
        "stack_up_s": round(stack_up, 2),
        "runs": runs,
        "from_create_s": summary(from_create),
        "from_start_s": summary([r["from_start_s"] for r in runs]),
        "trainers_from_start_s": summary([r["trainers_from_start_s"] for r in runs]),
        "target_s": TARGET_SECONDS,
        "within_target": {
            "median": statistics.median(from_create) <= TARGET_SECONDS,
            "max": max(from_create) <= TARGET_SECONDS,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=TRAINERS)
    args = parser.parse_args()
    started = time.perf_counter()
    result = main(args.reps, args.nodes)
    save("job_start", result, time.perf_counter() - started)
