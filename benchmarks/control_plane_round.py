"""Issue 21's control-plane job: submit -> first round, the whole job, and its steady rounds
against a plain loop doing the same training, with warm task starts and without.

The digits job (``examples/central-numpy``: 10 IID shards, one trainer on each of 10
flamelets, numpy softmax regression, 20 rounds of FedAvg over grpc, MLflow tracking on) runs
on a real embedded stack as ``flamectl up`` starts it; the plain loop
(``simulate_overhead.plain_loop``) calls the same trainers' code and the same FedAvg in one
process, with no channels or control plane. The stack runs twice: as shipped (the flamelets
and the controller's local deployer keep warm runners, ``flamelet.warm`` and
``flame_controller.deployers.warm``) and with ``FLAME_FLAMELET_WARM_RUNNERS=0`` and
``FLAME_LOCAL_DEPLOYER_WARM_RUNNERS=0``, every task started cold. On each, the first job warms
up and is not counted. Each counted job is submitted to a quiet stack (``settle``: the machine's
CPU below 15% over half a second, so the runners started after the last job have done their
imports), as a user's next job would find it; on the warm stack as many jobs then run back to
back, each submitted as the last completes (``warm_back_to_back``), which finds those runners
still importing.

Reported per job, from the control plane's stored timestamps (``one_job``): submit (the create
request) -> the first round's metrics and -> job ``completed``; start -> all tasks running ->
first round's metrics; the steady round (spacing of the per-round metrics); last metrics ->
completed. Targets: first round <= 3 s, whole job <= 5 s, steady round <= 4x the plain loop's.
Usage: python -m benchmarks.control_plane_round [--reps 2] [--nodes 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.job_start import (
    TRAINERS,
    entered_running,
    job_spec,
    machine,
    new_design,
    wait_terminal,
)
from benchmarks.run import RESULTS, save
from benchmarks.simulate_overhead import EXAMPLES, plain_loop
from tests.e2e.jobs_harness import Cluster, start_cluster

HERE = Path(__file__).parent
ROUNDS = 20
EXAMPLE = "central-numpy"
TARGETS = {"first_round_s": 3.0, "job_s": 5.0, "steady_ratio": 4.0}
KINDS = {
    "warm": {},
    "cold": {"FLAME_FLAMELET_WARM_RUNNERS": "0", "FLAME_LOCAL_DEPLOYER_WARM_RUNNERS": "0"},
}
QUIET_CPU_PERCENT = 15.0


def settle(timeout: float = 60.0) -> float:
    """Wait until the machine is quiet (all cores' CPU below ``QUIET_CPU_PERCENT`` over half a
    second), at most ``timeout``; returns the seconds waited."""
    import psutil

    started = time.monotonic()
    while psutil.cpu_percent(interval=0.5) >= QUIET_CPU_PERCENT:
        if time.monotonic() - started > timeout:
            break
    return round(time.monotonic() - started, 2)


def one_job(
    cluster: Cluster,
    design: tuple[str, int],
    name: str,
    example: str = EXAMPLE,
    **overrides: Any,
) -> dict[str, Any]:
    """Run one job of ``example`` (``overrides`` replace spec fields) and time its phases."""
    client = cluster.client
    spec = job_spec(cluster, example, rounds=ROUNDS, backend="grpc", **overrides)
    submitted = time.time()
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
        "submit_to_first_round_s": round(step_at[steps[0]] - submitted, 3),
        "submit_to_completed_s": round(completed - submitted, 3),
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


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block (the stack's processes inherit it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plain_round_s(example: str = EXAMPLE) -> float:
    """The plain loop's median round (rounds 2.., the first warms up), same trainers."""
    return statistics.median(plain_loop(EXAMPLES / example, ROUNDS)[1:])


def median_of(jobs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(j[key] for j in jobs), 4)


PHASE_KEYS = (
    "job_wall_s",
    "start_to_all_running_s",
    "running_to_first_metrics_s",
    "steady_per_round_s",
    "last_metrics_to_completed_s",
    "submit_to_first_round_s",
    "submit_to_completed_s",
)


