"""Per-round overhead of a job on the control plane over grpc vs the compute of a plain loop.

The digits job of DESIGN §6 (``central`` example: 10 shards, one trainer per flamelet,
logistic regression, 20 rounds, FedAvg, grpc channels) runs on a real embedded stack; the same
training (each round: every trainer evaluates the global model on its test split and trains 5
epochs on its shard, then a weighted average) runs in a plain single-process loop.

Reported per job, from the control plane's stored timestamps:

* ``after_running_per_round_s``: (job ``completed`` - last task ``running``) / rounds — the
  definition of the issue; it also carries the trainers' start-up (python + torch imports,
  joining the channel) and the end of the job (final evaluation, MLflow best model, exits);
* ``steady_per_round_s``: the spacing of the per-round metrics the aggregator reports
  (first to last step), i.e. what one more round costs;
* ``round_time_s``: the aggregator's own ``round_time`` metric (median);
* ``running_to_first_metrics_s`` / ``last_metrics_to_completed_s``: where the rest goes.

``overhead_per_round_s`` = each of those - the plain loop's compute per round; target: within
50 ms. Usage: python -m benchmarks.control_plane_round [--reps 2] [--nodes 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.job_start import (
    TRAINERS,
    entered_running,
    job_spec,
    machine,
    new_design,
    stack,
    wait_terminal,
)
from benchmarks.run import save
from flame.datasets import split_digits
from tests.e2e.jobs_harness import Cluster

ROUNDS = 20
TARGET_OVERHEAD_S = 0.050
HP = {"lr": 0.5, "epochs": 5, "batch_size": 32}


def plain_loop(rounds: int = ROUNDS, seed: int = 0) -> dict[str, Any]:
    """The job's training without any framework: seconds of compute per round."""
    torch.set_num_threads(1)  # as the example's trainers
    shards = split_digits(TRAINERS, None, seed)
    data = [
        (
            torch.from_numpy(s.x_train),
            torch.from_numpy(s.y_train),
            torch.from_numpy(s.x_test),
            torch.from_numpy(s.y_test),
        )
        for s in shards
    ]
    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    global_w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    per_round = []
    accuracy = 0.0
    for rnd in range(rounds):
        started = time.perf_counter()
        updates, sizes, accs = [], [], []
        for index, (x, y, x_test, y_test) in enumerate(data):
            model.load_state_dict(global_w)
            model.eval()
            with torch.no_grad():
                accs.append((model(x_test).argmax(1) == y_test).float().mean().item())
            opt = torch.optim.SGD(model.parameters(), lr=HP["lr"])
            gen = torch.Generator().manual_seed(seed * 1_000_003 + rnd * 1_009 + index)
            model.train()
            for _ in range(int(HP["epochs"])):
                order = torch.randperm(len(y), generator=gen)
                for i in range(0, len(order), int(HP["batch_size"])):
                    idx = order[i : i + int(HP["batch_size"])]
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                    opt.step()
            updates.append({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
            sizes.append(len(y))
        weights = np.asarray(sizes, dtype=np.float64) / sum(sizes)
        global_w = {
            k: torch.from_numpy(
                sum(w * u[k] for w, u in zip(weights, updates, strict=True)).astype(np.float32)
            )
            for k in global_w
        }
        accuracy = float(np.mean(accs))
        per_round.append(time.perf_counter() - started)
    return {
        "rounds": rounds,
        "per_round_s": round(statistics.median(per_round), 4),
        "per_round_max_s": round(max(per_round), 4),
        "last_round_mean_accuracy": round(accuracy, 4),
    }


def one_job(
    cluster: Cluster,
    design: tuple[str, int],
    name: str,
    example: str = "central",
    **overrides: Any,
) -> dict[str, Any]:
    """Run one job of ``example`` (``overrides`` replace spec fields) and time its phases."""
    client = cluster.client
    spec = job_spec(cluster, example, rounds=ROUNDS, backend="grpc", **overrides)
    job = client.create_job(name, design[0], spec, code_version=design[1])
    started = time.time()
    client.start_job(job.id)
    state = wait_terminal(client, job.id)
    final = client.get_job(job.id)
    if state != "completed":
        raise RuntimeError(f"job {job.id} ended {state}: {final.reason}")
    tasks = client.list_tasks(job.id)
    all_running = max(entered_running(t) for t in tasks).timestamp()
    completed = max(
        t.at.timestamp() for t in final.transitions if t.to_state == "completed" and t.at
    )
    metrics = client.get_metrics(job.id).metrics
    step_at: dict[int, float] = {}
    round_times = []
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for m in metrics:
        if m.at is not None:
            step_at[m.step] = min(step_at.get(m.step, m.at.timestamp()), m.at.timestamp())
        by_step[m.step][m.key] = m.value
        if m.key == "round_time":
            round_times.append(m.value)
    steps = sorted(step_at)
    steady = (step_at[steps[-1]] - step_at[steps[0]]) / max(1, steps[-1] - steps[0])
    return {
        "job_wall_s": round(completed - started, 3),
        "start_to_all_running_s": round(all_running - started, 3),
        "after_running_s": round(completed - all_running, 3),
        "after_running_per_round_s": round((completed - all_running) / ROUNDS, 4),
        "steady_per_round_s": round(steady, 4),
        # where the rest of after_running_s goes: before the first round's metrics arrive
        # (task start-up, joining the channel, round 1) and after the last (final evaluation,
        # MLflow best model and registration, exits, status reports)
        "running_to_first_metrics_s": round(step_at[steps[0]] - all_running, 3),
        "last_metrics_to_completed_s": round(completed - step_at[steps[-1]], 3),
        "round_time_s": round(statistics.median(round_times), 4) if round_times else None,
        "steps_reported": len(steps),
        "final_accuracy": by_step[steps[-1]].get("accuracy") if steps else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(reps: int = 2, nodes: int = TRAINERS) -> dict[str, Any]:
    before = machine()
    plain = plain_loop()
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        cluster = stack(Path(tmp) / "stack", nodes)
        try:
            design = new_design(cluster, "central", "bench-rounds")
            jobs = [one_job(cluster, design, f"bench-rounds-{i}") for i in range(reps)]
        finally:
            cluster.client.close()
            cluster.stack.down(cluster.state)
    plain_after = plain_loop()  # the machine's load may have changed meanwhile
    compute = min(plain["per_round_s"], plain_after["per_round_s"])

    def overhead(key: str) -> dict[str, float]:
        values = [j[key] - compute for j in jobs if j[key] is not None]
        return {
            "median": round(statistics.median(values), 4),
            "max": round(max(values), 4),
        }

    over = {
        k: overhead(k) for k in ("after_running_per_round_s", "steady_per_round_s", "round_time_s")
    }
    return {
        "machine": {**before, "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "setup": {
            "example": "central",
            "trainers": TRAINERS,
            "nodes": nodes,
            "rounds": ROUNDS,
            "backend": "grpc",
            "reps": reps,
        },
        "plain_loop": {"before": plain, "after": plain_after, "compute_per_round_s": compute},
        "jobs": jobs,
        "overhead_per_round_s": over,
        "target_overhead_s": TARGET_OVERHEAD_S,
        "within_target": {k: v["median"] <= TARGET_OVERHEAD_S for k, v in over.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=TRAINERS)
    args = parser.parse_args()
    started = time.perf_counter()
    result = main(args.reps, args.nodes)
    save("control_plane_round", result, time.perf_counter() - started)