def phase_medians(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each phase over ``jobs``; ``rounds_s`` is what is left of the wall time."""
    m = {key: median_of(jobs, key) for key in PHASE_KEYS}
    m["rounds_s"] = round(
        m["job_wall_s"]
        - m["start_to_all_running_s"]
        - m["running_to_first_metrics_s"]
        - m["last_metrics_to_completed_s"],
        4,
    )
    return m


def phase_plot(medians: dict[str, dict[str, float]], path: Path) -> bool:
    """Stacked bars, one per kind of job (its label), of where a median job's time goes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.6 * len(medians)))
    labels = {
        "start_to_all_running_s": "start -> all tasks running",
        "running_to_first_metrics_s": "-> first round's metrics",
        "rounds_s": f"{ROUNDS} rounds",
        "last_metrics_to_completed_s": "last metrics -> job completed",
    }
    colors = dict(zip(labels, ("tab:gray", "tab:blue", "tab:green", "tab:orange"), strict=True))
    for row, kind in enumerate(medians):
        left = 0.0
        for key, label in labels.items():
            width = medians[kind][key]
            ax.barh(row, width, left=left, color=colors[key], label=label if row == 0 else None)
            left += width
    ax.set_yticks(range(len(medians)), list(medians))
    ax.set_xlabel("seconds (median job)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(reps: int = 2, nodes: int = TRAINERS) -> dict[str, Any]:
    before = machine()
    plain = [plain_round_s()]
    jobs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in [*KINDS, "warm_back_to_back"]}
    for kind, env in KINDS.items():
        with environment(env), tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
            cluster = start_cluster(Path(tmp) / "stack", nodes=nodes, shards=TRAINERS, mlflow=True)
            try:
                design = new_design(cluster, EXAMPLE, "bench-rounds")
                for rep in range(reps + 1):  # rep 0 warms up (and has the runners started)
                    waited = settle()
                    job = one_job(cluster, design, f"bench-rounds-{kind}-{rep}", EXAMPLE)
                    if rep:
                        jobs[kind].append({**job, "settled_s": waited})
                for rep in range(reps if kind == "warm" else 0):
                    job = one_job(cluster, design, f"bench-rounds-b2b-{rep}", EXAMPLE)
                    jobs["warm_back_to_back"].append(job)
            finally:
                cluster.client.close()
                cluster.stack.down(cluster.state)
        plain.append(plain_round_s())  # the machine's load may have changed meanwhile
    floor = min(plain)
    medians = {kind: phase_medians(runs) for kind, runs in jobs.items()}
    warm, cold, b2b = medians["warm"], medians["cold"], medians["warm_back_to_back"]
    steady_ratio = warm["steady_per_round_s"] / floor
    png = RESULTS / "control_plane_round.png"
    row = (
        f"| control_plane_round | {EXAMPLE} job, {TRAINERS} trainers on {nodes} flamelets, "
        f"{ROUNDS} rounds, MLflow on, median of {reps}: submit -> first round "
        f"{warm['submit_to_first_round_s']:.2f} s, whole job {warm['submit_to_completed_s']:.2f} "
        f"s, steady round {warm['steady_per_round_s'] * 1000:.1f} ms = {steady_ratio:.1f}x the "
        f"plain loop's ({floor * 1000:.1f} ms); every task started cold: "
        f"{cold['submit_to_first_round_s']:.2f} s and {cold['submit_to_completed_s']:.2f} s; "
        f"warm, back to back: {b2b['submit_to_first_round_s']:.2f} s and "
        f"{b2b['submit_to_completed_s']:.2f} s | "
        f"<= {TARGETS['first_round_s']:g} s, <= {TARGETS['job_s']:g} s, "
        f"<= {TARGETS['steady_ratio']:g}x |"
    )
    return {
        "machine": {**before, "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "setup": {
            "example": EXAMPLE,
            "trainers": TRAINERS,
            "nodes": nodes,
            "rounds": ROUNDS,
            "backend": "grpc",
            "reps": reps,
            "kinds": KINDS,
        },
        "plain_loop_round_s": [round(p, 5) for p in plain],
        "jobs": jobs,
        "medians": medians,
        "steady_round_ratio": round(steady_ratio, 2),
        "targets": TARGETS,
        "within_target": {
            "first_round": warm["submit_to_first_round_s"] <= TARGETS["first_round_s"],
            "job": warm["submit_to_completed_s"] <= TARGETS["job_s"],
            "steady_round": steady_ratio <= TARGETS["steady_ratio"],
        },
        "table_row": row,
        "plot": str(png.relative_to(HERE)) if phase_plot(medians, png) else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=TRAINERS)
    args = parser.parse_args()
    started = time.perf_counter()
    result = main(args.reps, args.nodes)
    save("control_plane_round", result, time.perf_counter() - started)
